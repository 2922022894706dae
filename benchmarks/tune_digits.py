"""``edgecnn tune`` on this machine: the demo's MobileNetV2 (digits, 32×32), unpruned and 30% pruned,
fp32 and int8 in every format, at 1 and 2 threads; the fastest within 0.5 point of the unpruned fp32 model.

Records every candidate as tune measured it (p50/p90 interleaved within a thread count, top-1 on the 269
held-out images) and the deployment card's choice, so the README's tune result comes from this file.
Run it on an idle machine: the candidates' latencies are what is compared.

    make demo   # once: runs/demo/01-train/best.pt
    .venv/bin/python benchmarks/tune_digits.py [--checkpoint runs/demo/01-train/best.pt]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _provenance import provenance

from edgecnn._io import write_json
from edgecnn.bench.tune import Candidate

OPTIONS = ["--prune", "0,0.3", "--finetune-epochs", "5", "--threads", "1,2", "--max-drop", "0.5", "--runs", "200"]
RESULTS = Path(__file__).parent / "results" / "tune_digits.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/demo/01-train/best.pt"))
    args = parser.parse_args()
    if not args.checkpoint.is_file():
        raise SystemExit(f"{args.checkpoint} not found: `make demo` trains it")
    with tempfile.TemporaryDirectory() as output:
        command = [sys.executable, "-m", "edgecnn.cli", "tune", str(args.checkpoint), *OPTIONS, "--output", output]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "100"})
        if done.returncode != 0:
            raise SystemExit(f"tune failed: {done.stderr.strip()}")
        report = json.loads((Path(output) / "tune.json").read_text())
    candidates = report["candidates"]
    for candidate in candidates:
        candidate["label"] = Candidate(**candidate).label
        candidate["artifact"] = Path(candidate["artifact"]).name
    chosen = next(c for c in candidates if c["verdict"] == "chosen")
    row = {
        "tune_command": " ".join(["edgecnn", "tune", str(args.checkpoint), *OPTIONS]),
        "stdout": done.stdout,
        "max_drop": report["max_drop"],
        "reference_top1": report["reference_top1"],
        "chosen": chosen,
        "why": report["why"],
        "candidates": candidates,
    }
    write_json(RESULTS, {**provenance("tune_digits"), **row})
    print(done.stdout)


if __name__ == "__main__":
    main()
