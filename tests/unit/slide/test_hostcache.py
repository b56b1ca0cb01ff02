"""The host cache stores data, never code (issue 11, item 3) and never fails its caller
(item 2): structures are versioned JSON, arrays typed records; a planted pickle is refused
unread; a wrong version or malformed entry, a locked database, a failure of any kind is a miss
with one warning per kind of failure (then at most one a minute)."""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import diskcache
import numpy as np
import pytest

from tests.fixtures.fakes import BOOMS, Boom
from tests.fixtures.slides import make_svs
from wsi_streamer.format import drivers
from wsi_streamer.format.drivers import STRUCTURE_VERSION, Parsed
from wsi_streamer.format.tiff.driver import DRIVER as TIFF
from wsi_streamer.format.tiff.header import TiffFormat
from wsi_streamer.format.tiff.structure import TiffStructure
from wsi_streamer.patches.backends.native import _pack_tables, _unpack_tables
from wsi_streamer.patches.masks import MASK_KIND, _pack, _unpack
from wsi_streamer.patches.types import TissueMask
from wsi_streamer.slide.codec import CacheEntryError, decode_arrays, encode_arrays
from wsi_streamer.slide.hostcache import BUSY_COOLDOWN_S, FailureLog, HostCache
from wsi_streamer.slide.reader import open_slide

LOGGER = "wsi_streamer.slide.hostcache"


def encode_structure(structure: TiffStructure) -> bytes:
    return drivers.encode(Parsed(TIFF, structure))


def decode_structure(blob: bytes) -> TiffStructure:
    parsed = drivers.decode(blob)
    assert parsed.driver is TIFF
    structure: TiffStructure = parsed.structure
    return structure


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def structure(tmp_path_factory: pytest.TempPathFactory) -> TiffStructure:
    root = tmp_path_factory.mktemp("hostcache-slide")
    path = make_svs(600, 400, levels=2, tile=256).write(root, "a.svs")
    return open_slide(str(path)).structure


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[HostCache]:
    host = HostCache(str(tmp_path / "cache"), 1 << 24)
    yield host
    host.close()


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno >= logging.WARNING]


# --- versioned encodings ----------------------------------------------------------------------
def test_structure_is_versioned_json_and_round_trips(structure: TiffStructure) -> None:
    blob = encode_structure(structure)
    doc = json.loads(blob)
    assert doc["schema"] == "wsi_streamer.structure" and doc["version"] == STRUCTURE_VERSION
    assert decode_structure(blob) == structure
    other = dataclasses.replace(structure, tiff=TiffFormat(">", bigtiff=True), mpp_x=None,
                                levels=tuple(dataclasses.replace(lv, jpeg_tables=None)
                                             for lv in structure.levels))
    assert decode_structure(encode_structure(other)) == other


def _edit(blob: bytes, edit: Any) -> bytes:
    doc = json.loads(blob)
    edit(doc)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("edit", [
    lambda d: d.update(version=STRUCTURE_VERSION + 1),
    lambda d: d.update(schema="other"),
    lambda d: d["structure"]["levels"][0].update(width="600"),
    lambda d: d["structure"]["levels"][0].update(tiles_x=99),
    lambda d: d["structure"]["levels"][0]["tile_offsets"].update(type=999),
    lambda d: d["structure"]["levels"][0]["tile_offsets"].update(inline="***"),
    lambda d: d["structure"]["tiff"].update(byteorder="?"),
    lambda d: d["structure"].update(levels=[]),
    lambda d: d.update(extra=1),
    lambda d: d.update(driver="nope"),
    lambda d: d["structure"].update(associated=[1]),
    lambda d: d["structure"].update(properties=[["a"]]),
    lambda d: d["structure"].update(mpp_x=True),
], ids=["version", "schema", "type", "grid", "field-type", "base64", "byteorder", "no-levels",
        "extra-field", "unknown-driver", "associated", "pair", "bool-float"])
def test_malformed_or_other_version_structure_is_refused(structure: TiffStructure,
                                                          edit: Any) -> None:
    with pytest.raises(CacheEntryError):
        decode_structure(_edit(encode_structure(structure), edit))


def test_array_record_round_trips_in_little_endian() -> None:
    offsets = np.arange(6, dtype=">u8") * 1000  # a big-endian source is stored little-endian
    flags = np.array([[True, False], [False, True]])
    blob = encode_arrays("k", {"n": 1}, {"offsets": offsets, "flags": flags,
                                         "empty": np.zeros(0, np.uint8)})
    meta, arrays = decode_arrays(blob, "k")
    assert meta == {"n": 1}
    assert arrays["offsets"].dtype.str == "<u8" and list(arrays["offsets"]) == list(offsets)
    assert arrays["flags"].tolist() == flags.tolist() and arrays["empty"].size == 0
    with pytest.raises(TypeError):
        encode_arrays("k", {}, {"o": np.array([object()])})


@pytest.mark.parametrize("blob", [
    b"", b"WSIA", b"WSIA\xff\xff\xff\xff{}", pickle.dumps({"offsets": [1, 2]}),
    encode_arrays("k", {}, {"a": np.arange(4, dtype=np.uint32)})[:-1],
    encode_arrays("k", {}, {"a": np.arange(4, dtype=np.uint32)}) + b"x",
    encode_arrays("other", {}, {}),
], ids=["empty", "magic-only", "huge-header", "pickle", "truncated", "trailing", "kind"])
def test_bad_array_records_are_refused(blob: bytes) -> None:
    with pytest.raises(CacheEntryError):
        decode_arrays(blob, "k")


def test_object_dtype_in_a_record_is_refused() -> None:
    blob = encode_arrays("k", {}, {"a": np.arange(2, dtype=np.uint8)})
    hacked = blob.replace(b'"|u1"', b'"|O1"')
    with pytest.raises(CacheEntryError):
        decode_arrays(hacked, "k")


def test_masks_and_tile_tables_round_trip_through_the_cache(cache: HostCache) -> None:
    mask = TissueMask(mask=np.random.default_rng(1).random((37, 53)) > 0.5, downsample=16.5,
                      slide_dimensions=(875, 610))
    cache.put_arrays("mask:x", MASK_KIND, *_pack(mask))
    back = _unpack(cache.get_arrays("mask:x", MASK_KIND))
    assert back is not None and back.mask.tolist() == mask.mask.tolist()
    assert (back.downsample, back.slide_dimensions) == (16.5, (875, 610))
    tables = {0: (np.arange(6, dtype=np.uint64), np.full(6, 7, np.uint64), b"\xff\xd8tables"),
              2: (np.arange(1, dtype=np.uint64), np.ones(1, np.uint64), None)}
    cache.put_arrays("tables:x", "wsi_streamer.tile_tables", *_pack_tables(tables))
    got = _unpack_tables(cache.get_arrays("tables:x", "wsi_streamer.tile_tables"))
    assert set(got) == {0, 2} and got[0][2] == b"\xff\xd8tables" and got[2][2] is None
    assert got[0][0].tolist() == list(range(6)) and got[0][1].tolist() == [7] * 6
    assert cache.get_arrays("mask:x", "wsi_streamer.tile_tables") is None  # another kind


def test_malformed_entries_are_misses_warned_once(cache: HostCache, structure: TiffStructure,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    cache.set("structure:old", _edit(encode_structure(structure),
                                     lambda d: d.update(version=STRUCTURE_VERSION + 1)))
    cache.set("structure:bad", b"{not json")
    cache.set("structure:pickled", pickle.dumps({"from": "an older version"}))
    cache.set("mask:pickled", pickle.dumps({"bits": b""}))
    for _ in range(5):
        assert cache.get_structure("old") is None and cache.get_structure("bad") is None
        assert cache.get_structure("pickled") is None
        assert cache.get_arrays("mask:pickled", MASK_KIND) is None
    found = warnings_of(caplog)
    assert len(found) == 1 and "structure:bad" in found[0], found  # stale ones: debug only
    cache.put_structure("bad", Parsed(TIFF, structure))
    assert cache.get_structure("bad") == Parsed(TIFF, structure)


# --- nothing from the folder is executable ----------------------------------------------------
@pytest.mark.parametrize("how", ["pickle-bytes", "diskcache-pickle"])
def test_planted_pickle_is_never_unpickled(tmp_path: Path, how: str,
                                           caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "cache"
    host = HostCache(str(folder), 1 << 24)
    raw = diskcache.Cache(str(folder))  # what a planter would use
    keys = ["structure:s3://b/a.svs#etag", "slide:a.svs", "mask:x", "tables:x", "tile-key"]
    for key in keys:
        raw.set(key, pickle.dumps(Boom()) if how == "pickle-bytes" else Boom())
    raw.close()
    BOOMS.clear()
    assert host.get_structure("s3://b/a.svs#etag") is None
    assert host.get_arrays("mask:x", MASK_KIND) is None
    assert host.get_arrays("tables:x", "wsi_streamer.tile_tables") is None
    if how == "diskcache-pickle":
        assert host.get("tile-key") is None and not host.known_slide("a.svs")
    assert BOOMS == []
    if how == "diskcache-pickle":
        assert len(warnings_of(caplog)) == 1  # refused entries: one kind, one warning
    host.close()


def test_value_file_outside_the_cache_is_never_read(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    secret = tmp_path / "secret"
    secret.write_bytes(b"private")
    host = HostCache(str(folder), 1 << 24)
    host.set("k", b"v")
    with sqlite3.connect(folder / "cache.db") as con:  # a planted row: MODE_BINARY, a path out
        con.execute("UPDATE Cache SET mode = 2, value = NULL, filename = ? WHERE key = 'k'",
                    ("../secret",))
    assert host.get("k") is None
    host.clear()
    assert secret.read_bytes() == b"private"  # eviction did not delete it either
    host.close()


# --- failures are bounded misses, warned once per kind -----------------------------------------
def test_failure_log_is_once_per_kind_then_once_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    log = FailureLog(interval=60.0, clock=clock)
    assert log.warn("a", "first %s", 1)
    assert not log.warn("a", "again") and not log.warn("a", "again")
    assert log.warn("b", "other kind")
    clock.now += 61
    assert log.warn("a", "later")
    messages = warnings_of(caplog)
    assert len(messages) == 3 and "2 left out" in messages[2]


@contextmanager
def write_locked(folder: Path) -> Iterator[None]:
    """Another connection holds the database's write lock meanwhile."""
    con = sqlite3.connect(folder / "cache.db", isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        con.execute("ROLLBACK")
        con.close()


def test_locked_database_is_a_bounded_miss(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "cache"
    clock = Clock()
    host = HostCache(str(folder), 1 << 24, timeout=0.05, clock=clock)
    host.set("old", b"v")
    with write_locked(folder):
        host.set("k", b"v")  # waits at most the timeout, then gives up: a lost write
        host.set("k", b"v")  # within the cooldown: not even tried
        assert host.get("old") == b"v"  # reads go on (WAL)
        found = warnings_of(caplog)
        assert len(found) == 1 and "Timeout" in found[0], found
        clock.now += BUSY_COOLDOWN_S + 1
        host.set("k", b"v")  # tried again (still locked): the same kind, not logged again
        assert len(warnings_of(caplog)) == 1
    assert host.get("k") is None
    clock.now += BUSY_COOLDOWN_S + 1
    host.set("k", b"v")
    assert host.get("k") == b"v"
    host.close()


def test_locked_database_at_open_degrades_to_no_cache(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "cache"
    HostCache(str(folder), 1 << 24).close()
    with write_locked(folder):
        host = HostCache(str(folder), 1 << 24, timeout=0.05)  # diskcache alone waits 60 s
        assert not host.available
        assert host.get("k") is None
        host.set("k", b"v")
    found = warnings_of(caplog)
    assert len(found) == 1 and "cannot be opened" in found[0] and "locked" in found[0]


def test_a_cache_that_failed_to_open_is_tried_again_later(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    (folder / "cache.db").write_bytes(b"not a database, just junk " * 400)
    clock = Clock()
    host = HostCache(str(folder), 1 << 24, clock=clock)
    assert not host.available and host.get("k") is None
    assert len(warnings_of(caplog)) == 1 and "not a database" in warnings_of(caplog)[0]
    (folder / "cache.db").unlink()  # the operator's fix
    host.set("k", b"v")
    assert not host.available  # not before the reopen interval
    clock.now += 61
    host.set("k", b"v")
    assert host.available and host.get("k") == b"v"
    host.close()


def test_the_folder_stays_within_size_limit_under_churn(tmp_path: Path) -> None:
    """Database, value files and write-ahead log together, sampled after every write of a
    mix of tile-sized and overview-sized values (diskcache alone overshoots its own limit by
    a cull batch and does not count the log)."""
    import random

    limit = 16 << 20
    cache = HostCache(str(tmp_path / "c"), limit)
    rng = random.Random(0)

    def folder() -> int:
        return sum(p.stat().st_size for p in (tmp_path / "c").rglob("*") if p.is_file())

    worst = 0
    for i in range(1500):
        size = 3 << 20 if i % 100 == 0 else rng.randrange(10_000, 60_000)
        cache.set(f"k{i}", rng.randbytes(size))
        worst = max(worst, folder())
    assert worst <= limit, worst
    assert cache.get("k1499") is not None  # still a cache
