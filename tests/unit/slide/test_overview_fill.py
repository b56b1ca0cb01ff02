"""``render_overview``'s ``fill``: an overview that may be a little smaller than asked is a
level reduced while decoding, returned as it is (no resampling pass, no full-size decode);
``fill`` 1 (the tile server's) is unchanged."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.images import psnr
from tests.fixtures.slides import make_svs
from wsi_streamer.errors import InvalidParameter
from wsi_streamer.io.range_reader import BytesReader
from wsi_streamer.slide.reader import SlideReader, open_slide
from wsi_streamer.slide.region import overview_level, read_region, render_overview

BOUNDS = {"max_tiles": 100, "max_canvas": 1 << 20}


class Decodes:
    """A ``SlideReader`` that records the level and the decode size of every tile batch."""

    def __init__(self, inner: SlideReader) -> None:
        self.inner = inner
        self.batches: list[tuple[int, Any]] = []

    def tile_images(self, level: int, tiles: list[tuple[int, int]], *args: Any) -> Any:
        self.batches.append((level, args[0] if args else None))
        return self.inner.tile_images(level, tiles, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@functools.cache
def slide_bytes(width: int, height: int) -> bytes:
    """Level 0 of ``width x height`` in 128 px tiles, level 1 half of it."""
    return make_svs(width, height, levels=2, tile=128, associated=False).data


def slide(width: int, height: int) -> Decodes:
    return Decodes(open_slide(BytesReader(slide_bytes(width, height))))


def overview(reader: Decodes, level: int, size: tuple[int, int], fill: float) -> np.ndarray:
    image = render_overview(reader, level, size, resample=Image.Resampling.BOX,  # type: ignore[arg-type]
                            fill=fill, **BOUNDS)
    return np.asarray(image)


def test_a_level_halved_while_decoding_is_the_overview_when_it_fills_enough() -> None:
    reader = slide(640, 512)
    image = overview(reader, 0, (330, 264), 0.95)  # 320x256 is >= 95% of it on both sides
    assert image.shape == (256, 320, 3)
    assert reader.batches and all(b == (0, (64, 64)) for b in reader.batches)  # DCT 1/2
    whole = read_region(reader, 0, x=0, y=0, width=640, height=512)  # type: ignore[arg-type]
    assert psnr(image, np.asarray(whole.reduce(2))) >= 45  # the area average
    # Without the slack: the same level resampled to exactly the size asked.
    assert overview(slide(640, 512), 0, (330, 264), 1.0).shape == (264, 330, 3)


def test_a_smaller_level_that_fills_enough_is_read_as_it_is() -> None:
    reader = slide(640, 512)
    assert overview_level(reader, (330, 264)) == 0  # fill 1: level 1 (320x256) is too small
    assert overview_level(reader, (330, 264), 0.95) == 1  # type: ignore[arg-type]
    image = overview(reader, 1, (330, 264), 0.95)
    assert reader.batches == [(1, None)]  # decoded at full size, nothing of level 0
    level = read_region(reader, 1, x=0, y=0, width=320, height=256)  # type: ignore[arg-type]
    assert np.array_equal(image, np.asarray(level))


def test_a_level_too_small_on_one_side_and_too_large_on_the_other_is_not_taken() -> None:
    """Level 1 is 320x257: within 95% of 330 wide but over 256 high, so it is no overview of
    330x256 as it is and cannot be resampled up to it: level 0 is read (and resampled)."""
    reader = slide(640, 514)
    assert (reader.level(1).width, reader.level(1).height) == (320, 257)
    assert overview_level(reader, (330, 256), 0.95) == 0  # type: ignore[arg-type]
    assert overview(reader, 0, (330, 256), 0.95).shape == (256, 330, 3)


def test_a_partial_last_column_and_row_are_left_out() -> None:
    reader = slide(651, 501)
    image = overview(reader, 0, (330, 254), 0.95)
    assert image.shape == (250, 325, 3)  # whole 2x2 blocks only, not 326x251
    whole = read_region(reader, 0, x=0, y=0, width=650, height=500)  # type: ignore[arg-type]
    assert psnr(image, np.asarray(whole.reduce(2))) >= 45


def test_without_a_fitting_reduction_the_overview_is_the_size_asked() -> None:
    # Halving gives 320 wide, under 95% of 400: resampled to 400x320 as with fill 1.
    loose = overview(slide(640, 512), 0, (400, 320), 0.95)
    assert np.array_equal(loose, overview(slide(640, 512), 0, (400, 320), 1.0))


@pytest.mark.parametrize("fill", [0.0, -0.5, 1.5])
def test_fill_outside_zero_one_is_refused(fill: float) -> None:
    with pytest.raises(InvalidParameter, match="fill"):
        overview(slide(640, 512), 0, (330, 264), fill)
