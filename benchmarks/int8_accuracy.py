"""Int8 accuracy in each runtime against the fp32 model, for models trained on digits.

Exports each checkpoint of ``benchmarks/train_digits.py`` (run it first; it writes runs/bench_train)
with ``--int8`` to all three formats and reads the verification edgecnn export does on the 269
held-out images. Targets: int8 test accuracy within 0.5 points of fp32 in every runtime, top-1
agreement with fp32 >= 99%. Beside them: the median image's max |Δlogit| (a continuous measure of the
int8 error that a single flipped image does not swing) and the fp32 margin of each changed top-1.

    .venv/bin/python benchmarks/int8_accuracy.py [--models lenet5,mobilenet_v2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edgecnn import __version__
from edgecnn.export import ExportConfig, export

MODELS = ("lenet5", "mobilenet_v2", "efficientnet_b0", "resnet18")
MAX_DROP = 0.5
MIN_AGREEMENT = 99.0
RESULTS = Path(__file__).parent / "results" / "int8_accuracy.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--checkpoints", type=Path, default=Path("runs/bench_train"))
    parser.add_argument("--output", type=Path, default=Path("runs/bench_int8"))
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        checkpoint = args.checkpoints / name / "best.pt"
        if not checkpoint.exists():
            raise SystemExit(f"{checkpoint} is missing: run benchmarks/train_digits.py --models {name} first")
        started = time.perf_counter()
        report = export(ExportConfig(str(checkpoint), int8=True, output=args.output / name))
        seconds = time.perf_counter() - started
        for artifact in report.artifacts:
            if artifact.precision != "int8":
                continue
            checks = artifact.verification
            drop = report.reference_accuracy - checks["accuracy"]
            rows.append(
                {
                    "model": name,
                    "format": artifact.format,
                    "fp32_accuracy": round(report.reference_accuracy, 2),
                    "int8_accuracy": round(checks["accuracy"], 2),
                    "drop_points": round(drop, 2),
                    "top1_agreement": round(checks["top1_agreement"], 2),
                    "median_max_abs_logit_diff": round(checks["median_max_abs_logit_diff"], 3),
                    "changed_top1_margins": checks["changed_top1_margins"],
                    "meets_target": drop <= MAX_DROP and checks["top1_agreement"] >= MIN_AGREEMENT,
                    "export_seconds_all_formats": round(seconds, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    RESULTS.write_text(
        json.dumps(
            {"schema_version": 1, "benchmark": "int8_accuracy", "edgecnn_version": __version__, "rows": rows}, indent=2
        )
        + "\n"
    )
    print("\n| model | format | fp32 | int8 | drop | agreement | median max Δ | changed top-1 (fp32 margin) | target |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        margins = ", ".join(f"{m:.2f}" for m in r["changed_top1_margins"]) or "–"
        print(
            f"| {r['model']} | {r['format']} | {r['fp32_accuracy']:.2f}% | {r['int8_accuracy']:.2f}% "
            f"| {r['drop_points']:+.2f} | {r['top1_agreement']:.1f}% | {r['median_max_abs_logit_diff']:.3f} "
            f"| {margins} | {'✓' if r['meets_target'] else '✗'} |"
        )


if __name__ == "__main__":
    main()
