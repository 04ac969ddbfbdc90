"""Shared helpers of the benchmarks: timing medians (one run, or several alternating) and table printing."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path


def median_seconds(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed_round_robin(runs: dict[str, Callable[[], object]], repeats: int,
                      sync: Callable[[], object] = lambda: None) -> dict[str, float]:
    """Median seconds of each run over ``repeats`` rounds (after a warm-up round).

    The runs alternate inside every round, and each round starts with a different one, so a change in
    machine load (or a cache warmed by the previous run) affects all of them alike. ``sync`` is called
    before and after each timed run (e.g. ``torch.cuda.synchronize`` on a GPU).
    """
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats + 1):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            sync()
            start = time.perf_counter()
            runs[name]()
            sync()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    """A Markdown table (so results paste into benchmarks/README.md)."""
    cells = [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    print("| " + " | ".join(headers) + " |", flush=True)
    print("|" + "|".join("---" for _ in headers) + "|")
    for row in cells:
        print("| " + " | ".join(row) + " |", flush=True)


def cpu_model_name() -> str:
    """The CPU's model name from /proc/cpuinfo (every time quoted names its CPU kind)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
