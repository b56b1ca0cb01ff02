"""``tile.iiif`` parsing and ``tile.request`` native-tile matching, without a slide."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from wsi_streamer.errors import InvalidParameter, NotImplementedFeature
from wsi_streamer.tile import iiif
from wsi_streamer.tile.dzi import DeepZoom
from wsi_streamer.tile.request import ImageRequest, native_tile, tile_region


@dataclass(frozen=True)
class Level:
    level: int
    width: int
    height: int
    tile_width: int = 256
    tile_height: int = 256

    @property
    def tiles_x(self) -> int:
        return -(-self.width // self.tile_width)

    @property
    def tiles_y(self) -> int:
        return -(-self.height // self.tile_height)


# An Aperio-like pyramid whose reduced levels are not exact powers: 10000 / 4 -> 2500.
LEVELS = (Level(0, 10001, 7003), Level(1, 2500, 1750), Level(2, 625, 437))
BASE = (10001, 7003)


@pytest.mark.parametrize(("region", "expected"), [
    ("full", (0, 0, 1000, 800)), ("square", (100, 0, 800, 800)),
    ("10,20,30,40", (10, 20, 30, 40)), ("990,790,100,100", (990, 790, 10, 10)),
    ("pct:10,10,50,50", (100, 80, 500, 400)), ("pct:0.5,0,.5,100", (5, 0, 5, 800)),
])
def test_regions(region: str, expected: tuple[int, int, int, int]) -> None:
    assert iiif.resolve_region(region, 1000, 800) == expected


@pytest.mark.parametrize(("size", "expected"), [
    ("max", (1000, 800)), ("500,", (500, 400)), (",400", (500, 400)), ("pct:25", (250, 200)),
    ("300,300", (300, 300)), ("!300,300", (300, 240)), ("^2000,", (2000, 1600)),
    ("^!3000,1600", (2000, 1600)), ("^max", (1000, 800)),
])
def test_sizes(size: str, expected: tuple[int, int]) -> None:
    assert iiif.resolve_size(size, 1000, 800) == expected


@pytest.mark.parametrize("size", [
    "2000,800", "1000,801", "1001,", ",801", "pct:101", "!3000,1600", "2000,1600",
])
def test_upscaling_either_side_needs_a_caret(size: str) -> None:
    """IIIF 3.0 §4.2: a size larger than the region on either side, without ``^``, is a 400;
    with ``^`` it is served."""
    with pytest.raises(InvalidParameter, match="upscaling needs"):
        iiif.resolve_size(size, 1000, 800)
    w, h = iiif.resolve_size("^" + size, 1000, 800)
    assert w > 1000 or h > 800


def test_max_is_confined_to_the_limits() -> None:
    w, h = iiif.resolve_size("max", 100_000, 50_000)
    assert w <= iiif.MAX_WIDTH and w * h <= iiif.MAX_AREA and abs(w / h - 2) < 0.01


def test_parameters_errors() -> None:
    with pytest.raises(NotImplementedFeature):
        iiif.parse_parameters("full", "max", "45", "default", "jpg")
    with pytest.raises(NotImplementedFeature):
        iiif.parse_parameters("full", "max", "0", "default", "tif")
    for bad in (("nope", "max", "0", "default", "jpg"), ("full", "nope", "0", "default", "jpg"),
                ("full", "max", "x", "default", "jpg"), ("full", "max", "0", "grey", "jpg"),
                ("full", "max", "0", "default", "xyz")):
        with pytest.raises(InvalidParameter):
            iiif.parse_parameters(*bad)
    p = iiif.parse_parameters("full", "max", "!270", "gray", "png")
    assert (p.mirror, p.rotation, p.quality, p.format) == (True, 270, "gray", "png")


def test_every_native_tile_is_found_from_its_region() -> None:
    for info in LEVELS:
        for ty in range(info.tiles_y):
            for tx in range(info.tiles_x):
                region, size = tile_region(info, BASE, tx, ty)
                assert native_tile(LEVELS, BASE, region, size) == (info.level, tx, ty)


def test_iiif_tiles_at_scale_factors_are_native_tiles() -> None:
    """What OpenSeadragon asks for at scale factor 4: integer level-0 boxes of 1024 px. Level
    1's downsample is 4.0004 x 4.0017, so its tile (1, 2) starts at (1024.10, 2048.88): a box
    at y 2049 is that tile (the rounding of its origin), one at 2048 is not (0.88 px off)."""
    assert native_tile(LEVELS, BASE, (1024.0, 1024.0, 1024.0, 1024.0), (256, 256)) == (1, 1, 1)
    assert native_tile(LEVELS, BASE, (1024.0, 2049.0, 1024.0, 1024.0), (256, 256)) == (1, 1, 2)
    assert native_tile(LEVELS, BASE, (1024.0, 2048.0, 1024.0, 1024.0), (256, 256)) is None
    # The last column starts at 2304 * 4.0004 = 9216.92 and ends at the image's edge, 10001:
    # level 1 has 2500 - 2304 = 196 px there; only the stored tile's own size matches.
    assert native_tile(LEVELS, BASE, (9217.0, 0.0, 784.0, 1024.0), (196, 256)) == (1, 9, 0)
    assert native_tile(LEVELS, BASE, (9217.0, 0.0, 784.0, 1024.0), (197, 256)) is None
    assert native_tile(LEVELS, BASE, (9216.0, 0.0, 785.0, 1024.0), (196, 256)) is None
    assert native_tile(LEVELS, BASE, (1000.0, 0.0, 1024.0, 1024.0), (256, 256)) is None
    assert native_tile(LEVELS, BASE, (1024.0, 0.0, 1024.0, 1024.0), (255, 255)) is None


# A power-of-two pyramid (the integration tests' a.svs): every level's origins are integers.
POW2 = (Level(0, 1536, 1152), Level(1, 768, 576), Level(2, 384, 288), Level(3, 192, 144))
POW2_BASE = (1536, 1152)


@pytest.mark.parametrize(("region", "size"), [
    ((257.0, 0.0, 256.0, 256.0), (256, 256)), ((255.0, 1.0, 256.0, 256.0), (256, 256)),
    ((256.0, 0.0, 257.0, 256.0), (256, 256)), ((256.0, 0.0, 256.0, 255.0), (256, 256)),
    ((256.5, 0.0, 256.0, 256.0), (256, 256)), ((1281.0, 1024.0, 255.0, 128.0), (256, 128)),
])
def test_level0_regions_off_by_a_pixel_are_not_native(
        region: tuple[float, float, float, float], size: tuple[int, int]) -> None:
    """At level 0 a tile is served natively only for its exact region: one pixel off in
    origin or size is other pixels."""
    assert native_tile(POW2, POW2_BASE, region, size) is None


@pytest.mark.parametrize(("region", "size"), [
    ((511.0, 0.0, 512.0, 512.0), (256, 256)), ((512.0, 1.0, 512.0, 512.0), (256, 256)),
    ((512.0, 0.0, 514.0, 512.0), (256, 256)), ((1023.0, 1024.0, 513.0, 128.0), (256, 64)),
    ((1023.0, 0.0, 513.0, 1024.0), (128, 256)),
])
def test_reduced_level_regions_off_by_a_level0_pixel_are_not_native(
        region: tuple[float, float, float, float], size: tuple[int, int]) -> None:
    """Level 1 of ``POW2`` starts its tiles at exact level-0 pixels: nothing to round."""
    assert native_tile(POW2, POW2_BASE, region, size) is None


def test_exact_tiles_are_native_at_every_level_including_edges() -> None:
    for levels, base in ((POW2, POW2_BASE), (LEVELS, BASE)):
        for info in levels:
            for ty in range(info.tiles_y):
                for tx in range(info.tiles_x):
                    (x, y, w, h), size = tile_region(info, base, tx, ty)
                    # What a client sending integers asks for: the edges rounded.
                    rounded = (round(x), round(y), round(x + w) - round(x),
                               round(y + h) - round(y))
                    expected = (info.level, tx, ty)
                    assert native_tile(levels, base, rounded, size) == expected, rounded


def test_deep_zoom_tiles_with_overlap_are_not_native() -> None:
    """A Deep Zoom tile (254 px + 1 px overlap) is never a stored 256 px tile, even where its
    box is one pixel from one: column and row 127 start at 32257, tile 126 at 32256."""
    levels = (Level(0, 40000, 36000), Level(1, 10000, 9000), Level(2, 2500, 2250))
    base = (40000, 36000)
    dz = DeepZoom(*base, tile_size=254, overlap=1)
    top = dz.level_count - 1
    x, y, w, h = dz.tile_bounds(top, 127, 127)
    assert (x, y, w, h) == (32257, 32257, 256, 256)
    assert native_tile(levels, base, (x, y, w, h), (w, h)) is None
    for level in (top, top - 2, top - 4):
        scale = dz.scale(level)
        cols, rows = dz.tile_grid(level)
        for col in range(0, cols, 7):
            for row in range(0, rows, 7):
                x, y, w, h = dz.tile_bounds(level, col, row)
                region = (x * scale, y * scale, w * scale, h * scale)
                assert native_tile(levels, base, region, (w, h)) is None, (level, col, row)


def test_deep_zoom_tiles_that_are_stored_tiles_are_native() -> None:
    """With 256 px tiles and no overlap, Deep Zoom levels at the pyramid's downsamples are
    exactly its tiles."""
    dz = DeepZoom(*POW2_BASE, tile_size=256, overlap=0)
    top = dz.level_count - 1
    for info in POW2:
        level = top - info.level
        scale = dz.scale(level)
        cols, rows = dz.tile_grid(level)
        for col in range(cols):
            for row in range(rows):
                x, y, w, h = dz.tile_bounds(level, col, row)
                region = (x * scale, y * scale, w * scale, h * scale)
                assert native_tile(POW2, POW2_BASE, region, (w, h)) == (info.level, col, row)


def test_canonical_path() -> None:
    full = ImageRequest((0, 0, 1000, 800), (1000, 800), 80)
    assert iiif.canonical_path(full, 1000, 800) == "full/max/0/default.jpg"
    part = ImageRequest((10, 20, 300, 200), (150, 100), 80, rotation=90, mirror=True,
                        quality="gray", format="png")
    assert iiif.canonical_path(part, 1000, 800) == "10,20,300,200/150,100/!90/gray.png"


@pytest.mark.parametrize("width,height,tile", [
    (10000, 7500, 256), (8192, 6144, 256), (4096, 4096, 256), (16000, 12000, 256),
    (2220, 2967, 240), (46000, 32914, 240), (1000, 1000, 100), (500, 300, 256), (64, 64, 256)])
def test_sizes_are_never_taken_for_openseadragon_levels(width: int, height: int,
                                                        tile: int) -> None:
    """OpenSeadragon's IIIF tile source uses ``sizes`` as its level sizes when their count is
    its maxLevel (log2 of the largest scale factor) or maxLevel + 1; ours leave the large
    levels out, so that would distort its tiles (10000 px with 256 px tiles had 6 of 6)."""
    max_level = round(math.log2(iiif.scale_factors(width, height, tile)[-1]))
    found = iiif.sizes(width, height, tile)
    if max_level:  # one level: its reading of sizes is the full image, which is right
        assert len(found) not in (max_level, max_level + 1), found
    assert all(max(w, h) <= 2048 for w, h in found)
    assert found == sorted(found)
