"""Timing and peak-memory helpers shared by the benchmark scripts.

Peak memory on CPU is the process's peak resident set (VmHWM), reset before each
measurement through /proc/self/clear_refs (Linux); on CUDA it is
``torch.cuda.max_memory_allocated``. Both are reported as the increase over the
memory in use when the measurement started, so the model's weights are not counted.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["alternate", "timeit", "peak_memory_mb", "fmt_mb"]


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory_mb(fn: Callable[[], object], device: str = "cpu") -> float:
    """Peak memory (MB) that ``fn()`` adds on top of what was in use before it ran."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    _malloc_trim()  # hand freed memory back to the OS, so RSS is what is live
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass
    base = _rss_kb("VmRSS")
    fn()
    return max(0, _rss_kb("VmHWM") - base) / 1024


def timeit(
    fn: Callable[[], object], repeat: int = 5, warmup: int = 1, device: str = "cpu"
) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` runs after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fmt_mb(x: float) -> str:
    return f"{x:8.1f} MB"


def alternate(
    contenders: dict[str, Callable[[], object]],
    rounds: int = 7,
    warmup: int = 1,
    device: str = "cpu",
) -> tuple[dict[str, float], dict[str, float]]:
    """Run the contenders in turn, ``rounds`` times: (median seconds, median ratio to the first).

    Each round runs every contender once, back to back, and the ratio is taken within the
    round; this machine's speed drifts by tens of percent within minutes, and a ratio of
    neighbours is robust to that where separate medians are not.
    """
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(rounds):
        for name in names:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            contenders[name]()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    base = times[names[0]]
    med = {n: statistics.median(t) for n, t in times.items()}
    ratio = {
        n: statistics.median([a / b for a, b in zip(t, base, strict=True)])
        for n, t in times.items()
    }
    return med, ratio
