"""``edgecnn verify --arch aarch64``: run artifacts as a Raspberry Pi would, on this machine, before they ship.

An aarch64 Python is unpacked from Debian's arm64 packages (``apt-get download`` and ``dpkg-deb -x``: no
install, and no root once apt knows the arm64 architecture), the board's interpreter and numpy come from
PyPI's aarch64 wheels (``pip download --platform``), and ``qemu-aarch64-static -cpu CORE`` runs edgecnn's
device runner (the one ``bench --remote`` ships) in it, one artifact per process, on the same images as
here. Each part is built once into the cache, under a temporary name renamed when complete.

qemu-user shows the emulated program this machine's /proc/cpuinfo: onnxruntime's aarch64 build parses it
at import and crashes (SIGSEGV) on an x86 one. The runner therefore sees the board's, bound over it in a
private mount namespace, which also gives edgecnn's own CPU checks the board's flags (``asimddp`` on a
Cortex-A76, not on an A72).

Timings under emulation mean nothing: this checks that the artifact loads in the board's interpreter (a
failure is reported in the runtime's own words) and that its outputs are this machine's within a
tolerance (``TOLERANCE``): often identical, but float kernels may sum in another order and int8 ones
requantize with another rounding.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn import __version__
from edgecnn._download import cache_dir
from edgecnn.bench.benchmark import EvalImages, eval_images, images_key
from edgecnn.bench.device import ArtifactJob, OutputsJob
from edgecnn.bench.remote import RUNNER_NAME, runner_archive
from edgecnn.errors import EdgeCNNError
from edgecnn.export._formats import FORMATS
from edgecnn.export.pipeline import verify as compare_logits
from edgecnn.runtime import open_runner
from edgecnn.runtime.base import artifact_files, run_in_batches

SCHEMA_VERSION = 1
ARCHES = {"aarch64": {"qemu": "qemu-aarch64-static", "debian": "arm64", "wheel": "aarch64"}}
GLIBC_MINOR = 36  # Debian 12's glibc (and Raspberry Pi OS Bookworm's): wheels for it and older take
#: the cores qemu emulates and what /proc/cpuinfo says of each on a board: (CPU part, features)
CPUS = {
    "cortex-a72": ("0xd08", "fp asimd evtstrm crc32 cpuid"),  # Raspberry Pi 4
    "cortex-a76": (
        "0xd0b",
        "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
    ),  # Pi 5
    "cortex-a53": ("0xd03", "fp asimd evtstrm crc32 cpuid"),  # Raspberry Pi 3, Zero 2
}
#: the interpreters each format can run in on the board, the first the default; a version pinned here is
#: the newest with aarch64 Linux wheels (what a Pi can install); unpinned ones default to this machine's
INTERPRETERS = {
    ".tflite": ("ai-edge-litert==1.4.0", "tflite-runtime"),
    ".onnx": ("onnxruntime",),
    ".xml": ("openvino",),
}
#: what each interpreter needs beside it (tflite-runtime 2.14 was built against numpy 1)
NUMPY_FOR = {"tflite-runtime": "numpy<2"}
#: Debian 12's arm64 packages that make a Python 3.11 that runs
DEBIAN_PACKAGES = (
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libc6",
    "zlib1g",
    "libexpat1",
    "libffi8",
    "libssl3",
    "libgcc-s1",
    "libstdc++6",
)
#: how far the board's outputs may be from this machine's, as a share of the logits' range: float kernels
#: sum in other orders (fp32: as export verifies fp32); int8 ones may requantize with other rounding (one
#: step of an int8 output over the range is 4e-3; u8×s8 saturation costs several)
TOLERANCE = {"int8": 2e-3, "fp32": 1e-4, "fp16": 1e-3}
TIMEOUT_S = 900


@dataclass
class VerifyConfig:
    artifacts: list[Path]
    data: str
    arch: str = "aarch64"
    cpu: str = "cortex-a72"
    interpreters: list[str] = field(default_factory=list)  # NAME==VERSION, at most one per format
    images: int = 32

    def __post_init__(self) -> None:
        if self.arch not in ARCHES:
            raise EdgeCNNError(f"unknown arch {self.arch!r}; valid: {', '.join(ARCHES)}")
        if self.cpu not in CPUS:
            raise EdgeCNNError(f"unknown cpu {self.cpu!r}; valid: {', '.join(CPUS)}")
        if self.images < 1:
            raise EdgeCNNError(f"images must be at least 1, got {self.images}")
        known = {option.split("==")[0] for options in INTERPRETERS.values() for option in options}
        for requested in self.interpreters:
            name, _, version = requested.partition("==")
            if name not in known:
                raise EdgeCNNError(f"unknown interpreter {name!r}; valid: {', '.join(sorted(known))}")
            if not version:
                raise EdgeCNNError(f"--interpreter takes NAME==VERSION (e.g. ai-edge-litert==1.4.0), got {requested!r}")
        for path in self.artifacts:
            self.interpreter_for(path)  # every artifact has one before any work

    def interpreter_for(self, path: Path) -> str:
        """The interpreter ``path`` runs in on the board: the one named for its format, else the default."""
        choices = INTERPRETERS.get(path.suffix)
        if choices is None:
            raise EdgeCNNError(f"{path.name}: verify runs {', '.join(INTERPRETERS)} artifacts")
        names = {choice.split("==")[0] for choice in choices}
        named = [requested for requested in self.interpreters if requested.split("==")[0] in names]
        if named:
            return named[-1]
        default = choices[0]
        if "==" in default:
            return default
        try:
            return f"{default}=={importlib.metadata.version(default)}"
        except importlib.metadata.PackageNotFoundError:
            raise EdgeCNNError(f"{path.name}: name the board's interpreter: --interpreter {default}==VERSION") from None


@dataclass
class Verdict:
    artifact: str
    status: str  # ok | differs | failed
    reason: str
    precision: str  # the artifact's
    interpreter: str  # on the board
    runtime_version: str | None = None
    computed_in: str | None = None  # the precision that computed on the board
    max_abs_diff: float | None = None  # against the same artifact here
    max_abs_diff_over_range: float | None = None
    top1_agreement: float | None = None  # percent, against the same artifact here


@dataclass
class VerifyReport:
    arch: str
    cpu: str
    images: int = 0
    data: str = ""
    board: dict[str, Any] = field(default_factory=dict)  # what the emulated runner saw of its machine
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if all(v.status == "ok" for v in self.verdicts) else 1

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "edgecnn_version": __version__, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class Environment:
    """An emulated machine: qemu, a root with Python, and a folder of wheels on its path."""

    qemu: str
    root: Path
    site: Path

    @property
    def python(self) -> Path:
        return self.root / "usr" / "bin" / "python3.11"


def build_environment(arch: str, interpreter: str, progress: Any = None) -> Environment:
    """The emulated environment for ``arch`` with ``interpreter``: one Python root per architecture and one
    folder of wheels per interpreter, each built once into the cache."""
    spec = ARCHES[arch]
    qemu = shutil.which(spec["qemu"])
    if qemu is None:
        raise EdgeCNNError(f"{spec['qemu']} is missing: apt-get install qemu-user-static")
    folder = cache_dir() / "emulation"

    def python_root(staging: Path, scratch: Path) -> None:
        if progress:
            progress(f"unpacking Debian's {spec['debian']} Python 3.11")
        _unpack_debian(spec["debian"], scratch, staging)

    def wheels(staging: Path, scratch: Path) -> None:
        if progress:
            progress(f"fetching {interpreter} and numpy for {arch} from PyPI")
        _unpack_wheels(
            [interpreter, NUMPY_FOR.get(interpreter.split("==")[0], "numpy")], spec["wheel"], scratch, staging
        )

    root = _cached(folder / f"{arch}-python3.11", python_root)
    site = _cached(folder / f"{arch}-{interpreter.replace('==', '-')}", wheels)
    return Environment(qemu, root, site)


def _cached(folder: Path, build: Callable[[Path, Path], None]) -> Path:
    """``folder``, made by ``build(staging, scratch)`` under a temporary name and renamed when complete."""
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".building-") as scratch:
        staging = Path(scratch) / "result"
        build(staging, Path(scratch))
        try:
            os.replace(staging, folder)
        except OSError:  # built meanwhile by another process: theirs is as good
            if not folder.is_dir():
                raise
    return folder


def _unpack_debian(architecture: str, scratch: Path, root: Path) -> None:
    if architecture not in _foreign_architectures():
        raise EdgeCNNError(
            f"apt does not know the {architecture} architecture: run (as root) "
            f"`dpkg --add-architecture {architecture} && apt-get update` once"
        )
    debs = scratch / "debs"
    debs.mkdir()
    packages = [f"{package}:{architecture}" for package in DEBIAN_PACKAGES]
    done = subprocess.run(["apt-get", "download", *packages], cwd=debs, capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise EdgeCNNError(f"apt-get download failed: {lines[-1] if lines else done.returncode}")
    root.mkdir(parents=True)
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, capture_output=True)


def _foreign_architectures() -> set[str]:
    try:
        done = subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True, text=True)
    except FileNotFoundError:
        raise EdgeCNNError("emulated verification unpacks Debian packages: it needs dpkg and apt") from None
    return set(done.stdout.split())


def _unpack_wheels(requirements: list[str], arch: str, scratch: Path, site: Path) -> None:
    """The wheels a Debian 12 machine of ``arch`` would install, unpacked into ``site``."""
    wheels = scratch / "wheels"
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(GLIBC_MINOR, 16, -1)] + [f"manylinux2014_{arch}"]
    platform = tags[0]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:"]
    command += [option for tag in tags for option in ("--platform", tag)]
    command += ["--python-version", "3.11", "--dest", str(wheels), *requirements]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        raise EdgeCNNError(f"pip download {' '.join(requirements)} for {platform}: {(errors or ['failed'])[-1]}")
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)


def board_cpuinfo(cpu: str, cores: int = 4) -> str:
    """/proc/cpuinfo as a board with ``cpu`` cores shows it."""
    part, features = CPUS[cpu]
    block = (
        "processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
        "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 1\n\n"
    )
    return "".join(block.format(n=n, features=features, part=part) for n in range(cores))


def _with_board_cpuinfo(command: list[str], cpuinfo: Path) -> list[str]:
    """``command`` in a private mount namespace that shows ``cpuinfo`` as /proc/cpuinfo (see the module's
    docstring). Root can bind it there; anyone else where user namespaces are allowed
    (``unshare --map-root-user``). Without either, the command runs as it is."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return command
    privilege = [] if os.geteuid() == 0 else ["--map-root-user"]
    script = 'mount --bind "$0" /proc/cpuinfo && exec "$@"'
    probe = subprocess.run(
        [unshare, "--mount", *privilege, "sh", "-c", script, str(cpuinfo), "true"], capture_output=True
    )
    if probe.returncode != 0:
        return command
    return [unshare, "--mount", *privilege, "sh", "-c", script, str(cpuinfo), *command]


def run_emulated(environment: Environment, cpu: str, job: OutputsJob, folder: Path) -> dict[str, Any]:
    """Run ``job`` (files in ``folder``) with the emulated Python; a crash is a result, not an exception."""
    (folder / RUNNER_NAME).write_bytes(runner_archive())
    (folder / "job.json").write_text(json.dumps(job.to_dict()))
    (folder / "cpuinfo").write_text(board_cpuinfo(cpu))
    command = [environment.qemu, "-cpu", cpu, "-L", str(environment.root), str(environment.python)]
    command = _with_board_cpuinfo([*command, "-s", RUNNER_NAME, "job.json"], folder / "cpuinfo")
    env = {"PYTHONPATH": str(environment.site), "PYTHONNOUSERSITE": "1", "HOME": str(folder), "PATH": "/usr/bin:/bin"}
    try:
        done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"crash": f"did not finish within {TIMEOUT_S} s under emulation"}
    if done.returncode < 0:
        return {"crash": f"crashed under emulation ({signal.Signals(-done.returncode).name})"}
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        lines = done.stderr.strip().splitlines()
        return {"crash": f"the runner gave no result: {lines[-1] if lines else f'exit code {done.returncode}'}"}


def verify(config: VerifyConfig, progress: Any = None) -> VerifyReport:
    """Each artifact under emulation against the same artifact run here, on the same images."""
    report = VerifyReport(config.arch, config.cpu)
    prepared: dict[str, EvalImages] = {}  # the formats of one model share their images
    for path in config.artifacts:
        interpreter = config.interpreter_for(path)
        environment = build_environment(config.arch, interpreter, progress)
        # OpenVINO picks bf16 or fp16 by CPU unless told: both sides compute in f32, as export verifies
        pinned = next((f.verify_precision for f in FORMATS.values() if f.suffix == path.suffix), None)
        here = open_runner(path, threads=1, precision=pinned)
        key = images_key(here.metadata)
        if key not in prepared:
            prepared[key] = eval_images(config.data, here.metadata, labels_required=False)
        images = prepared[key].images[: config.images]
        report.images, report.data = len(images), prepared[key].description
        reference = run_in_batches(here, images, here.metadata.fixed_batch or 1)
        if progress:
            progress(f"running {path.name} in {interpreter} on an emulated {config.cpu}")
        with tempfile.TemporaryDirectory(prefix="edgecnn-verify-") as scratch:
            folder = Path(scratch)
            for part in artifact_files(path):
                shutil.copy(part, folder / part.name)  # its own name: the runtime's messages quote it
            np.save(folder / "inputs.npy", images)
            item = ArtifactJob(path.name, inputs="inputs.npy", metadata=here.metadata.to_dict())
            outcome = run_emulated(environment, config.cpu, OutputsJob([item], pinned), folder)
            board = outcome.get("environment") or {}
            report.board = board or report.board
            result = (outcome.get("results") or [{}])[0]
            emulated = np.load(folder / result["outputs"]) if result.get("outputs") else None
        failure = outcome.get("crash") or outcome.get("error") or result.get("error")
        verdict = Verdict(str(path), "failed", f"does not run: {failure}", here.metadata.precision, interpreter)
        verdict.runtime_version, verdict.computed_in = result.get("runtime_version"), result.get("precision")
        if emulated is not None and not failure:
            _compare(verdict, reference, emulated)
        report.verdicts.append(verdict)
    return report


def _compare(verdict: Verdict, reference: np.ndarray, emulated: np.ndarray) -> None:
    checks = compare_logits(reference, emulated, None)  # as export verifies an artifact against PyTorch
    over_range = checks["max_abs_diff_over_range"]
    verdict.max_abs_diff, verdict.max_abs_diff_over_range = checks["max_abs_logit_diff"], over_range
    verdict.top1_agreement = checks["top1_agreement"]
    tolerance = TOLERANCE.get(verdict.precision, TOLERANCE["fp32"])
    within = over_range <= tolerance
    verdict.status = "ok" if within else "differs"
    if verdict.max_abs_diff == 0:
        verdict.reason = "identical to this machine's outputs"
    else:
        verdict.reason = (
            f"max |Δ| {over_range:.1e} of the logits' range ({'within' if within else 'over'} {tolerance:g} "
            f"for {verdict.precision})"
        )
