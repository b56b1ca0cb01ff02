"""``tile.iiif`` parsing and ``tile.request`` native-tile matching, without a slide."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from wsi_streamer.errors import InvalidParameter, NotImplementedFeature
from wsi_streamer.tile import iiif
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
    """What OpenSeadragon asks for at scale factor 4: integer level-0 boxes of 1024 px,
    within a pixel of level 1's tiles (downsample 4.0004 x 4.0017)."""
    assert native_tile(LEVELS, BASE, (1024.0, 2048.0, 1024.0, 1024.0), (256, 256)) == (1, 1, 2)
    # The last column: 10001 - 9216 = 785 level-0 px; level 1 has 2500 - 2304 = 196 px there,
    # OpenSeadragon asks for ceil(785 / 4) = 197: only the stored tile's own size matches.
    assert native_tile(LEVELS, BASE, (9216.0, 0.0, 785.0, 1024.0), (196, 256)) == (1, 9, 0)
    assert native_tile(LEVELS, BASE, (9216.0, 0.0, 785.0, 1024.0), (197, 256)) is None
    assert native_tile(LEVELS, BASE, (1000.0, 0.0, 1024.0, 1024.0), (256, 256)) is None
    assert native_tile(LEVELS, BASE, (1024.0, 0.0, 1024.0, 1024.0), (255, 255)) is None


def test_canonical_path() -> None:
    full = ImageRequest((0, 0, 1000, 800), (1000, 800), 80)
    assert iiif.canonical_path(full, 1000, 800) == "full/max/0/default.jpg"
    part = ImageRequest((10, 20, 300, 200), (150, 100), 80, rotation=90, mirror=True,
                        quality="gray", format="png")
    assert iiif.canonical_path(part, 1000, 800) == "10,20,300,200/150,100/!90/gray.png"
