"""Train a table of models on one data set and write what each reached, at what cost."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from _provenance import provenance

from edgecnn._io import write_json
from edgecnn.train import TrainConfig, train


@dataclass(frozen=True)
class Plan:
    """One model's training budget and the test top-1 it must reach."""

    target: float
    input_size: int
    epochs: int
    batch_size: int
    train_images: int | None = None  # a seeded class-balanced subset; None: the whole training split
    augment: str = "crop=0.85,rotate=10"
    label_smoothing: float = 0.0
    channels_last: bool = False  # NHWC: depthwise convolutions train 2-3x faster on oneDNN
    val_fraction: float = 0.15


def train_all(
    benchmark: str, data: str, plans: dict[str, Plan], output: Path, results: Path, time_limit_s: float | None
) -> list[dict]:
    """Train each plan in turn (seed 0), print a JSON line per model, write ``results``."""
    rows = []
    for name, plan in plans.items():
        config = TrainConfig(
            name,
            data=data,
            input_size=plan.input_size,
            epochs=plan.epochs,
            batch_size=plan.batch_size,
            train_images=plan.train_images,
            augment=plan.augment,
            label_smoothing=plan.label_smoothing,
            channels_last=plan.channels_last,
            val_fraction=plan.val_fraction,
            output=output / name,
        )
        started = time.perf_counter()
        result = train(config, progress=False)
        seconds = time.perf_counter() - started
        summary = result.to_dict()
        in_time = time_limit_s is None or seconds <= time_limit_s
        rows.append(
            {
                "model": name,
                "input_size": plan.input_size,
                "epochs": plan.epochs,
                "epochs_run": len(result.history),
                "batch_size": plan.batch_size,
                "train_images": summary["train_images"],
                "augment": plan.augment,
                "label_smoothing": plan.label_smoothing,
                "channels_last": plan.channels_last,
                "test_accuracy": round(result.test_accuracy, 2),
                "test_images": result.test_images,
                "target_accuracy": plan.target,
                "meets_target": result.test_accuracy >= plan.target and in_time,
                "seconds": round(seconds, 1),
                "train_images_per_second": round(summary["train_images_per_second"], 1),
                "data_loading_share": round(summary["data_loading_share"], 4),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        report = {**provenance(benchmark, threads=torch.get_num_threads()), "data": data, "rows": rows}
        write_json(results, report)  # after every model: a long run that stops keeps what it measured
    print("\n| model | input | epochs × batch | train images | test top-1 | target | wall time | train img/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['input_size']}×{r['input_size']} | {r['epochs_run']} × {r['batch_size']} "
            f"| {r['train_images']:,} | {r['test_accuracy']:.2f}% "
            f"| ≥ {r['target_accuracy']:.0f}% {'✓' if r['meets_target'] else '✗'} | {r['seconds']:.0f} s "
            f"| {r['train_images_per_second']:,.0f} |"
        )
    return rows


def main(
    doc: str, benchmark: str, data: str, plans: dict[str, Plan], output: Path, results: Path, time_limit_s: float | None
) -> None:
    """The command line of a training benchmark: ``--models`` picks plans, ``--output`` the run folder."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(plans))
    parser.add_argument("--output", type=Path, default=output)
    args = parser.parse_args()
    chosen = {name: plans[name] for name in args.models.split(",")}
    train_all(benchmark, data, chosen, args.output, results, time_limit_s)
