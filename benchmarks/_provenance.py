"""What every results file records: the machine (CPU model, flags, cores), the commit, the date and the
command, so a figure can be traced to where and from what it was measured."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgecnn import __version__
from edgecnn.bench.measure import environment


def commit() -> str:
    """The short commit, with ``+changes`` when tracked files other than results differ from it; ``unknown``
    outside a clone (a copy of the tree on a lent machine), so the results file says so instead of failing."""
    try:
        result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        # results files are what benchmarks write: one benchmark's output does not make the next one's code dirty
        status = [
            "git",
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ":(top)",
            ":(top,exclude)benchmarks/results",
        ]
        dirty = subprocess.run(status, capture_output=True, text=True)
    except FileNotFoundError:
        return "unknown"
    if result.returncode != 0:
        return "unknown"
    return result.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


#: the commit the benchmark started from: a long run keeps naming it after the tree moves on
STARTED_FROM = commit()


def provenance(benchmark: str, threads: int | None = None) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "benchmark": benchmark,
        "edgecnn_version": __version__,
        "commit": STARTED_FROM,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "machine": environment(threads=threads),
    }
