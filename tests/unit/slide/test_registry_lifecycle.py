"""SlideRegistry over time: remembered failures (not found briefly, unsupported by content),
stale-while-revalidate, a replaced object reopened at once, byte-bounded eviction that closes
file descriptors without breaking a request still reading."""

from __future__ import annotations

import gc
import os
import threading
import weakref
from pathlib import Path

import pytest

from tests.fixtures.fakes import CountingReader
from tests.fixtures.slides import make_svs
from tests.fixtures.threads import run_together, values
from tests.unit.slide.test_registry import Clock, FakeStorage, registry, svs_a, svs_b
from wsi_streamer.errors import ObjectChanged, SlideNotFound, StorageError, UnsupportedFormat
from wsi_streamer.io.block_cache import BlockStore
from wsi_streamer.io.local import LocalReader, LocalStorage
from wsi_streamer.slide.registry import STRUCTURE_COST, SlideRegistry

BAD = b"II*\0" + b"\0" * 5000


class VersionedStorage(FakeStorage):
    """Reads of a reader opened before ``replace`` raise ``ObjectChanged`` (like an S3 read
    pinned with IfMatch); ``stall`` makes ``open`` wait (a slow HeadObject)."""

    def __init__(self, slides: dict[str, bytes]) -> None:
        super().__init__(slides)
        self.stall: threading.Event | None = None
        self.entered = threading.Event()

    def open(self, slide_id: str) -> CountingReader:
        self.entered.set()
        if self.stall is not None:
            assert self.stall.wait(10)
        reader = super().open(slide_id)
        version, storage = self.versions[slide_id], self

        class Pinned(CountingReader):
            def read(self, offset: int, length: int) -> bytes:
                if storage.versions[slide_id] != version:
                    raise ObjectChanged(slide_id)
                return super().read(offset, length)

        return Pinned(reader.data, reader.identity)


def test_not_found_is_remembered_briefly() -> None:
    clock = Clock()
    storage = FakeStorage({})
    reg = registry(storage, negative_ttl_s=10, clock=clock)
    for _ in range(250):
        with pytest.raises(SlideNotFound):
            reg.get("missing.svs")
    assert storage.opens == ["missing.svs"]
    clock.now = 11
    storage.slides["missing.svs"], storage.versions["missing.svs"] = svs_a(), 1
    assert reg.get("missing.svs").dimensions == (300, 200)


def test_an_unsupported_slide_is_judged_once_per_content() -> None:
    clock = Clock()
    storage = FakeStorage({"bad.svs": BAD})
    reg = registry(storage, revalidate_s=60, clock=clock)
    with pytest.raises(UnsupportedFormat):
        reg.get("bad.svs")
    misses = reg.blocks.stats.snapshot()["misses"]
    for _ in range(50):
        with pytest.raises(UnsupportedFormat):
            reg.get("bad.svs")
    assert len(storage.opens) == 1
    clock.now = 61  # the verdict is re-checked by identity: one open, no parse
    with pytest.raises(UnsupportedFormat):
        reg.get("bad.svs")
    assert len(storage.opens) == 2 and reg.blocks.stats.snapshot()["misses"] == misses
    storage.replace("bad.svs", svs_a())  # new content: judged again
    clock.now = 200
    assert reg.get("bad.svs").dimensions == (300, 200)


def test_transient_storage_errors_are_never_remembered() -> None:
    storage = FakeStorage({"a.svs": svs_a()})
    reg = registry(storage)
    storage.fail_next = StorageError("503")
    with pytest.raises(StorageError):
        reg.get("a.svs")
    assert reg.get("a.svs").dimensions == (300, 200)


def test_one_request_revalidates_while_the_others_keep_serving() -> None:
    clock = Clock()
    storage = VersionedStorage({"a.svs": svs_a()})
    reg = registry(storage, revalidate_s=60, clock=clock)
    first = reg.get("a.svs")
    clock.now = 61
    storage.stall, storage.entered = threading.Event(), threading.Event()
    checker = threading.Thread(target=reg.get, args=("a.svs",), daemon=True)
    checker.start()
    assert storage.entered.wait(10)  # the HeadObject is in progress (stalled)
    served = values(run_together(lambda _: reg.get("a.svs"), range(8)))
    assert all(s is first for s in served)  # nobody waited for the check
    storage.stall.set()
    checker.join(10)
    assert len(storage.opens) == 2  # one open, one check


def test_a_failed_check_keeps_the_open_slide() -> None:
    clock = Clock()
    storage = FakeStorage({"a.svs": svs_a()})
    reg = registry(storage, revalidate_s=60, clock=clock)
    first = reg.get("a.svs")
    clock.now = 61
    storage.fail_next = StorageError("HeadObject: 503")
    assert reg.get("a.svs") is first
    assert reg.get("a.svs") is first and len(storage.opens) == 2  # re-checked later


def test_a_replaced_object_is_reopened_at_once_and_the_read_retried() -> None:
    storage = VersionedStorage({"a.svs": svs_a()})
    # A store that keeps nothing, so the read after the replacement reaches storage.
    reg = SlideRegistry(storage, BlockStore(4096, 1), revalidate_s=3600)  # type: ignore[arg-type]
    reg.get("a.svs").read_tile(0, 0, 0)
    storage.replace("a.svs", svs_b())
    size = reg.using("a.svs", lambda slide: slide.read_tile(0, 2, 0).size)
    assert size == (260 - 256, 128)  # the new content (260 px wide, not 300): no 500s
    assert reg.get("a.svs").identity.endswith("#2")


def test_eviction_by_bytes_counts_loaded_offset_arrays() -> None:
    big = make_svs(512, 512, levels=1, tile=16, associated=False, seed=3).data  # 1024 tiles
    storage = FakeStorage({"big.svs": big, "a.svs": svs_a()})
    reg = registry(storage, max_bytes=STRUCTURE_COST * 2 + 1000)
    reg.get("big.svs").read_tile(0, 0, 0)  # loads 1024 offsets + counts (>= 8 KB)
    assert reg.cost_bytes() > STRUCTURE_COST + 8000
    reg.get("a.svs")
    assert len(reg) == 1  # big.svs was evicted by bytes, not by count


def _local(tmp_path: Path, data: bytes, name: str = "a.svs") -> LocalStorage:
    (tmp_path / name).write_bytes(data)
    return LocalStorage(str(tmp_path))


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_eviction_closes_file_descriptors_and_a_later_read_reopens(tmp_path: Path) -> None:
    storage = _local(tmp_path, svs_a())
    for i in range(20):
        (tmp_path / f"s{i}.svs").write_bytes(svs_b())
    reg = registry(storage, max_slides=2)  # type: ignore[arg-type]
    kept = reg.get("a.svs")
    before = _open_fds()
    for i in range(20):
        reg.get(f"s{i}.svs")
    assert _open_fds() <= before + 2  # evicted slides closed their files
    assert not kept.reader.inner.is_open  # type: ignore[attr-defined]
    assert kept.read_tile(0, 0, 0).size == (128, 128)  # a request still holding it reads on


def test_a_close_during_a_read_waits_for_it(tmp_path: Path) -> None:
    path = tmp_path / "a.svs"
    path.write_bytes(svs_a())
    reader = LocalReader(str(path), "a.svs")
    reader._users += 1  # a read in progress
    reader.close()
    assert reader.is_open  # deferred
    reader._release()
    assert not reader.is_open


def test_reopening_a_replaced_file_is_object_changed(tmp_path: Path) -> None:
    path = tmp_path / "a.svs"
    path.write_bytes(svs_a())
    reader = LocalReader(str(path), "a.svs")
    reader.close()
    assert reader.read(0, 4) == svs_a()[:4]  # reopened: same content
    reader.close()
    path.write_bytes(svs_b())
    os.utime(path, ns=(1, 1))
    with pytest.raises(ObjectChanged):
        reader.read(0, 4)


@pytest.mark.parametrize("data", [None, BAD], ids=["not-found", "unsupported"])
def test_remembered_failures_keep_no_frame_of_the_request(data: bytes | None) -> None:
    """A remembered error without its traceback: the failing request's frames (and every
    buffer they hold) are freed when the request ends, however many failures are kept."""

    class Marker:
        pass

    storage = FakeStorage({} if data is None else {"x.svs": data})
    reg = registry(storage)

    def request() -> weakref.ref[Marker]:
        marker = Marker()  # stands for the request's buffers
        try:
            reg.get("x.svs")
        except (SlideNotFound, UnsupportedFormat):
            pass
        return weakref.ref(marker)

    ref = request()
    gc.collect()
    assert ref() is None
    with pytest.raises(SlideNotFound if data is None else UnsupportedFormat):
        reg.get("x.svs")  # still remembered
    assert len(storage.opens) == 1
