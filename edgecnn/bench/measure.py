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


#: percentile bootstrap: resamples, confidence, and the seed that makes one set of samples give one interval
BOOTSTRAP_RESAMPLES, CONFIDENCE, BOOTSTRAP_SEED = 1000, 0.95, 0
#: the timed calls are cut into this many consecutive blocks to see how much their medians move
BLOCKS = 5


@dataclass
class LatencyStats:
    runs: int
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    p50_ci_ms: list[float]  # [low, high]: the 95% percentile-bootstrap interval of p50
    p90_ci_ms: list[float]
    run_to_run_cv_pct: float | None  # CV of the medians of BLOCKS consecutive blocks; None under 2 calls per block

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def latency_stats(seconds: Sequence[float]) -> LatencyStats:
    """Percentiles by linear interpolation (numpy's default); std is the population standard deviation.

    ``seconds`` in the order they were taken: the run-to-run variation is the coefficient of variation
    (sample std over mean, %) of the medians of BLOCKS consecutive blocks of the calls. Each block is a
    shorter run of the same benchmark a little later, so drift (heat, a clock that moves, other load)
    shows there, where the bootstrap interval, which takes the calls as independent, cannot see it.
    """
    if not len(seconds):
        raise ValueError("no latency samples")
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    (p50_low, p90_low), (p50_high, p90_high) = bootstrap_interval(ms, [50, 90])
    cv = None
    if len(ms) >= 2 * BLOCKS:
        medians = np.array([np.median(block) for block in np.array_split(ms, BLOCKS)])
        cv = float(medians.std(ddof=1) / medians.mean() * 100)
    return LatencyStats(
        runs=len(ms),
        min_ms=float(ms.min()),
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        mean_ms=float(ms.mean()),
        std_ms=float(ms.std()),
        p50_ci_ms=[float(p50_low), float(p50_high)],
        p90_ci_ms=[float(p90_low), float(p90_high)],
        run_to_run_cv_pct=cv,
    )


def bootstrap_interval(values: np.ndarray, percentiles: Sequence[float]) -> np.ndarray:
    """The CONFIDENCE percentile-bootstrap interval of each percentile of ``values``: [[lows…], [highs…]].

    Latency is skewed (a floor, a long tail), so no normal approximation; the fixed seed makes a result
    reproducible from its samples. Resamples are drawn a chunk at a time, so that a long ``--min-time``
    run on a small board does not hold BOOTSTRAP_RESAMPLES copies of its samples at once.
    """
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    chunk = max(1, 2**20 // len(values))
    estimates = []
    for start in range(0, BOOTSTRAP_RESAMPLES, chunk):
        picks = rng.integers(0, len(values), size=(min(chunk, BOOTSTRAP_RESAMPLES - start), len(values)))
        estimates.append(np.percentile(values[picks], percentiles, axis=1))
    tail = (1 - CONFIDENCE) / 2 * 100
    return np.percentile(np.concatenate(estimates, axis=1), [tail, 100 - tail], axis=1)


#: warm-up goes on in windows of at least this many rounds and seconds (a median over 10 calls of 50 µs is
#: noise) until each call's median over a window is within STABLE_WITHIN of its median over the window before
WARMUP_WINDOW, WARMUP_WINDOW_S, STABLE_WITHIN = 10, 0.05, 0.05


@dataclass
class Warmup:
    calls: int  # untimed calls of each artifact
    seconds: float
    stable: bool | None  # None: not checked (no time was allowed past the fixed count)


def settled(previous: Sequence[float], current: Sequence[float]) -> bool:
    """Whether every call's median latency moved by at most STABLE_WITHIN from one window to the next."""
    return all(abs(now - before) <= STABLE_WITHIN * before for before, now in zip(previous, current, strict=True))


def warm_up(calls: Sequence[Callable[[], object]], minimum: int, max_seconds: float) -> Warmup:
    """``minimum`` untimed rounds (A B C …), then windows (WARMUP_WINDOW rounds, WARMUP_WINDOW_S at least)
    until the latency settles.

    What makes the first calls slow (caches, lazy allocation, a governor raising the clock) takes a few
    calls on a fast machine and many on a slow board, so a fixed count is too few on one or wasted on
    the other. The windows stop once ``settled``, or as unstable after ``max_seconds`` (0: no windows).
    """
    clock = time.perf_counter
    began = clock()
    for _ in range(minimum):
        for call in calls:
            call()
    if max_seconds <= 0:
        return Warmup(minimum, clock() - began, None)
    rounds, previous, windows_began = minimum, None, clock()
    while True:
        window = time_interleaved(calls, None, WARMUP_WINDOW_S, WARMUP_WINDOW)
        medians = [float(np.median(times)) for times in window]
        rounds += len(window[0])
        if previous is not None and settled(previous, medians):
            return Warmup(rounds, clock() - began, True)
        if clock() - windows_began >= max_seconds:
            return Warmup(rounds, clock() - began, False)
        previous = medians


def time_interleaved(
    calls: Sequence[Callable[[], object]], runs: int | None, min_time: float | None, min_rounds: int = 10
) -> list[list[float]]:
    """Seconds per call, calling A B C A B C …, so a machine that drifts affects every candidate alike.

    Stops after ``runs`` rounds, or once the rounds have taken ``min_time`` seconds (and ``min_rounds``).
    """
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
        if min_time is not None and done >= min_rounds and clock() - began >= min_time:
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


#: the bits of ``vcgencmd get_throttled``: 0-3 hold now, 16-19 have held at some time since boot
THROTTLE_BITS = {
    0: "under-voltage",
    1: "ARM frequency capped",
    2: "throttled",
    3: "soft temperature limit",
}
SINCE_BOOT = 16


def throttle_flags(value: str | None) -> list[str]:
    """The firmware's throttled field in words: "throttled now", "under-voltage since boot", …; [] when unknown."""
    try:
        bits = int(value or "", 16)
    except ValueError:
        return []
    now = [f"{name} now" for bit, name in THROTTLE_BITS.items() if bits >> bit & 1]
    return now + [f"{name} since boot" for bit, name in THROTTLE_BITS.items() if bits >> (bit + SINCE_BOOT) & 1]


def governors(root: Path = Path("/sys/devices/system/cpu")) -> str | None:
    """Every CPU's frequency governor, the distinct ones joined by "," (big.LITTLE boards have one per
    cluster); None where the OS has no cpufreq (a container, a VM)."""
    found = sorted({text for path in root.glob("cpu[0-9]*/cpufreq/scaling_governor") if (text := _read(str(path)))})
    return ",".join(found) or None


@dataclass
class DeviceState:
    """What can make the same code slower from one minute to the next: the clock's policy, heat and the
    firmware's throttling. Taken before and after the timed calls, so a change during the run shows."""

    governor: str | None
    temperature_c: float | None
    throttled: str | None  # ``vcgencmd get_throttled``, e.g. "0x50005"; None off a Raspberry Pi

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "throttling": throttle_flags(self.throttled)}


def device_state() -> DeviceState:
    temperature = _read("/sys/class/thermal/thermal_zone0/temp")
    celsius = round(int(temperature) / 1000, 1) if temperature and temperature.isdigit() else None
    return DeviceState(governors(), celsius, _throttling())


def environment(threads: int | None, state: DeviceState | None = None) -> dict[str, Any]:
    """What a reader needs to reproduce a figure: the board, CPU, its flags and state, and threads used."""
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
        **(state or device_state()).to_dict(),
    }
