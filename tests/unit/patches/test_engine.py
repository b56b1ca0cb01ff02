"""The streaming engine: reads planned ahead and run concurrently, slides opened in the
background, faults that stay with their patch. Counted work, not time."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from wsi_streamer.patches import NativeBackend, PatchPipeline, RandomSampler
from wsi_streamer.patches.backends import NativeSlide


class Gauge:
    """Concurrency high-water mark of a section."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.calls = 0
        self.finished = 0

    def __enter__(self) -> Gauge:
        with self.lock:
            self.now += 1
            self.calls += 1
            self.peak = max(self.peak, self.now)
        return self

    def __exit__(self, *exc: Any) -> None:
        with self.lock:
            self.now -= 1
            self.finished += 1


READS = Gauge()
OPENS = Gauge()
FAIL_EVERY = {"n": 0}


class SlowSlide:
    def __init__(self, inner: NativeSlide) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def read_region(self, **kwargs: Any) -> np.ndarray:
        with READS:
            time.sleep(0.03)  # storage latency
            n = FAIL_EVERY["n"]
            if n and (n == 1 or kwargs["x"] % n == 0):  # by x: the same patches fail every run
                raise OSError("injected read failure")
            return self.inner.read_region(**kwargs)


GATE = threading.Event()  # set: slides other than slide-0 may finish opening


class SlowBackend(NativeBackend):
    def open_slide(self, path: str) -> Any:
        with OPENS:
            time.sleep(0.05)
            return SlowSlide(super().open_slide(path))


class GatedBackend(NativeBackend):
    def open_slide(self, path: str) -> Any:
        with OPENS:
            if not path.endswith("slide-0.svs"):
                GATE.wait(10)
            return super().open_slide(path)


def test_first_patch_waits_for_its_own_slide_only(island_paths, cache_dir):
    pipe = PatchPipeline(island_paths, backend=GatedBackend(), sampler=RandomSampler(64),
                         thumbnail_size=(512, 512), pool_size=4, patches_per_slide=3, seed=1,
                         prefetch=1, io_threads=1, cache_dir=cache_dir)
    stream = iter(pipe)
    first = next(stream)
    assert first.coordinate.slide_path.endswith("slide-0.svs")
    assert OPENS.finished == 1 and OPENS.calls >= 2  # the others are still opening
    GATE.set()
    rest = list(stream)
    assert len(rest) == 11


@pytest.fixture(autouse=True)
def reset() -> None:
    for gauge in (READS, OPENS):
        gauge.now = gauge.peak = gauge.calls = gauge.finished = 0
    GATE.clear()
    FAIL_EVERY["n"] = 0


def test_reads_run_ahead_concurrently_and_slides_open_in_the_background(island_paths,
                                                                        cache_dir):
    pipe = PatchPipeline(island_paths, backend=SlowBackend(), sampler=RandomSampler(64),
                         thumbnail_size=(512, 512), pool_size=2, patches_per_slide=10,
                         seed=1, io_threads=8, prefetch=16, cache_dir=cache_dir)
    results = list(pipe)
    assert len(results) == 40
    assert READS.peak >= 6  # one thread would never exceed 1
    assert OPENS.peak >= 2  # the pool's slides and the next ones open together


def test_io_threads_one_reads_one_at_a_time(island_paths, cache_dir):
    pipe = PatchPipeline(island_paths[:1], backend=SlowBackend(), sampler=RandomSampler(64),
                         thumbnail_size=(512, 512), patches_per_slide=5, seed=1, io_threads=1,
                         cache_dir=cache_dir)
    assert len(list(pipe)) == 5 and READS.peak == 1


def test_same_seed_same_patches_whatever_the_prefetch(island_paths, cache_dir):
    def coords(**kwargs: Any) -> list[tuple[str, int, int]]:
        pipe = PatchPipeline(island_paths, sampler=RandomSampler(64), seed=5, pool_size=3,
                             thumbnail_size=(512, 512), patches_per_slide=6, cycle=True,
                             slide_sampling="random", cache_dir=cache_dir, **kwargs)
        out = []
        for result in pipe:
            out.append((result.coordinate.slide_path, result.coordinate.x, result.coordinate.y))
            if len(out) == 60:
                return out
        return out

    assert coords(prefetch=1, io_threads=1) == coords(prefetch=32, io_threads=8)


def test_failed_reads_consume_the_budget_and_are_counted(island_paths, cache_dir):
    FAIL_EVERY["n"] = 3
    pipe = PatchPipeline(island_paths[:2], backend=SlowBackend(), sampler=RandomSampler(64),
                         thumbnail_size=(512, 512), patches_per_slide=9, seed=1,
                         cache_dir=cache_dir)
    results = list(pipe)
    stats = pipe.stats_dict()
    errors = stats["pipeline/patch_errors"]
    assert errors > 0 and errors + len(results) == 18
    assert stats["pipeline/error_count"] == errors


def test_on_error_raise_stops_at_the_first_failure(island_paths, cache_dir):
    FAIL_EVERY["n"] = 2
    pipe = PatchPipeline(island_paths[:1], backend=SlowBackend(), sampler=RandomSampler(64),
                         thumbnail_size=(512, 512), patches_per_slide=9, seed=1,
                         on_error="raise", cache_dir=cache_dir)
    with pytest.raises(OSError, match="injected"):
        list(pipe)


def test_a_slide_whose_reads_all_fail_is_dropped_from_later_passes(island_paths, cache_dir):
    FAIL_EVERY["n"] = 1
    pipe = PatchPipeline(island_paths[:2], backend=SlowBackend(), sampler=RandomSampler(64),
                         thumbnail_size=(512, 512), patches_per_slide=2, seed=1, cycle=True,
                         cache_dir=cache_dir)
    with pytest.raises(Exception, match="every read failed"):
        list(pipe)
    assert pipe.stats_dict()["pipeline/slides_failed"] == 2


def test_early_break_stops_the_threads(island_paths, cache_dir):
    before = threading.active_count()
    pipe = PatchPipeline(island_paths, sampler=RandomSampler(64), thumbnail_size=(512, 512),
                         cycle=True, seed=1, cache_dir=cache_dir)
    stream = iter(pipe)
    for _ in range(5):
        next(stream)
    stream.close()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before
