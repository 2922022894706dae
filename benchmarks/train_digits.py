"""Training targets of the data/training stage, measured on this machine.

Trains each model on the built-in digits (seed 0, the default recipe) and reports held-out test
accuracy, wall time, training images/second and the share of training time spent waiting for data.
Targets: lenet5 >= 97 %, mobilenet_v2 / efficientnet_b0 / resnet18 at 32x32 >= 95 %, each <= 180 s
on this 2-core CPU; the epoch budget per model is what fits in those 180 s.

    .venv/bin/python benchmarks/train_digits.py [--models lenet5,resnet18]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from edgecnn import __version__
from edgecnn.train import TrainConfig, train

# model: (target test top-1 %, input size, epochs, batch size)
TARGETS = {
    "lenet5": (97.0, 32, 30, 64),
    "mobilenet_v2": (95.0, 32, 30, 64),
    "efficientnet_b0": (95.0, 32, 15, 32),
    "resnet18": (95.0, 32, 20, 64),
}
TIME_LIMIT_S = 180
RESULTS = Path(__file__).parent / "results" / "train_digits.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(TARGETS))
    parser.add_argument("--output", type=Path, default=Path("runs/bench_train"))
    args = parser.parse_args()

    rows = []
    for name in args.models.split(","):
        target, size, epochs, batch = TARGETS[name]
        config = TrainConfig(name, input_size=size, epochs=epochs, batch_size=batch, output=args.output / name)
        started = time.perf_counter()
        result = train(config, progress=False)
        seconds = time.perf_counter() - started
        summary = result.to_dict()
        rows.append(
            {
                "model": name,
                "input_size": size,
                "epochs": epochs,
                "batch_size": batch,
                "test_accuracy": round(result.test_accuracy, 2),
                "test_images": result.test_images,
                "target_accuracy": target,
                "meets_target": result.test_accuracy >= target and seconds <= TIME_LIMIT_S,
                "seconds": round(seconds, 1),
                "train_images_per_second": round(summary["train_images_per_second"], 1),
                "data_loading_share": round(summary["data_loading_share"], 4),
            }
        )
        print(json.dumps(rows[-1]))
    report = {
        "schema_version": 1,
        "benchmark": "train_digits",
        "edgecnn_version": __version__,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print("\n| model | input | epochs × batch | test top-1 | target | wall time | train img/s | data loading |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['input_size']}×{r['input_size']} | {r['epochs']} × {r['batch_size']} "
            f"| {r['test_accuracy']:.2f}% "
            f"| ≥ {r['target_accuracy']:.0f}% {'✓' if r['meets_target'] else '✗'} | {r['seconds']:.0f} s "
            f"| {r['train_images_per_second']:,.0f} | {100 * r['data_loading_share']:.1f}% |"
        )


if __name__ == "__main__":
    main()
