"""Helpers shared by the runner and the peer processes (standard library only, so they import in
both the project venv and ``.venv-bench``): S3 server counters, timing, result records."""

from __future__ import annotations

import json
import os
import statistics
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

FAKE_AWS_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}


class S3Counters:
    """Reads and resets the request/byte counters of ``bench.s3server`` over HTTP."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint.rstrip("/")

    def reset(self) -> None:
        req = urllib.request.Request(self.endpoint + "/__reset", data=b"", method="POST")
        urllib.request.urlopen(req, timeout=10).read()

    def get(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.endpoint + "/__stats", timeout=10) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result

    @contextmanager
    def measure(self, out: dict[str, float]) -> Iterator[None]:
        """Fill ``out`` with ``requests``, ``bytes`` and ``s`` (seconds) of the block."""
        self.reset()
        t0 = time.perf_counter()
        yield
        out["s"] = time.perf_counter() - t0
        stats = self.get()
        out["requests"], out["bytes"] = stats["requests"], stats["bytes"]
        out["round_trips"] = stats.get("round_trips", float("nan"))


def cpu_seconds(pid: int, *, descendants: bool = False) -> float:
    """User + system CPU seconds of ``pid`` (and of its live descendants), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}  # pid -> (ppid, cpu seconds)
    for entry in os.listdir("/proc") if descendants else [str(pid)]:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    tree, total = {pid}, 0.0
    changed = True
    while changed and descendants:
        changed = False
        for child, (parent, _) in stats.items():
            if parent in tree and child not in tree:
                tree.add(child)
                changed = True
    for member in tree:
        total += stats.get(member, (0, 0.0))[1]
    return total


@dataclass
class Result:
    """What every system reports for one slide (times in seconds, latencies in ms)."""

    system: str
    slide: str
    open_requests: float = float("nan")
    open_bytes: float = float("nan")
    open_s: float = float("nan")
    open_rtt: float = float("nan")  # serial round trips to storage while opening
    first_requests: float = float("nan")
    first_bytes: float = float("nan")
    first_rtt: float = float("nan")
    ttft_s: float = float("nan")  # from nothing: open + first tile
    cold_ms: list[float] = field(default_factory=list)
    cold_requests: float = float("nan")  # per tile
    cold_bytes: float = float("nan")  # per tile
    warm_ms: list[float] = field(default_factory=list)
    tput: float = float("nan")  # cold tiles/s, 1 client
    tput32: float = float("nan")  # cold tiles/s, 32 clients
    extra: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def measure_slide(result: Result, counters: S3Counters, open_fn: Callable[[], Any],
                  read_fn: Callable[[Any, int, int], Any], first: tuple[int, int],
                  cold: list[tuple[int, int]]) -> Any:
    """The common protocol: open, first tile, N cold tiles one by one, the same tiles warm."""
    opened: dict[str, float] = {}
    with counters.measure(opened):
        slide = open_fn()
    tile: dict[str, float] = {}
    with counters.measure(tile):
        read_fn(slide, *first)
    result.open_requests, result.open_bytes, result.open_s = (
        opened["requests"], opened["bytes"], opened["s"])
    result.first_requests, result.first_bytes = tile["requests"], tile["bytes"]
    result.open_rtt, result.first_rtt = opened["round_trips"], tile["round_trips"]
    result.ttft_s = opened["s"] + tile["s"]
    coldrun: dict[str, float] = {}
    with counters.measure(coldrun):
        for x, y in cold:
            t0 = time.perf_counter()
            read_fn(slide, x, y)
            result.cold_ms.append((time.perf_counter() - t0) * 1000)
    result.cold_requests = coldrun["requests"] / max(1, len(cold))
    result.cold_bytes = coldrun["bytes"] / max(1, len(cold))
    result.tput = len(cold) / coldrun["s"] if coldrun["s"] > 0 else float("nan")
    for x, y in cold:
        t0 = time.perf_counter()
        read_fn(slide, x, y)
        result.warm_ms.append((time.perf_counter() - t0) * 1000)
    return slide
