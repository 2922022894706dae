"""Training targets of the data/training stage on the built-in digits, measured on this machine.

Trains each model on the built-in digits (seed 0, the default recipe) and reports held-out test
accuracy (269 images), wall time, training images/second and the share of training time spent
waiting for data. Targets: lenet5 >= 97 %, mobilenet_v2 / efficientnet_b0 / resnet18 at 32x32 >= 95 %,
each <= 180 s on a 2-core CPU; the epoch budget per model is what fits in those 180 s.

    .venv/bin/python benchmarks/train_digits.py [--models lenet5,resnet18]
"""

from __future__ import annotations

from pathlib import Path

from _training import Plan, main

PLANS = {
    "lenet5": Plan(97.0, 32, 30, 64),
    "mobilenet_v2": Plan(95.0, 32, 30, 64),
    "efficientnet_b0": Plan(95.0, 32, 15, 32),
    "resnet18": Plan(95.0, 32, 20, 64),
}
TIME_LIMIT_S = 180
RESULTS = Path(__file__).parent / "results" / "train_digits.json"


if __name__ == "__main__":
    main(__doc__, "train_digits", "digits", PLANS, Path("runs/bench_train"), RESULTS, TIME_LIMIT_S)
