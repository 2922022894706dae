"""Int8 accuracy in each runtime against the fp32 model, on Fashion-MNIST's 10,000 test images.

Exports each checkpoint of ``benchmarks/train_fashion.py`` (run it first; it writes runs/bench_fashion)
with ``--int8`` to all three formats, then gates every int8 artifact against its fp32 checkpoint on the
10,000 official test images (one image = 0.01 point). Per model × runtime: fp32 and int8 top-1, the drop
with its paired 95% interval, top-1 agreement with fp32, the median image's max |Δlogit| (a continuous
measure of the int8 error that a single flipped image does not swing) and how many top-1s changed.
Targets: drop ≤ 0.5 point and agreement ≥ 99% in every cell.

    .venv/bin/python benchmarks/int8_accuracy.py [--models lenet5,mobilenet_v2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _provenance import provenance
from train_fashion import PLANS

from edgecnn._io import write_json
from edgecnn.bench.gate import GateConfig, run_gate
from edgecnn.export import ExportConfig, export

MAX_DROP = 0.5
MIN_AGREEMENT = 0.99
DATA = "fashion-mnist"
RESULTS = Path(__file__).parent / "results" / "int8_accuracy.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(PLANS))
    parser.add_argument("--checkpoints", type=Path, default=Path("runs/bench_fashion"))
    parser.add_argument("--output", type=Path, default=Path("runs/bench_int8"))
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        checkpoint = args.checkpoints / name / "best.pt"
        if not checkpoint.exists():
            raise SystemExit(f"{checkpoint} is missing: run benchmarks/train_fashion.py --models {name} first")
        started = time.perf_counter()
        report = export(ExportConfig(str(checkpoint), int8=True, output=args.output / name, keep_degraded=True))
        seconds = time.perf_counter() - started
        int8 = [a for a in report.artifacts if a.precision == "int8"]
        gate = run_gate(
            GateConfig([Path(a.path) for a in int8], checkpoint, DATA, max_drop=MAX_DROP, min_agreement=MIN_AGREEMENT)
        )
        for artifact, verdict in zip(int8, gate.verdicts, strict=True):
            checks = artifact.verification
            rows.append(
                {
                    "model": name,
                    "format": artifact.format,
                    "images": gate.images,
                    "fp32_accuracy": round(gate.baseline_accuracy, 2),
                    "int8_accuracy": round(verdict.accuracy, 2),
                    "drop_points": round(verdict.drop, 2),
                    "drop_ci95": [round(bound, 2) for bound in verdict.drop_ci95],
                    "top1_agreement": round(100 * verdict.agreement, 2),
                    "median_max_abs_logit_diff": round(checks["median_max_abs_logit_diff"], 3),
                    "changed_top1": len(checks["changed_top1_margins"]),
                    "changed_top1_margins": checks["changed_top1_margins"],
                    "export_status": artifact.status,
                    "meets_target": verdict.status == "pass",
                    "export_seconds_all_formats": round(seconds, 1),
                }
            )
            print({k: v for k, v in rows[-1].items() if k != "changed_top1_margins"}, flush=True)
        write_json(RESULTS, {**provenance("int8_accuracy"), "data": DATA, "rows": rows})
    print("\n| model | runtime | fp32 | int8 | drop (95% interval) | agreement | median max Δ | changed | target |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        low, high = r["drop_ci95"]
        print(
            f"| {r['model']} | {r['format']} | {r['fp32_accuracy']:.2f}% | {r['int8_accuracy']:.2f}% "
            f"| {r['drop_points']:+.2f} ({low:+.2f}, {high:+.2f}) | {r['top1_agreement']:.2f}% "
            f"| {r['median_max_abs_logit_diff']:.3f} | {r['changed_top1']} | {'✓' if r['meets_target'] else '✗'} |"
        )


if __name__ == "__main__":
    main()
