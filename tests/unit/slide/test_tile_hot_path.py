"""The per-tile path, counted (issue 21): a level's JPEGTables are parsed once, each tile is
walked once (scan bounds included) and decoded from the bytes fetched for it (one block-store
lookup per tile), and a box inside the level is assembled without a white canvas. Pixels are
those of the general path (``complete_stream`` + ``decode_jpeg``)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.bombs import scan_bomb_jpeg
from tests.fixtures.images import abbreviated_jpeg_tiles, tissue
from tests.fixtures.slides import make_svs
from wsi_streamer.errors import LimitExceeded
from wsi_streamer.format import jpeg, jpeg_tiles
from wsi_streamer.format.jpeg import complete_stream, decode_jpeg
from wsi_streamer.format.jpeg_tiles import decode_tile_jpeg, level_jpeg
from wsi_streamer.io.block_cache import BlockStore
from wsi_streamer.io.range_reader import BytesReader
from wsi_streamer.slide import region
from wsi_streamer.slide.reader import open_slide

TILE = 128


@functools.cache
def slide_bytes() -> bytes:
    """Level 0 of 640x512 in 128 px tiles (5x4), level 1 of 320x256 (3x2)."""
    return make_svs(640, 512, levels=2, tile=TILE, associated=False).data


def counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[object]:
    calls: list[object] = []
    real = getattr(module, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)
    return calls


def test_one_header_parse_per_level(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every tile of two levels read twice: the tables are parsed once per level, and the
    general path (``complete_stream``, which parses each tile's header up to three times) is
    never taken."""
    parses = counting(monkeypatch, jpeg_tiles, "header_segments")
    general = counting(monkeypatch, jpeg_tiles, "complete_stream")
    slide = open_slide(BytesReader(slide_bytes(), "mem://hot"))
    for _ in range(2):
        for level in range(2):
            info = slide.level(level)
            region.read_region(slide, level, x=0, y=0, width=info.width, height=info.height)
    assert len(parses) == 2 and general == []


class CountingStore(BlockStore):
    """A block store counting the exact ranges it is asked for (each is one lookup)."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    def get_ranges(self, reader: Any, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        self.lookups += len(ranges)
        return super().get_ranges(reader, ranges)


def test_one_block_store_lookup_per_tile() -> None:
    store = CountingStore()
    slide = open_slide(store.view(BytesReader(slide_bytes(), "mem://hot")))
    # loads the level's offsets, counts, tables
    region.read_region(slide, 0, x=0, y=0, width=10, height=10)
    store.lookups = 0
    region.read_region(slide, 0, x=100, y=100, width=300, height=200)  # 4 x 3 tiles
    assert store.lookups == 12


def test_no_white_canvas_inside_the_level(monkeypatch: pytest.MonkeyPatch) -> None:
    white = counting(monkeypatch, region, "_canvas")
    slide = open_slide(BytesReader(slide_bytes(), "mem://hot"))
    inside = region.read_region(slide, 0, x=100, y=100, width=300, height=200)
    halved = region.render_region(slide, 0, x=100, y=100, width=300, height=200,
                                  out_size=(150, 100), resample=Image.Resampling.BOX,
                                  dct_scaling=False)
    assert white == []
    # past the right and bottom
    edge = region.read_region(slide, 0, x=500, y=400, width=300, height=200)
    assert len(white) == 1
    whole = np.asarray(region.read_region(slide, 0, x=0, y=0, width=640, height=512))
    assert np.array_equal(np.asarray(inside), whole[100:300, 100:400])
    assert np.array_equal(np.asarray(halved),
                          np.asarray(Image.fromarray(whole[100:300, 100:400]).reduce(2)))
    assert np.array_equal(np.asarray(edge)[:112, :140], whole[400:, 500:])
    assert (np.asarray(edge)[112:] == 255).all() and (np.asarray(edge)[:, 140:] == 255).all()


@pytest.mark.parametrize("rgb", [True, False])
@pytest.mark.parametrize("reduce", [None, 2, 4, 8])
def test_pixels_are_the_general_paths(rgb: bool, reduce: int | None) -> None:
    """Abbreviated tiles (the level's tables), complete tiles, and complete tiles carrying a
    JFIF segment on an RGB-coded level (the general path's case): the same pixels."""
    pixels = tissue(64, 64, seed=5)
    tables, (tile,) = abbreviated_jpeg_tiles([pixels], 85, rgb=rgb)
    full = complete_stream(tile, tables, rgb=False)  # a complete stream, tables inside
    jfif = io_jpeg(pixels)
    target = (64 // reduce, 64 // reduce) if reduce else None
    level = level_jpeg(tables, rgb)
    for data in (tile, full, jfif):
        ours = decode_tile_jpeg(level, data, (64, 64), target)
        theirs = decode_jpeg(complete_stream(data, tables, rgb), (64, 64), target)
        assert ours.size == theirs.size and ours.tobytes() == theirs.tobytes()


def io_jpeg(pixels: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def test_scan_bombs_are_refused_on_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = scan_bomb_jpeg(5000)
    decoded = counting(monkeypatch, jpeg_tiles.Image, "frombytes")
    opened = counting(monkeypatch, jpeg.Image, "open")
    with pytest.raises(LimitExceeded, match="MAX_JPEG_SCANS"):
        decode_tile_jpeg(level_jpeg(None, True), bomb, (256, 256))
    assert decoded == [] and opened == []


def test_local_groups_are_read_without_the_pool(tmp_path: Any) -> None:
    """Two ranges too far apart to coalesce: from a local file the caller reads both (no
    pool hand-off); from object storage they go to the pool, concurrently."""
    from wsi_streamer.io.local import LocalReader

    (tmp_path / "f.svs").write_bytes(bytes(range(256)) * 4096)
    local = LocalReader(str(tmp_path / "f.svs"), "f.svs")
    store = BlockStore()
    ranges = [(0, 1000), (600_000, 1000)]
    assert store.get_ranges(local, ranges) == [local.read(o, n) for o, n in ranges]
    assert store._pool is None
    remote = BytesReader((tmp_path / "f.svs").read_bytes(), "mem://f")
    store.get_ranges(remote, ranges)
    assert store._pool is not None
