"""Support matrix: every zoo model x {ONNX, OpenVINO, TFLite} x {fp32, int8}, converted and verified.

Each model is built with 10 classes at 64x64 (random weights, seed 0: conversion does not depend on
the values; the int8 ranges come from 32 real digits images) and exported one format at a time with
``edgecnn export``, which verifies every artifact in its own runtime. A cell passes when the artifact
converts, loads and runs in its runtime and: fp32 matches PyTorch within 1e-4 of the logits' range;
int8 holds int8 kernels (QuantizeLinear in ONNX, FakeQuantize in OpenVINO, int8 tensors in TFLite).
Agreement figures are recorded but not judged: random weights give near-uniform logits that int8 noise
reorders.

    .venv/bin/python benchmarks/support_matrix.py [--models 'mobilenet*' | --models lenet5,resnet18] [--input-size 64]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from _provenance import provenance

from edgecnn import create_model, list_models
from edgecnn._io import write_json
from edgecnn.errors import EdgeCNNError
from edgecnn.export import ExportConfig, export
from edgecnn.models.checkpoint import save_checkpoint

FORMATS = ("onnx", "openvino", "tflite")
RESULTS = Path(__file__).parent / "results" / "support_matrix.json"


def holds_int8(fmt: str, path: Path, ops: dict[str, int]) -> bool:
    if fmt == "onnx":
        return "QuantizeLinear" in ops
    if fmt == "openvino":
        return "FakeQuantize" in ops
    from ai_edge_litert.interpreter import Interpreter  # full-integer TFLite needs no QUANTIZE op: read tensors

    return any(np.dtype(t["dtype"]) == np.int8 for t in Interpreter(model_path=str(path)).get_tensor_details())


def cells(name: str, size: int, scratch: Path) -> list[dict]:
    torch.manual_seed(0)
    checkpoint = save_checkpoint(scratch / f"{name}.pt", create_model(name, num_classes=10, input_size=size))
    rows = []
    for fmt in FORMATS:
        started = time.perf_counter()
        # keep_degraded: random weights give near-uniform logits that int8 noise reorders, so agreement and
        # cosine are recorded, not judged (see the docstring); a cell is judged by its own criteria below
        config = ExportConfig(
            str(checkpoint),
            formats=fmt,
            int8=True,
            calib="digits",
            calib_size=32,
            output=scratch / fmt,
            keep_degraded=True,
        )
        try:
            report = export(config)
        except EdgeCNNError as exc:
            rows += [
                {"model": name, "format": fmt, "precision": p, "passed": False, "error": str(exc)}
                for p in ("fp32", "int8")
            ]
            continue
        for artifact in report.artifacts:
            checks = artifact.verification
            if artifact.precision == "fp32":
                passed = checks["max_abs_diff_over_range"] <= 1e-4
            else:
                passed = holds_int8(fmt, Path(artifact.path), artifact.ops)
            rows.append(
                {
                    "model": name,
                    "format": fmt,
                    "precision": artifact.precision,
                    "passed": passed,
                    "export_seconds": round(artifact.export_seconds, 1),
                    "size_mb": round(artifact.size_bytes / 1e6, 2),
                    "max_abs_diff_over_range": checks["max_abs_diff_over_range"],
                    "top1_agreement": checks["top1_agreement"],
                    "format_total_seconds": round(time.perf_counter() - started, 1),
                }
            )
        shutil.rmtree(scratch / fmt, ignore_errors=True)
    return rows


def _earlier_rows(input_size: int) -> list[dict]:
    """Rows of an earlier run at the same input size: a run of some models updates only theirs."""
    if not RESULTS.exists():
        return []
    earlier = json.loads(RESULTS.read_text())
    return earlier["rows"] if earlier.get("input_size") == input_size else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--scratch", type=Path, default=Path("runs/support_matrix"))
    args = parser.parse_args()
    names = args.models.split(",") if "," in args.models else list_models(args.models)
    rows = [row for row in _earlier_rows(args.input_size) if row["model"] not in names]
    for name in names:
        rows += cells(name, args.input_size, args.scratch / name)
        shutil.rmtree(args.scratch / name, ignore_errors=True)
        for row in rows[-6:]:
            print(json.dumps(row), flush=True)
        rows.sort(key=lambda row: (list_models().index(row["model"]), FORMATS.index(row["format"])))
        write_json(RESULTS, {**provenance("support_matrix"), "input_size": args.input_size, "rows": rows})
    print("\n| model | " + " | ".join(f"{f} fp32 | {f} int8" for f in FORMATS) + " |")
    print("|---|" + "---|" * 2 * len(FORMATS))
    for name in dict.fromkeys(r["model"] for r in rows):
        cells_text = []
        for fmt in FORMATS:
            for precision in ("fp32", "int8"):
                row = next(r for r in rows if (r["model"], r["format"], r["precision"]) == (name, fmt, precision))
                cells_text.append(
                    f"✓ {row['export_seconds']:.0f} s, {row['size_mb']:.1f} MB" if row["passed"] else "✗ see notes"
                )
        print(f"| {name} | " + " | ".join(cells_text) + " |")


if __name__ == "__main__":
    main()
