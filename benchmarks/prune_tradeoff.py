"""Pruning trade-off: does structured pruning pay in each runtime, and what does it cost in accuracy?

For each model: train on digits at 64×64 (compute dominates at that size), prune 30% and 50% of the
channels (L1, per-layer, round to 8, edgecnn prune's defaults: two prune → fine-tune steps of 10 epochs
each at the training's learning rate, through the training stage), export all three
checkpoints fp32 + int8 to ONNX, OpenVINO and TFLite, and benchmark all 18 artifacts interleaved at
1 thread with their accuracy on the held-out images. Speed-ups are p50 ratios against the unpruned
artifact of the same runtime and precision, measured in the same interleaved run.

    .venv/bin/python benchmarks/prune_tradeoff.py [--models mobilenet_v2,efficientnet_b0] [--epochs 20]

Results of several runs merge by model into results/prune_tradeoff.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _provenance import provenance

from edgecnn._io import write_json
from edgecnn.bench.benchmark import BenchConfig, bench
from edgecnn.export import ExportConfig, export
from edgecnn.models.checkpoint import load_checkpoint
from edgecnn.models.complexity import count_macs, count_params
from edgecnn.optimize.prune import PruneConfig, prune
from edgecnn.train import TrainConfig, train

RESULTS = Path(__file__).parent / "results" / "prune_tradeoff.json"
RATIOS = (0.3, 0.5)


def checkpoints(model: str, scratch: Path, epochs: int) -> dict[str, Path]:
    """Unpruned and pruned checkpoints, reused when a previous run finished them (an interrupted run
    leaves best.pt but not metrics.json / prune.json, which are written last)."""
    trained = scratch / model / "train" / "best.pt"
    if not (trained.parent / "metrics.json").exists():
        train(TrainConfig(model, input_size=64, epochs=epochs, output=trained.parent), progress=False)
    found = {"0%": trained}
    for ratio in RATIOS:
        pruned = scratch / model / f"pruned{ratio:.0%}" / "pruned.pt"
        if not (pruned.parent / "prune.json").exists():
            prune(PruneConfig(str(trained), ratio=ratio, output=pruned.parent), progress=False)
        found[f"{ratio:.0%}"] = pruned
    return found


def measure(model: str, found: dict[str, Path], scratch: Path, runs: int) -> list[dict]:
    artifacts, rows = [], []
    for ratio, checkpoint in found.items():
        report = export(ExportConfig(str(checkpoint), int8=True, output=scratch / model / f"export{ratio}"))
        loaded = load_checkpoint(checkpoint).model
        shape = loaded.edgecnn_meta.preprocessing.input_shape
        figures = {"params": count_params(loaded), "macs": count_macs(loaded, shape)}
        for artifact in report.artifacts:
            artifacts.append(Path(artifact.path))
            rows.append({"model": model, "pruned": ratio, "format": artifact.format, "precision": artifact.precision,
                         "size_mb": artifact.size_bytes / 1e6, **figures})  # fmt: skip
    results = bench(BenchConfig(artifacts, threads=1, runs=runs, data="digits")).hosts[0].results
    for row, result in zip(rows, results, strict=True):
        row.update(runtime=result["runtime"], p50_ms=result["latency"]["p50_ms"], accuracy=result["accuracy"]["top1"])
    for row in rows:
        unpruned = next(
            r for r in rows if (r["pruned"], r["format"], r["precision"]) == ("0%", row["format"], row["precision"])
        )
        row["speedup"] = unpruned["p50_ms"] / row["p50_ms"]
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| model | pruned | runtime | precision | top-1 | MACs | params | size | p50 ms | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['pruned']} | {r['runtime']} | {r['precision']} | {r['accuracy']:.2f}% "
            f"| {r['macs'] / 1e6:.1f}M | {r['params'] / 1e6:.2f}M | {r['size_mb']:.2f} MB | {r['p50_ms']:.3f} "
            f"| {r['speedup']:.2f}× |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mobilenet_v2,efficientnet_b0")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--scratch", type=Path, default=Path("runs/prune_tradeoff"))
    args = parser.parse_args()
    started = time.perf_counter()
    rows = []
    for model in args.models.split(","):
        found = checkpoints(model, args.scratch, args.epochs)
        rows += [{**row, "epochs": args.epochs} for row in measure(model, found, args.scratch, args.runs)]
        print(table([r for r in rows if r["model"] == model]), flush=True)
    kept = json.loads(RESULTS.read_text())["rows"] if RESULTS.exists() else []
    rows = [row for row in kept if row["model"] not in args.models.split(",")] + rows
    method = "digits 64×64; edgecnn prune defaults (L1, per-layer, round to 8, 2 × 10 fine-tuning epochs); 1 thread"
    write_json(
        RESULTS,
        {
            **provenance("prune_tradeoff", threads=1),
            "method": method,
            "rows": rows,
            "seconds": time.perf_counter() - started,
        },
    )
    print(table(rows))


if __name__ == "__main__":
    main()
