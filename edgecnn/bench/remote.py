"""Run a benchmark job on another machine over the user's own OpenSSH client.

One SSH connection per benchmark: the artifacts, the job and a self-contained runner (a zip of
``edgecnn.runtime`` and ``edgecnn.bench.device`` that ``python3`` runs directly) go down as a tar stream
on stdin into a fresh temporary folder; the result comes back as JSON on stdout; the folder is removed
on exit. Every remote file has a name chosen here, so no user path ever reaches the remote shell.
SSH runs with ``BatchMode=yes``: keys, agent and ``~/.ssh/config`` as usual, never a password prompt.
"""

from __future__ import annotations

import io
import json
import shlex
import subprocess
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import edgecnn
from edgecnn import __version__
from edgecnn.errors import EdgeCNNError

#: the modules the runner needs on a device: standard library, numpy and a runtime, nothing else
RUNNER_MODULES = (
    "errors.py",
    "runtime/__init__.py",
    "runtime/base.py",
    "runtime/metadata.py",
    "runtime/targets.py",
    "runtime/onnxruntime.py",
    "runtime/openvino.py",
    "runtime/litert.py",
    "bench/__init__.py",
    "bench/measure.py",
    "bench/device.py",
    "bench/profile.py",
)
RUNNER_NAME = "edgecnn-runner.pyz"
SSH_UNREACHABLE = 255
COMMAND_NOT_FOUND = 127


@dataclass(frozen=True)
class Host:
    """``[user@]host`` as the user's SSH client understands it, and the Python to run there."""

    destination: str
    python: str = "python3"

    def __post_init__(self) -> None:
        if not self.destination or self.destination.startswith("-") or any(c.isspace() for c in self.destination):
            raise EdgeCNNError(f"not an SSH destination: {self.destination!r} (expected [user@]host)")


def read_fleet(path: Path, python: str) -> list[Host]:
    """One host per line, ``[user@]host [python]``; blank lines and ``#`` comments are skipped."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise EdgeCNNError(f"cannot read fleet file {path}: {exc.strerror}") from None
    hosts = []
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if fields:
            hosts.append(Host(fields[0], fields[1] if len(fields) > 1 else python))
    if not hosts:
        raise EdgeCNNError(f"fleet file {path} names no hosts")
    return hosts


def runner_archive() -> bytes:
    """The self-contained runner: ``python3 edgecnn-runner.pyz job.json`` prints the result as JSON."""
    package = Path(edgecnn.__file__).parent
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("__main__.py", "import sys\nfrom edgecnn.bench.device import main\nsys.exit(main())\n")
        archive.writestr("edgecnn/__init__.py", f'__version__ = "{__version__}"\n')
        for module in RUNNER_MODULES:
            archive.write(package / module, f"edgecnn/{module}")
    return buffer.getvalue()


def _remote_script(python: str) -> str:
    return (
        'd=$(mktemp -d "${TMPDIR:-/tmp}/edgecnn.XXXXXX") || exit 97; '
        "trap 'rm -rf \"$d\"' EXIT; "
        'tar -x -C "$d" || exit 98; '
        f'cd "$d" && {shlex.quote(python)} {RUNNER_NAME} job.json'
    )


def _tar_stream(files: dict[str, Path], job: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in ((RUNNER_NAME, runner_archive()), ("job.json", json.dumps(job).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, path in files.items():
            archive.add(str(path.resolve()), arcname=name)
    return buffer.getvalue()


def run_remote(
    host: Host, job: dict[str, Any], files: dict[str, Path], ssh_config: Path | None = None, timeout: float = 600
) -> dict[str, Any]:
    """Run ``job`` (whose paths name the keys of ``files``) on ``host``; its result, or an EdgeCNNError."""
    command = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    if ssh_config is not None:
        command += ["-F", str(ssh_config)]
    command += ["--", host.destination, _remote_script(host.python)]
    try:
        done = subprocess.run(command, input=_tar_stream(files, job), capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise EdgeCNNError("no ssh client found: install OpenSSH (the `ssh` command) to use --remote") from None
    except subprocess.TimeoutExpired:
        raise EdgeCNNError(f"{host.destination}: the benchmark did not finish within {timeout:.0f} s") from None
    stderr = done.stderr.decode(errors="replace").strip().splitlines()
    reason = stderr[-1] if stderr else f"exit code {done.returncode}"
    if done.returncode == SSH_UNREACHABLE:
        raise EdgeCNNError(f"cannot reach {host.destination} over SSH: {reason}")
    if done.returncode == COMMAND_NOT_FOUND:
        raise EdgeCNNError(f"{host.destination}: {host.python} not found there; point --remote-python at Python 3")
    try:
        result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise EdgeCNNError(f"{host.destination}: the runner gave no result ({reason})") from None
    if "error" in result:
        raise EdgeCNNError(f"{host.destination}: {result['error']}")
    return result
