"""Timing, statistics, memory and environment: the measuring half of the benchmarker.

Standard library, numpy and ``edgecnn.runtime.base`` only: this module is shipped to remote devices as it is.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.runtime.base import cpu_flags

#: flags that decide which int8/fp16 kernels a runtime can use
INTERESTING_CPU_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "asimddp",
    "i8mm",
    "fphp",
)


@dataclass
class LatencyStats:
    runs: int
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def latency_stats(seconds: Sequence[float]) -> LatencyStats:
    """Percentiles by linear interpolation (numpy's default); std is the population standard deviation."""
    if not len(seconds):
        raise ValueError("no latency samples")
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return LatencyStats(len(ms), float(ms.min()), float(p50), float(p90), float(p99), float(ms.mean()), float(ms.std()))


def time_interleaved(
    calls: Sequence[Callable[[], object]], warmup: int, runs: int | None, min_time: float | None
) -> list[list[float]]:
    """Seconds per call, calling A B C A B C …, so a machine that drifts affects every candidate alike.

    Stops after ``runs`` rounds, or once the rounds have taken ``min_time`` seconds (and at least 10).
    """
    for _ in range(warmup):
        for call in calls:
            call()
    samples: list[list[float]] = [[] for _ in calls]
    clock = time.perf_counter
    began = clock()
    while True:
        for index, call in enumerate(calls):
            started = clock()
            call()
            samples[index].append(clock() - started)
        done = len(samples[0])
        if runs is not None and done >= runs:
            return samples
        if min_time is not None and done >= 10 and clock() - began >= min_time:
            return samples


def parallel_throughput(calls: Sequence[Callable[[], object]], seconds: float) -> tuple[int, float]:
    """Completed calls and elapsed seconds with one thread per call (each its own request) for ``seconds``."""
    barrier = threading.Barrier(len(calls) + 1)
    counts = [0] * len(calls)
    stop = threading.Event()

    def work(index: int) -> None:
        barrier.wait()
        while not stop.is_set():
            calls[index]()
            counts[index] += 1

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts), time.perf_counter() - started


def resident_mb() -> float:
    """This process's resident memory now (Linux /proc; elsewhere the peak is the best available)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_resident_mb()


def peak_resident_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if platform.system() == "Darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip().strip("\x00")
    except OSError:
        return None


def _cpu_model() -> str:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip()
        if key in ("model name", "Model", "Hardware"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _throttling() -> str | None:
    """Raspberry Pi firmware's throttled bit field (0x0 = never throttled), where vcgencmd exists."""
    try:
        done = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip().split("=", 1)[-1] or None


def environment(threads: int | None) -> dict[str, Any]:
    """What a reader needs to reproduce a figure: the board, CPU, its flags and state, and threads used."""
    temperature = _read("/sys/class/thermal/thermal_zone0/temp")
    return {
        "hostname": platform.node(),
        "board": _read("/proc/device-tree/model"),
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_model": _cpu_model(),
        "cpu_flags": [flag for flag in INTERESTING_CPU_FLAGS if flag in cpu_flags()],
        "cores": os.cpu_count(),
        "threads": threads,
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "temperature_c": round(int(temperature) / 1000, 1) if temperature and temperature.isdigit() else None,
        "throttled": _throttling(),
    }
