"""``render_region``'s canvas bound: whose fault it is decides the status."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from PIL import Image

from wsi_streamer.errors import InvalidParameter, LimitExceeded
from wsi_streamer.format.info import LevelGeometry
from wsi_streamer.limits import SERVICE_CANVAS_PIXELS
from wsi_streamer.slide.region import render_region


class OneTileLevel:
    """A level of ``side`` px in one ``side`` px tile, counting the tiles it decodes."""

    def __init__(self, side: int) -> None:
        self.geometry = LevelGeometry(0, side, side, side, side, 1, 1, 1.0)
        self.decoded = 0

    def level(self, level: int) -> LevelGeometry:
        return self.geometry

    def tile_images(self, level: int, tiles: Sequence[tuple[int, int]],
                    reduce_to: tuple[int, int] | None = None) -> Iterator[Image.Image]:
        for _ in tiles:
            self.decoded += 1
            yield Image.new("RGB", reduce_to or (self.geometry.tile_width,) * 2)


def test_a_small_box_in_a_huge_tile_is_the_files_fault() -> None:
    """An 8192 px tile (``MAX_TILE_SIDE``) under the service's canvas bound: a 254 px box
    (a Deep Zoom tile) is 415 naming the bound, not the client's 400; nothing decoded."""
    slide = OneTileLevel(8192)
    with pytest.raises(LimitExceeded, match="8192x8192 px tiles") as info:
        render_region(slide, 0, x=0, y=0, width=254, height=254,  # type: ignore[arg-type]
                      out_size=(254, 254), max_canvas=SERVICE_CANVAS_PIXELS)
    assert info.value.limit == "max_canvas"
    assert slide.decoded == 0


def test_a_box_larger_than_the_canvas_is_the_callers_fault() -> None:
    slide = OneTileLevel(8192)
    with pytest.raises(InvalidParameter):
        render_region(slide, 0, x=0, y=0, width=8000, height=8000,  # type: ignore[arg-type]
                      out_size=(1000, 1000), dct_scaling=False,
                      max_canvas=SERVICE_CANVAS_PIXELS)
    assert slide.decoded == 0
