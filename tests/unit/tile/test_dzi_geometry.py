"""Deep Zoom geometry against OpenSlide's ``DeepZoomGenerator`` (the reference a stock DZI
client agrees with): level sizes round up at every halving, tile grids and every tile's size,
overlap included, for odd sizes; one tile or level past the end is a request error."""

from __future__ import annotations

import pytest
from openslide import ImageSlide
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from wsi_streamer.errors import InvalidLevel, TileOutOfBounds
from wsi_streamer.tile.dzi import DeepZoom

SIZES = [(2033, 1017), (1001, 1), (1, 1001), (2220, 2967), (1, 1), (2, 3), (254, 254),
         (255, 255), (2048, 2048), (2049, 1025), (4097, 3)]


def reference(width: int, height: int, tile: int, overlap: int) -> DeepZoomGenerator:
    return DeepZoomGenerator(ImageSlide(Image.new("RGB", (width, height))), tile_size=tile,
                             overlap=overlap, limit_bounds=False)


@pytest.mark.parametrize(("tile", "overlap"), [(254, 1), (256, 0), (240, 2)])
@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_levels_grids_and_tiles_match_openslide(size: tuple[int, int], tile: int,
                                                overlap: int) -> None:
    dz, ref = DeepZoom(*size, tile, overlap), reference(*size, tile, overlap)
    assert dz.level_count == ref.level_count
    assert [dz.level_size(lv) for lv in range(dz.level_count)] == list(ref.level_dimensions)
    assert [dz.tile_grid(lv) for lv in range(dz.level_count)] == list(ref.level_tiles)
    for level in range(dz.level_count):
        cols, rows = dz.tile_grid(level)
        edges = {(c, r) for c in (0, 1, cols - 2, cols - 1) for r in (0, 1, rows - 2, rows - 1)
                 if 0 <= c < cols and 0 <= r < rows}
        for col, row in edges:
            _, _, w, h = dz.tile_bounds(level, col, row)
            assert (w, h) == ref.get_tile_dimensions(level, (col, row)), (level, col, row)


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_one_past_the_last_tile_or_level_is_refused(size: tuple[int, int]) -> None:
    dz = DeepZoom(*size)
    for level in range(dz.level_count):
        cols, rows = dz.tile_grid(level)
        x, y, w, h = dz.tile_bounds(level, cols - 1, rows - 1)
        assert (x + w, y + h) == dz.level_size(level)  # the last tile reaches the corner
        for col, row in ((cols, 0), (0, rows), (-1, 0), (0, -1)):
            with pytest.raises(TileOutOfBounds):
                dz.tile_bounds(level, col, row)
    for level in (-1, dz.level_count):
        with pytest.raises(InvalidLevel):
            dz.level_size(level)
