"""GPU runners on an NVIDIA machine: the zoo's MobileNetV2, EfficientNet-B0 and ResNet50 at 224 through
PyTorch CUDA (fp32, fp16), onnxruntime's CUDA/TensorRT providers (fp32, int8) and OpenVINO GPU.

Weights are random (latency does not depend on them; the int8 models are calibrated on digits so
their ranges are real). A runner that cannot run here gets its reason in the table, not a silent gap.
Run through ``benchmarks/gpu_check.sh``, which installs what the machine can install first.

    python benchmarks/gpu_check.py --output OUT_DIR [--runs 200]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _provenance import provenance

from edgecnn import create_model
from edgecnn._io import write_json
from edgecnn.bench.benchmark import BenchConfig, bench
from edgecnn.errors import EdgeCNNError
from edgecnn.export import ExportConfig, export
from edgecnn.models.checkpoint import save_checkpoint

MODELS = ("mobilenet_v2", "efficientnet_b0", "resnet50")
BATCHES = (1, 32)


def measure(path: Path, precision: str | None, batch: int, runs: int) -> dict:
    try:
        report = bench(BenchConfig([path], device="gpu", precision=precision, batch=batch, runs=runs, warmup=20))
    except EdgeCNNError as exc:
        return {"error": str(exc)}
    result = report.hosts[0].results[0]
    return {
        "runtime": result["runtime"],
        "runtime_version": result["runtime_version"],
        "precision": result["effective_precision"],
        "p50_ms": result["latency"]["p50_ms"],
        "p99_ms": result["latency"]["p99_ms"],
        "images_per_s": result["throughput_ips"],
        "providers": result["notes"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    card = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    rows = []
    for name in MODELS:
        checkpoint = args.output / f"{name}.pt"
        save_checkpoint(checkpoint, create_model(name))
        started = time.perf_counter()
        try:
            exported = export(
                ExportConfig(  # random weights: int8 agreement means nothing, latency is what is measured
                    str(checkpoint),
                    formats="onnx",
                    int8=True,
                    calib="digits",
                    calib_size=32,
                    output=args.output / name,
                    keep_degraded=True,
                )
            )
            onnx = {a.precision: Path(a.path) for a in exported.artifacts}
        except EdgeCNNError as exc:
            onnx = {}
            rows.append({"model": name, "artifact": "onnx", "error": str(exc)})
        print(f"{name}: exported in {time.perf_counter() - started:.0f} s", flush=True)
        cases = [(checkpoint, "fp32", "f32"), (checkpoint, "fp16", "fp16")]
        cases += [(path, precision, None) for precision, path in onnx.items()]
        for path, label, precision in cases:
            for batch in BATCHES:
                row = {"model": name, "artifact": path.name, "stored": label, "batch": batch}
                row.update(measure(path, precision, batch, args.runs))
                rows.append(row)
                print(json.dumps(row), flush=True)
    openvino = None
    try:
        import openvino as ov

        openvino = ov.Core().available_devices
    except ImportError:
        pass
    summary = {**provenance("gpu_check"), "card": card, "torch": torch.__version__, "openvino_devices": openvino}
    write_json(args.output / "gpu_check.json", {**summary, "rows": rows})
    lines = [f"GPU: {card}; torch {torch.__version__}; OpenVINO devices: {openvino or 'openvino not installed'}", ""]
    lines += [
        "| model | artifact | batch | runtime | precision | p50 ms | img/s | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            stored = row.get("stored", "")
            cells = (row["model"], row["artifact"], row.get("batch", ""), "", stored, "", "", row["error"])
            lines.append("| " + " | ".join(map(str, cells)) + " |")
        else:
            runtime = f"{row['runtime']} {row['runtime_version']}"
            cells = (row["model"], row["artifact"], row["batch"], runtime, row["precision"])
            figures = f"{row['p50_ms']:.3f} | {row['images_per_s']:.0f} | {'; '.join(row['providers'])}"
            lines.append("| " + " | ".join(map(str, cells)) + f" | {figures} |")
    (args.output / "gpu_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
