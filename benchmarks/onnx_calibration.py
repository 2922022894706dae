"""Time and peak memory of onnxruntime int8 calibration, MobileNetV2 at 224, 128 images.

Side by side, each in a fresh process (so each peak is its own): edgecnn's ``auto`` (onnxruntime's
percentile rule, streamed), edgecnn's ``minmax`` (onnxruntime's MinMax calibrator, averaged), and
onnxruntime's own Percentile calibrator through ``quantize_static``, which keeps every activation of
every image until the end. Each figure covers the whole int8 step (``quant_pre_process``, calibration,
``quantize_static``). Random weights and uniform random images (seed 0): the cost does not depend on
the values. The images take 77 MB of each peak.

    .venv/bin/python benchmarks/onnx_calibration.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _provenance import provenance

from edgecnn._io import write_json

RESULTS = Path(__file__).parent / "results" / "onnx_calibration.json"
WAYS = ("edgecnn auto", "edgecnn minmax", "onnxruntime percentile")


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = Path(scratch) / "mobilenet_v2_fp32.onnx"
        _export_fp32(fp32)
        rows = []
        for way in WAYS:
            output = subprocess.run(
                [sys.executable, __file__, way, str(fp32)], capture_output=True, text=True, check=True
            ).stdout
            rows.append(json.loads(output.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    write_json(RESULTS, {**provenance("onnx_calibration"), "rows": rows})


def _export_fp32(path: Path) -> None:
    import torch

    from edgecnn.export.onnx import export_float
    from edgecnn.models import create_model
    from edgecnn.optimize import fold_batchnorm
    from edgecnn.runtime.metadata import ArtifactMetadata

    torch.manual_seed(0)
    model = fold_batchnorm(create_model("mobilenet_v2").eval())
    export_float(model, torch.randn(1, 3, 224, 224), path, ArtifactMetadata(), dynamic_batch=False, half=False)


def _measure(way: str, fp32: Path) -> None:
    """One way, in this process; prints its row as the last line."""
    images = np.random.default_rng(0).random((128, 1, 3, 224, 224), dtype=np.float32)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "int8.onnx"
        if way.startswith("edgecnn"):
            from edgecnn.export._formats import Int8Job
            from edgecnn.export.onnx import quantize_int8
            from edgecnn.runtime.metadata import ArtifactMetadata
            from edgecnn.runtime.targets import this_cpu

            job = Int8Job(None, None, fp32, output, list(images), way.split()[1], ArtifactMetadata(), this_cpu())  # type: ignore[arg-type]
            quantize_int8(job)
        else:
            from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
            from onnxruntime.quantization.shape_inference import quant_pre_process

            from edgecnn.export.onnx import _Reader

            prepared = Path(scratch) / "prepared.onnx"
            quant_pre_process(str(fp32), str(prepared))
            quantize_static(
                str(prepared),
                str(output),
                _Reader(list(images)),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.Percentile,
            )
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"way": way, "seconds": round(seconds, 1), "peak_rss_mb": round(peak)}))


if __name__ == "__main__":
    if len(sys.argv) == 3:
        _measure(sys.argv[1], Path(sys.argv[2]))
    else:
        main()
