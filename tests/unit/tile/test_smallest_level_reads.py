"""Thumbnails and low Deep Zoom levels are rendered from the smallest adequate native level,
checked by what storage was asked for: every range read is classified by the tiles it touches
(work counted, not timed)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.fakes import CountingReader
from tests.fixtures.slides import make_svs
from wsi_streamer.format.drivers import Parsed
from wsi_streamer.format.tiff.driver import DRIVER as TIFF
from wsi_streamer.format.tiff.driver import parse_structure
from wsi_streamer.format.tiff.slide import TiffSlide
from wsi_streamer.format.tiff.structure import TiffStructure
from wsi_streamer.io.block_cache import BlockStore
from wsi_streamer.io.range_reader import BytesReader, IoStats
from wsi_streamer.io.storage import SlidePage
from wsi_streamer.slide.registry import SlideRegistry
from wsi_streamer.tile.cache import TileCache
from wsi_streamer.tile.service import TileService


@dataclass(frozen=True)
class Sample:
    """The slide, its structure and, per level, the (offset, length) of every tile."""

    data: bytes
    structure: TiffStructure
    tile_ranges: dict[int, set[tuple[int, int]]]


@functools.cache
def sample() -> Sample:
    """Levels 1024x768, 512x384 and 256x192 in 128 px tiles (48, 12 and 4 tiles)."""
    data = make_svs(1024, 768, levels=3, tile=128, associated=False).data
    structure = parse_structure(BytesReader(data))
    reference = TiffSlide(BytesReader(data), structure)
    ranges = {info.level: {reference.tile_range(info.level, x, y)
                           for y in range(info.tiles_y) for x in range(info.tiles_x)}
              for info in structure.levels}
    return Sample(data, structure, ranges)


class OneSlide:
    """A ``Storage`` holding one slide behind a ``CountingReader``."""

    def __init__(self) -> None:
        self.reader = CountingReader(sample().data, "fake://slide.svs#1")
        self.stats = IoStats()

    def open(self, slide_id: str) -> CountingReader:
        return self.reader

    def open_probed(self, slide_id: str, head: int, tail: int
                    ) -> tuple[CountingReader, list[tuple[int, bytes]]]:
        return self.reader, []

    def list_slides(self, **_: object) -> SlidePage:
        return SlidePage(("slide.svs",), None)

    def check(self) -> str:
        return "one slide"


class KnownStructure:
    """A structure cache that already knows the slide, so opening it reads nothing and every
    range storage sees afterwards was asked for by the image being made."""

    def get_structure(self, identity: str, table: object = None) -> Parsed | None:
        return Parsed(TIFF, sample().structure)

    def put_structure(self, identity: str, parsed: Parsed) -> None:
        pass

    def known_slide(self, slide_id: str) -> bool:
        return True

    def remember_slide(self, slide_id: str, identity: str) -> None:
        pass


@pytest.fixture
def service(tmp_path: Path) -> tuple[TileService, CountingReader]:
    storage = OneSlide()
    registry = SlideRegistry(storage, BlockStore(4096, 1 << 26),  # type: ignore[arg-type]
                             structures=KnownStructure())
    return TileService(registry, TileCache(str(tmp_path / "tiles"), 1 << 26)), storage.reader


def levels_read(calls: list[tuple[int, int]]) -> dict[int, set[tuple[int, int]]]:
    """For each level, the tile ranges that some storage read overlapped."""
    touched: dict[int, set[tuple[int, int]]] = {}
    for offset, length in calls:
        for level, ranges in sample().tile_ranges.items():
            for start, size in ranges:
                if start < offset + length and offset < start + size:
                    touched.setdefault(level, set()).add((start, size))
    return touched


@pytest.mark.parametrize(("max_size", "level"), [
    (64, 2), (200, 2), (256, 2),  # 256x192 is large enough
    (300, 1), (512, 1),  # needs 512x384
    (600, 0), (1024, 0),  # only the base is
])
def test_thumbnail_reads_only_the_smallest_adequate_level(
        service: tuple[TileService, CountingReader], max_size: int, level: int) -> None:
    tiles, reader = service
    result = tiles.thumbnail("slide.svs", max_size)
    assert result.data is not None and not result.cache_hit
    touched = levels_read(reader.calls)
    assert set(touched) == {level}, {lv: len(r) for lv, r in touched.items()}
    assert touched[level] == sample().tile_ranges[level]  # the whole level, each tile
    tile_bytes = sum(n for _, n in sample().tile_ranges[level])
    # The tiles plus the level's offset/count arrays and JPEG tables, nothing more.
    assert sum(n for _, n in reader.calls) <= tile_bytes + 4096, reader.calls


@pytest.mark.parametrize(("dz_level", "native"), [
    (10, 0),  # the full image (Deep Zoom has 11 levels for 1024 px)
    (9, 1),  # scale 2
    (8, 2), (7, 2), (3, 2), (0, 2),  # scale 4 and smaller: the smallest native level
])
def test_deep_zoom_tile_reads_only_the_best_native_level(
        service: tuple[TileService, CountingReader], dz_level: int, native: int) -> None:
    tiles, reader = service
    assert tiles.deep_zoom(tiles.slide("slide.svs")).level_count == 11
    result = tiles.dzi_tile("slide.svs", dz_level, 0, 0)
    assert result.data is not None
    touched = levels_read(reader.calls)
    assert set(touched) == {native}, {lv: len(r) for lv, r in touched.items()}


@pytest.mark.parametrize(("overview_size", "level"), [
    (200, 2),  # 200x150: the 256x192 level is the smallest at least that large
    (300, 1),  # 300x225: needs 512x384
])
def test_overview_is_built_from_the_smallest_adequate_level(
        tmp_path: Path, overview_size: int, level: int) -> None:
    """A slide larger than the overview: thumbnails and low Deep Zoom levels come from the
    overview, which decodes the smallest level at least the overview's size, not level 0
    (48 tiles here; on a real slide GBs and minutes)."""
    storage = OneSlide()
    registry = SlideRegistry(storage, BlockStore(4096, 1 << 26),  # type: ignore[arg-type]
                             structures=KnownStructure())
    tiles = TileService(registry, TileCache(str(tmp_path / "tiles"), 1 << 26),
                        overview_size=overview_size)
    assert tiles.overviews.geometry(tiles.slide("slide.svs")) is not None
    assert tiles.thumbnail("slide.svs", 64).data is not None
    assert tiles.dzi_tile("slide.svs", 6, 0, 0).data is not None  # 64 px: from the overview
    assert tiles.overviews.stats.built == 1
    touched = levels_read(storage.reader.calls)
    assert set(touched) == {level}, {lv: len(r) for lv, r in touched.items()}
    assert touched[level] == sample().tile_ranges[level]
