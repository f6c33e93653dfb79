"""Timing and memory helpers for the bench: paired runs, medians, a child's peak memory."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Figure:
    """One measured figure beside its floor, with the target the ratio must meet."""

    label: str
    value: float
    floor: float
    unit: str
    target: float  # ratio value/floor must be <= target (or >= when `at_least`)
    at_least: bool = False
    note: str = ""
    samples: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.value / self.floor if self.floor else float("inf")

    @property
    def ok(self) -> bool:
        return self.ratio >= self.target if self.at_least else self.ratio <= self.target

    def line(self) -> str:
        op = ">=" if self.at_least else "<="
        verdict = "ok" if self.ok else "OVER TARGET"
        return (
            f"{self.label:<46} {self.value:>11,.2f} {self.unit:<7} floor {self.floor:>11,.2f} "
            f"{self.unit:<7} ratio {self.ratio:5.2f} (target {op} {self.target:g}) {verdict}"
            + (f"  {self.note}" if self.note else "")
        )


def paired(
    rounds: int, ours: Callable[[], object], floor: Callable[[], object], warmup: int = 1
) -> tuple[list[float], list[float]]:
    """Alternate ours and the floor, so load changes on the machine hit both alike; seconds."""
    for _ in range(warmup):
        ours()
        floor()
    a: list[float] = []
    b: list[float] = []
    for i in range(rounds):
        first, second = (ours, floor) if i % 2 == 0 else (floor, ours)
        t0 = time.perf_counter()
        first()
        t1 = time.perf_counter()
        second()
        t2 = time.perf_counter()
        if first is ours:
            a.append(t1 - t0)
            b.append(t2 - t1)
        else:
            b.append(t1 - t0)
            a.append(t2 - t1)
    return a, b


def median(xs: list[float]) -> float:
    return statistics.median(xs)


@dataclass(frozen=True)
class Child:
    seconds: float
    peak_rss_mib: float
    returncode: int
    output: str


def run_child(argv: list[str], env: dict[str, str] | None = None, peak: bool = False) -> Child:
    """Run a process to the end: its wall time, and with `peak` its own peak resident memory:
    the kernel's high-water mark of its address space (VmHWM), read while it runs (wait4's
    ru_maxrss would count this big parent's pages, which Linux carries over fork and exec).
    Without `peak` the parent just waits, so the wall time is not rounded up to a polling tick."""
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        high = 0.0
        while peak and proc.poll() is None:
            high = max(high, _hwm_mib(proc.pid))
            time.sleep(0.01)
        proc.wait()
        seconds = time.perf_counter() - t0
        out.seek(0)
        return Child(seconds, high, proc.returncode, out.read())


def _hwm_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def machine() -> list[str]:
    """What the figures were measured on."""
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kib = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
        mem = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return [
        f"CPU: {cpu}, {os.cpu_count()} cores; RAM {mem}",
        f"OS: {platform.platform()}; Python {platform.python_version()}",
    ]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"
