"""Int8 latency at 224, 1 thread: edgecnn's artifacts against each runtime's own int8 path written by hand.

For MobileNetV2, EfficientNet-B0 and ResNet18 (random weights: latency does not depend on their values,
but BatchNorm statistics of real images, so int8 ranges are like a trained model's; calibration uses 128
real digits images), this script

1. runs ``edgecnn export CHECKPOINT --int8 --calib digits`` as a user would;
2. writes the hand-written reference of each runtime from the same PyTorch model: onnxruntime
   ``quant_pre_process`` + ``quantize_static`` (QDQ, per-channel, defaults), NNCF ``nncf.quantize`` with
   defaults on ``openvino.convert_model``, and litert-torch's documented PT2E full-integer recipe;
3. measures all of them with ``edgecnn bench`` in one interleaved run (1 thread), with the fp32
   artifacts and PyTorch eager beside them.

Target: edgecnn int8 p50 <= 1.05 x the hand-written path's in every runtime.

    .venv/bin/python benchmarks/int8_latency.py [--models mobilenet_v2] [--runs 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _models import random_with_real_statistics
from _provenance import provenance

from edgecnn._io import write_json
from edgecnn.bench.benchmark import BenchConfig, bench
from edgecnn.data.datasets import DigitsSource, balanced_sample, preprocess_images
from edgecnn.models import get_model_meta
from edgecnn.models.checkpoint import load_checkpoint

MODELS = ("mobilenet_v2", "efficientnet_b0", "resnet18")
MAX_RATIO = 1.05
RESULTS = Path(__file__).parent / "results" / "int8_latency.json"


def edgecnn_export(checkpoint: Path, output: Path) -> dict:
    """The command a user runs, and its wall time (peak memory: ``benchmarks/export_time.py``)."""
    # random weights give near-uniform logits that int8 noise reorders (a mean cosine near the 0.95 line of
    # "broken"): their latency is what is measured here, so they are kept
    command = [sys.executable, "-m", "edgecnn.cli", "export", str(checkpoint), "--int8", "--calib", "digits"]
    command += ["--keep-degraded"]
    started = time.perf_counter()
    subprocess.run([*command, "--output", str(output)], check=True, capture_output=True)
    return {"seconds": round(time.perf_counter() - started, 1), "command": " ".join(command)}


def calibration(model: torch.nn.Module, count: int = 128) -> list[np.ndarray]:
    source = DigitsSource()
    indices = balanced_sample(source.labels, range(len(source.labels)), count, seed=0)
    images = preprocess_images(source, indices, get_model_meta(model).preprocessing)
    return [images[i : i + 1] for i in range(len(images))]


def onnxruntime_by_hand(fp32_onnx: Path, batches: list[np.ndarray], path: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(batches)

        def get_next(self) -> dict | None:
            batch = next(self.items, None)
            return None if batch is None else {"input": batch}

    prepared = path.with_name("prepared.onnx")
    quant_pre_process(str(fp32_onnx), str(prepared))
    quantize_static(str(prepared), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    return path


def nncf_by_hand(model: torch.nn.Module, batches: list[np.ndarray], path: Path) -> Path:
    import nncf
    import openvino as ov

    example = torch.from_numpy(batches[0])
    converted = ov.convert_model(model.eval(), example_input=example, input=[list(example.shape)])
    ov.save_model(nncf.quantize(converted, nncf.Dataset(batches)), str(path))
    return path


def litert_by_hand(model: torch.nn.Module, batches: list[np.ndarray], path: Path) -> Path:
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    example = (torch.from_numpy(batches[0]),)
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(model.eval(), example).module(), quantizer)
    with torch.no_grad():
        for batch in batches:
            prepared(torch.from_numpy(batch))
        quantized = convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(quantized, example, quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--output", type=Path, default=Path("runs/bench_int8_latency"))
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        folder = args.output / name
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint = random_with_real_statistics(name, folder)
        exported = edgecnn_export(checkpoint, folder / "edgecnn")
        print(f"{name}: edgecnn export {exported}", flush=True)
        model = load_checkpoint(checkpoint).model.eval()
        batches = calibration(model)
        by_hand = folder / "by_hand"
        by_hand.mkdir(parents=True, exist_ok=True)
        ours = folder / "edgecnn"
        pairs = {
            "onnxruntime": (
                ours / f"{name}_int8.onnx",
                onnxruntime_by_hand(ours / f"{name}_fp32.onnx", batches, by_hand / "int8.onnx"),
            ),
            "openvino": (ours / f"{name}_int8.xml", nncf_by_hand(model, batches, by_hand / "int8.xml")),
            "litert": (ours / f"{name}_int8.tflite", litert_by_hand(model, batches, by_hand / "int8.tflite")),
        }
        fp32 = [ours / f"{name}_fp32{suffix}" for suffix in (".onnx", ".xml", ".tflite")]
        artifacts = [path for pair in pairs.values() for path in pair] + fp32 + [checkpoint]
        report = bench(BenchConfig(artifacts, threads=1, runs=args.runs, warmup=20))
        p50 = {r["artifact"]: r["latency"]["p50_ms"] for r in report.hosts[0].results}
        for runtime, (mine, reference) in pairs.items():
            fp32_path = next(p for p in fp32 if p.suffix == mine.suffix)
            rows.append(
                {
                    "model": name,
                    "runtime": runtime,
                    "edgecnn_int8_p50_ms": round(p50[str(mine)], 3),
                    "by_hand_int8_p50_ms": round(p50[str(reference)], 3),
                    "ratio": round(p50[str(mine)] / p50[str(reference)], 3),
                    "edgecnn_fp32_p50_ms": round(p50[str(fp32_path)], 3),
                    "pytorch_eager_fp32_p50_ms": round(p50[str(checkpoint)], 3),
                    "meets_target": p50[str(mine)] / p50[str(reference)] <= MAX_RATIO,
                    "export": exported,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    write_json(RESULTS, {**provenance("int8_latency", threads=1), "runs": args.runs, "rows": rows})
    print("\n| model | runtime | edgecnn int8 | by hand int8 | ratio | edgecnn fp32 | PyTorch eager |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['runtime']} | {r['edgecnn_int8_p50_ms']:.2f} ms | {r['by_hand_int8_p50_ms']:.2f} ms "
            f"| {r['ratio']:.2f}× {'✓' if r['meets_target'] else '✗'} | {r['edgecnn_fp32_p50_ms']:.2f} ms "
            f"| {r['pytorch_eager_fp32_p50_ms']:.2f} ms |"
        )


if __name__ == "__main__":
    main()
