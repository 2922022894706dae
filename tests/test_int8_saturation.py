"""onnxruntime int8 on a CPU without VNNI, emulated: a real AVX2 CPU model (Haswell) under qemu-user, whose
CPUID onnxruntime reads to pick its kernels. There u8×s8 pairs are added in saturating 16-bit lanes, and the
7-bit weights the exporter chooses for such a CPU are what keeps the artifact's answers."""

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecnn.bench.benchmark import predict
from edgecnn.export import ExportConfig, export
from edgecnn.runtime import open_runner
from edgecnn.runtime.base import sidecar_path
from edgecnn.runtime.targets import TARGETS, target_mismatch

QEMU = "/usr/bin/qemu-x86_64-static"

RUN_INT8 = """
import json, sys
import numpy as np, onnxruntime as ort
images = np.load(sys.argv[1])
logits = {}
for path in sys.argv[2:]:
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    rows = [session.run(None, {name: images[i : i + 1]})[0] for i in range(len(images))]
    logits[path] = np.concatenate(rows).tolist()
print(json.dumps(logits))
"""


def _run_int8(images: Path, paths: list[Path], emulate: bool) -> dict[str, np.ndarray]:
    command = [sys.executable, "-c", RUN_INT8, str(images), *map(str, paths)]
    if emulate:
        command = [QEMU, "-cpu", "Haswell", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    return {path: np.array(values) for path, values in json.loads(done.stdout).items()}


@pytest.mark.needs("onnx")
@pytest.mark.skipif(platform.machine() != "x86_64", reason="emulates an x86 CPU model with qemu-x86_64")
def test_seven_bit_weights_keep_onnxruntime_int8_on_a_cpu_without_vnni(trained_lenet, tmp_path):
    if not shutil.which(QEMU):
        pytest.fail(f"{QEMU} is missing: apt-get install qemu-user-static (make test installs it)")
    paths = {}
    for recipe, target in (("8-bit", "x86-vnni"), ("7-bit", "x86-avx2")):
        output = tmp_path / recipe
        config = ExportConfig(str(trained_lenet), "onnx", int8=True, calib_size=32, output=output, target=target)
        report = export(config)
        paths[recipe] = Path(next(a.path for a in report.artifacts if a.precision == "int8"))
        scheme = json.loads(sidecar_path(paths[recipe]).read_text())["quantization"]
        assert scheme["weights_range"].startswith(recipe)
    reference = predict(tmp_path / "8-bit" / "lenet5_fp32.onnx", "digits")
    np.save(tmp_path / "images.npy", reference.images.images)
    native = _run_int8(tmp_path / "images.npy", list(paths.values()), emulate=False)
    haswell = _run_int8(tmp_path / "images.npy", list(paths.values()), emulate=True)

    def error(logits: np.ndarray) -> float:
        return float(np.median(np.abs(logits - reference.logits).max(axis=1)))

    seven, eight = str(paths["7-bit"]), str(paths["8-bit"])
    # 7-bit weights: no pair of products reaches the 16-bit limit, so the emulated AVX2 CPU computes what
    # this one does, and the answers stay the fp32 model's
    assert np.allclose(haswell[seven], native[seven], atol=1e-5)
    assert (haswell[seven].argmax(1) == reference.logits.argmax(1)).mean() >= 0.99
    # 8-bit weights saturate there: the same file errs several times more than on this CPU
    assert error(haswell[eight]) > 3 * error(haswell[seven])
    # and on such a CPU the benchmarker says so of the 8-bit file only
    haswell = TARGETS["x86-avx2"]
    assert "can saturate" in str(target_mismatch(open_runner(paths["8-bit"]).metadata, "onnxruntime", haswell))
    assert target_mismatch(open_runner(paths["7-bit"]).metadata, "onnxruntime", haswell) is None
