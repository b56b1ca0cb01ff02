"""SlideRegistry: deduplicated concurrent opens, LRU bound, revalidation, failures uncached,
shared structure cache."""

from __future__ import annotations

import functools

import pytest

from tests.fixtures.fakes import FakeStorage
from tests.fixtures.slides import make_svs
from tests.fixtures.threads import run_together, values
from wsi_streamer.errors import SlideNotFound, StorageError, UnsupportedFormat
from wsi_streamer.format.drivers import Parsed
from wsi_streamer.io.block_cache import BlockStore
from wsi_streamer.slide.registry import SlideRegistry


@functools.cache
def svs_a() -> bytes:
    """A 2-level 300x200 SVS, written on first use (nothing is generated at import)."""
    return make_svs(300, 200, levels=2, tile=128, associated=False, seed=1).data


@functools.cache
def svs_b() -> bytes:
    """A 1-level 260x180 SVS, different content from ``svs_a``."""
    return make_svs(260, 180, levels=1, tile=128, associated=False, seed=2).data


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def registry(storage: FakeStorage, **kwargs: object) -> SlideRegistry:
    return SlideRegistry(storage, BlockStore(block_size=4096, max_bytes=1 << 24),
                         **kwargs)  # type: ignore[arg-type]


def test_get_returns_the_same_open_slide() -> None:
    storage = FakeStorage({"a.svs": svs_a()})
    reg = registry(storage)
    slide = reg.get("a.svs")
    assert slide.dimensions == (300, 200) and reg.get("a.svs") is slide
    assert storage.opens == ["a.svs"]


def test_concurrent_opens_of_one_slide_parse_once() -> None:
    storage = FakeStorage({"a.svs": svs_a()}, delay=0.02)
    reg = registry(storage)
    slides = values(run_together(lambda _: reg.get("a.svs"), range(16)))
    assert storage.opens == ["a.svs"]  # one open, so one parse
    assert all(s is slides[0] for s in slides)


def test_concurrent_failure_reaches_every_waiter_and_the_verdict_is_kept() -> None:
    storage = FakeStorage({"bad.svs": b"II*\0" + b"\0" * 5000}, delay=0.02)
    reg = registry(storage)
    errors = run_together(lambda _: reg.get("bad.svs"), range(8))
    assert all(isinstance(e, UnsupportedFormat) for e in errors)
    assert len(storage.opens) == 1
    with pytest.raises(UnsupportedFormat):
        reg.get("bad.svs")
    assert len(storage.opens) == 1  # the verdict is remembered (test_registry_lifecycle)


def test_not_found_and_storage_errors_propagate_and_retry() -> None:
    storage = FakeStorage({"a.svs": svs_a()})
    reg = registry(storage)
    with pytest.raises(SlideNotFound):
        reg.get("missing.svs")
    storage.fail_next = StorageError("boom")
    with pytest.raises(StorageError):
        reg.get("a.svs")
    assert reg.get("a.svs").dimensions == (300, 200)


def test_lru_bound() -> None:
    storage = FakeStorage({"a.svs": svs_a(), "b.svs": svs_b(), "c.svs": svs_a()})
    reg = registry(storage, max_slides=2)
    reg.get("a.svs")
    reg.get("b.svs")
    reg.get("a.svs")  # a becomes most recent
    reg.get("c.svs")  # evicts b
    assert storage.opens == ["a.svs", "b.svs", "c.svs"]
    reg.get("a.svs")
    reg.get("c.svs")
    assert len(storage.opens) == 3
    reg.get("b.svs")
    assert storage.opens[-1] == "b.svs" and len(storage.opens) == 4


def test_revalidation_keeps_unchanged_slide_and_reopens_changed_one() -> None:
    clock = Clock()
    storage = FakeStorage({"a.svs": svs_a()})
    reg = registry(storage, revalidate_s=60, clock=clock)
    first = reg.get("a.svs")
    clock.now = 30
    assert reg.get("a.svs") is first and len(storage.opens) == 1  # within the window
    clock.now = 61
    assert reg.get("a.svs") is first and len(storage.opens) == 2  # checked, same identity
    storage.replace("a.svs", svs_b())
    clock.now = 200
    second = reg.get("a.svs")
    assert second is not first and second.dimensions == (260, 180)
    assert second.identity.endswith("#2")


def test_revalidation_of_a_deleted_slide_raises_and_forgets_it() -> None:
    clock = Clock()
    storage = FakeStorage({"a.svs": svs_a()})
    reg = registry(storage, revalidate_s=10, clock=clock)
    reg.get("a.svs")
    del storage.slides["a.svs"]
    clock.now = 11
    with pytest.raises(SlideNotFound):
        reg.get("a.svs")
    storage.slides["a.svs"] = svs_a()
    assert reg.get("a.svs").dimensions == (300, 200)


def test_shared_structure_cache_skips_parsing() -> None:
    class Structures:
        def __init__(self) -> None:
            self.data: dict[str, Parsed] = {}
            self.ids: dict[str, str] = {}

        def get_structure(self, identity: str, table: object = None) -> Parsed | None:
            return self.data.get(identity)

        def put_structure(self, identity: str, parsed: Parsed) -> None:
            self.data[identity] = parsed

        def known_slide(self, slide_id: str) -> bool:
            return slide_id in self.ids

        def remember_slide(self, slide_id: str, identity: str) -> None:
            self.ids[slide_id] = identity

    structures = Structures()
    storage = FakeStorage({"a.svs": svs_a()})
    registry(storage, structures=structures).get("a.svs")
    assert list(structures.data) == ["fake://a.svs#1"]
    assert structures.ids == {"a.svs": "fake://a.svs#1"}

    other = FakeStorage({"a.svs": svs_a()})
    reg = registry(other, structures=structures)
    slide = reg.get("a.svs")
    assert slide.dimensions == (300, 200)
    assert reg.blocks.stats.snapshot()["misses"] == 0  # nothing parsed: no block fetched
    assert slide.read_tile(0, 0, 0).size == (128, 128)
