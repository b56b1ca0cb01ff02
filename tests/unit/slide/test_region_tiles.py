"""Which tiles a region decodes, counted: a box that ends exactly on a tile boundary
(``[x, x+width)`` is end-exclusive) decodes no tile of the next column or row (the pixels
would not change, the cost of every tile-aligned read would double)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.images import psnr
from tests.fixtures.slides import make_svs
from wsi_streamer.io.range_reader import BytesReader
from wsi_streamer.slide import region
from wsi_streamer.slide.reader import SlideReader, open_slide
from wsi_streamer.slide.region import read_region, region_tile_count, render_region, tile_span

TILE = 128


@functools.cache
def slide_bytes() -> bytes:
    """Level 0 of 640x512 in 128 px tiles (5x4), level 1 of 320x256 (3x2)."""
    return make_svs(640, 512, levels=2, tile=TILE, associated=False).data


class CountingTiles:
    """A ``SlideReader`` that records every tile ``tile_images`` is asked to decode."""

    def __init__(self, inner: SlideReader) -> None:
        self.inner = inner
        self.decoded: list[tuple[int, int, int]] = []

    def tile_images(self, level: int, tiles: list[tuple[int, int]], *args: Any) -> Any:
        self.decoded += [(level, tx, ty) for tx, ty in tiles]
        return self.inner.tile_images(level, tiles, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def slide() -> CountingTiles:
    return CountingTiles(open_slide(BytesReader(slide_bytes())))


@pytest.mark.parametrize(("box", "tiles"), [
    ((0, 0, 128, 128), {(0, 0)}),  # exactly tile (0, 0)
    ((128, 0, 128, 128), {(1, 0)}),
    ((0, 0, 256, 256), {(0, 0), (1, 0), (0, 1), (1, 1)}),
    ((128, 256, 384, 128), {(1, 2), (2, 2), (3, 2)}),
    ((0, 0, 129, 128), {(0, 0), (1, 0)}),  # one pixel into the next column
    ((0, 0, 128, 129), {(0, 0), (0, 1)}),
    ((512, 384, 128, 128), {(4, 3)}),  # the last tile
])
def test_box_ending_on_a_tile_boundary_decodes_no_tile_past_it(
        slide: CountingTiles, box: tuple[int, int, int, int],
        tiles: set[tuple[int, int]]) -> None:
    x, y, w, h = box
    image = read_region(slide, 0, x=x, y=y, width=w, height=h)  # type: ignore[arg-type]
    assert {(tx, ty) for _, tx, ty in slide.decoded} == tiles
    assert len(slide.decoded) == len(tiles)  # each once
    info = slide.level(0)
    assert region_tile_count(info, x, y, w, h) == len(tiles)
    x0, y0, x1, y1 = tile_span(info, x, y, w, h)
    assert {(tx, ty) for ty in range(y0, y1 + 1) for tx in range(x0, x1 + 1)} == tiles
    # The pixels are the tiles' own.
    expected = Image.new("RGB", (640, 512))
    reference = open_slide(BytesReader(slide_bytes()))
    for tx, ty in tiles:
        tile = next(iter(reference.tile_images(0, [(tx, ty)])))
        expected.paste(tile, (tx * TILE, ty * TILE))
    assert np.array_equal(np.asarray(image), np.asarray(expected.crop((x, y, x + w, y + h))))


def test_resampled_tile_aligned_box_decodes_its_tiles_only(slide: CountingTiles) -> None:
    """A 256 px box of level 0 (2x2 tiles) resampled to 64 px: four tiles, not nine."""
    out = render_region(slide, 0, x=128.0, y=128.0, width=256.0,  # type: ignore[arg-type]
                        height=256.0, out_size=(64, 64))
    assert out.size == (64, 64)
    assert sorted(slide.decoded) == [(0, 1, 1), (0, 1, 2), (0, 2, 1), (0, 2, 2)]


class CountingFetches(CountingTiles):
    """Also records how many tiles each ``tile_images`` call fetches together."""

    def __init__(self, inner: SlideReader) -> None:
        super().__init__(inner)
        self.fetches: list[int] = []

    def tile_images(self, level: int, tiles: list[tuple[int, int]], *args: Any) -> Any:
        self.fetches.append(len(tiles))
        return super().tile_images(level, tiles, *args)


def test_overview_fetches_whole_rows_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """A level of 5x4 tiles is one fetch (one round of requests, not one per row); with a
    bound of 12 tiles, two rows at a time; a bound under a row still takes a whole row. The
    pixels are the level's area average (DCT-scaled decode: JPEG's own error), whatever the
    batching."""
    reference = np.asarray(read_region(open_slide(BytesReader(slide_bytes())), 0, x=0, y=0,
                                       width=640, height=512).reduce(2))
    for bound, fetches in ((256, [20]), (12, [10, 10]), (3, [5, 5, 5, 5])):
        monkeypatch.setattr(region, "OVERVIEW_FETCH_TILES", bound)
        slide = CountingFetches(open_slide(BytesReader(slide_bytes())))
        image = region.render_overview(slide, 0, (320, 256), max_tiles=100,  # type: ignore[arg-type]
                                       max_canvas=1 << 20, resample=Image.Resampling.BOX)
        assert slide.fetches == fetches
        assert len(slide.decoded) == 20 and len(set(slide.decoded)) == 20  # each tile once
        assert psnr(np.asarray(image), reference) >= 45
