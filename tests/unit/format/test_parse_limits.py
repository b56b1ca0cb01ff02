"""Parse-time limits (``wsi_streamer.limits``): a file that exceeds one is refused with
``LimitExceeded`` (415) naming it, and the work one open does is bounded by counting it
(entries parsed, bytes read, sniffing candidates), whatever the file claims."""

from __future__ import annotations

import functools

import pytest

from tests.fixtures.fakes import CountingReader
from tests.fixtures.images import abbreviated_jpeg_tiles, tissue
from tests.fixtures.tiffpack import Field, pack_tiff, payload_offset, tiled_fields
from wsi_streamer import limits
from wsi_streamer.errors import LimitExceeded, UnsupportedFormat
from wsi_streamer.format.tiff import chain
from wsi_streamer.format.tiff import levels as levels_module
from wsi_streamer.format.tiff.driver import parse_structure
from wsi_streamer.io.range_reader import BytesReader

START = payload_offset()  # a constant (8): where pack_tiff puts the payload


@functools.cache
def jpeg() -> tuple[bytes, bytes]:
    """JPEGTables and one abbreviated 32x32 tile, encoded on first use."""
    tables, tiles = abbreviated_jpeg_tiles([tissue(32, 32, 0)], 80, rgb=True)
    return tables, tiles[0]


def one_level(width: int, height: int, tile: int, *, tile_height: int | None = None,
              extra: list[Field] | None = None, more_ifds: list[list[Field]] | None = None,
              trailer: bytes = b"") -> bytes:
    grid = -(-width // tile) * -(-height // (tile_height or tile))
    tables, tile_data = jpeg()
    fields = tiled_fields(width, height, tile, [START] * grid, [len(tile_data)] * grid,
                          tables=tables, extra=extra or [])
    if tile_height is not None:
        fields = [f if f.tag != 323 else Field(323, 3, [tile_height]) for f in fields]
    return pack_tiff([fields] + (more_ifds or []), payload=tile_data) + trailer


def test_the_baseline_opens() -> None:
    assert parse_structure(BytesReader(one_level(64, 64, 32))).levels[0].tile_width == 32


@pytest.mark.parametrize(("tile", "tile_height", "limit"), [
    (8, None, "MIN_TILE_SIDE"),
    (100, None, "TILE_SIDE_MULTIPLE"),
    (32, 24, "TILE_SIDE_MULTIPLE"),
    (240, 250, "TILE_SIDE_MULTIPLE"),
])
def test_tile_sides_follow_tiff_6(tile: int, tile_height: int | None, limit: str) -> None:
    with pytest.raises(LimitExceeded, match=limit) as caught:
        parse_structure(BytesReader(one_level(300, 300, tile, tile_height=tile_height)))
    assert caught.value.limit == limit
    assert isinstance(caught.value, UnsupportedFormat)  # 415, not 400


def test_tiles_per_level_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    # 128x128 in 16 px tiles is 64 tiles: over a lowered cap, refused before any array is read.
    monkeypatch.setattr(levels_module, "MAX_TILES_PER_LEVEL", 63)
    with pytest.raises(LimitExceeded, match="MAX_TILES_PER_LEVEL"):
        parse_structure(BytesReader(one_level(128, 128, 16)))
    monkeypatch.setattr(levels_module, "MAX_TILES_PER_LEVEL", 64)
    assert parse_structure(BytesReader(one_level(128, 128, 16))).levels[0].tile_count == 64


def filler_ifd(entries: int) -> list[Field]:
    """An IFD of ``entries`` entries of private tags (parsed, never used)."""
    return [Field(256, 3, [16]), Field(257, 3, [16])] + [
        Field(40000 + i, 3, [i]) for i in range(entries - 2)]


def test_entries_per_open_are_capped() -> None:
    # 20 IFDs of 4000 entries: each within MAX_ENTRIES, 80,000 together.
    data = one_level(64, 64, 32, more_ifds=[filler_ifd(4000) for _ in range(20)])
    with pytest.raises(LimitExceeded, match="MAX_TOTAL_ENTRIES"):
        parse_structure(BytesReader(data))


def test_bytes_read_per_open_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chain, "MAX_OPEN_BYTES", 3 << 20)
    description = Field(270, 2, b"x" * ((1 << 20) - 16) + b"\0")
    pages = [[Field(256, 3, [16]), Field(257, 3, [16]), description] for _ in range(6)]
    data = one_level(64, 64, 32, more_ifds=pages)
    reader = CountingReader(data)
    with pytest.raises(LimitExceeded, match="MAX_OPEN_BYTES"):
        parse_structure(reader)
    assert sum(n for _, n in reader.calls) <= (3 << 20) + (1 << 20)


def test_sniffing_work_per_open_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    # 64 IFDs in the middle of a 3 MiB file (outside the first head and tail reads), each
    # with a 4 KiB description full of ImageWidth-like entries: every piece read has hundreds.
    calls = []
    original = chain.ChainWalker._parse_candidate

    def counting(self: chain.ChainWalker, *args: object) -> object:
        calls.append(1)
        return original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(chain.ChainWalker, "_parse_candidate", counting)
    noise = (b"\x00\x01\x03\x00\x01\x00\x00\x00" * 512)[:4095] + b"\0"
    pages = [[Field(256, 3, [16]), Field(257, 3, [16]), Field(270, 2, noise)]
             for _ in range(64)]
    grid = 4
    tables, tile_data = jpeg()
    level = tiled_fields(64, 64, 32, [START] * grid, [len(tile_data)] * grid, tables=tables)
    data = pack_tiff([level] + pages, payload=tile_data + b"\0" * (1 << 20)) + b"\0" * (
        (1 << 20) + 4096)
    structure = parse_structure(BytesReader(data))
    assert structure.levels[0].width == 64
    assert len(calls) <= 8 * limits.MAX_SNIFF_CANDIDATES, len(calls)


def test_real_slides_meet_the_tile_rules(shared_slides: object) -> None:
    from pathlib import Path

    from wsi_streamer.io.local import LocalReader

    root = Path(str(shared_slides))
    for name in ("CMU-1-Small-Region.svs", "openslide-small.svs"):
        path = root / name
        if not path.is_file():
            pytest.skip(f"{name} is not in {root}")
        structure = parse_structure(LocalReader(str(path), name))
        for info in structure.levels:
            assert info.tile_width % 16 == 0 and info.tile_height % 16 == 0
