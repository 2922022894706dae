"""How long the built-in data sets take to load (target: all 70,000 Fashion-MNIST images in ≤ 2 s).

Each source is opened ``--repeats`` times in a fresh state (the files are read, gunzipped and checked
against their published SHA-256 every time); the median and the range are reported.

    .venv/bin/python benchmarks/data_loading.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _provenance import provenance

from edgecnn._io import write_json
from edgecnn.data.datasets import open_source

SOURCES = {"fashion-mnist": 2.0, "digits": None}  # name: target seconds
RESULTS = Path(__file__).parent / "results" / "data_loading.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for name, target in SOURCES.items():
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            source = open_source(name, progress=False)
            seconds.append(time.perf_counter() - started)
        median = statistics.median(seconds)
        rows.append(
            {
                "source": name,
                "images": len(source.labels),
                "median_seconds": round(median, 3),
                "min_seconds": round(min(seconds), 3),
                "max_seconds": round(max(seconds), 3),
                "target_seconds": target,
                "meets_target": target is None or median <= target,
            }
        )
        print(rows[-1], flush=True)
    write_json(RESULTS, {**provenance("data_loading"), "repeats": args.repeats, "rows": rows})


if __name__ == "__main__":
    main()
