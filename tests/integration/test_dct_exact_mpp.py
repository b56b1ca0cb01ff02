"""Exact mpp at the decoder's cost (issue 21): a read 2, 4 or 8 times coarser than its level,
from an origin on that factor's grid (``dct_origin``), is decoded in the DCT domain and is
OpenSlide's read of the same box reduced by the area filter (>= 45 dB), at level 0 and above;
a read from any other origin is the exact area filter of that origin (never moved)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.images import psnr
from tests.fixtures.patch_slides import write_islands_svs
from wsi_streamer.slide import region
from wsi_streamer.slide.reader import open_slide
from wsi_streamer.slide.region import dct_origin, read_level0_anchored

openslide = pytest.importorskip("openslide")


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2048x1536 at 0.25 um/px, levels at downsample 1, 4, 16; tissue nearly everywhere."""
    return write_islands_svs(tmp_path_factory.mktemp("dct"), "dct.svs", fraction=0.7, seed=5)


def openslide_reduced(path: Path, x: int, y: int, level: int, side: int, k: int
                      ) -> np.ndarray:
    with openslide.OpenSlide(str(path)) as slide:
        rgba = slide.read_region((x, y), level, (side, side))
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB").reduce(k))


@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("k", [2, 4, 8])
def test_dct_reads_are_the_area_filter(slide_path: Path, level: int, k: int,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    scales: list[object] = []
    slide = open_slide(str(slide_path))
    real = slide.tile_images

    def tile_images(lv: int, tiles: object, reduce_to: object = None) -> object:
        scales.append(reduce_to)
        return real(lv, tiles, reduce_to)  # type: ignore[arg-type]

    monkeypatch.setattr(slide, "tile_images", tile_images)
    ds = slide.level(level).downsample
    out = 56 if level == 0 else 32
    side = out * k
    rng = np.random.default_rng(level * 10 + k)
    for _ in range(3):
        x = int(rng.integers(0, (slide.level(level).width - side) * ds))
        y = int(rng.integers(0, (slide.level(level).height - side) * ds))
        ax, ay = dct_origin(ds, x, y, k)
        assert ax <= x < ax + k * ds and ay <= y < ay + k * ds
        assert dct_origin(ds, ax, ay, k) == (ax, ay)
        ours = np.asarray(read_level0_anchored(slide, level, x0=ax, y0=ay, width=side, height=side,
                                               out_size=(out, out), dct_scaling=True))
        assert psnr(ours, openslide_reduced(slide_path, ax, ay, level, side, k)) >= 45
    tile = slide.level(level).tile_width
    assert scales == [(tile // k, tile // k)] * 3  # decoded at 1/k, not reduced afterwards


def test_other_origins_are_never_moved(slide_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """An origin off the grid (odd, at level 0) is read where it is, exactly."""
    slide = open_slide(str(slide_path))
    x, y = 901, 703
    assert dct_origin(1.0, x, y, 2) == (900, 702)
    ours = np.asarray(read_level0_anchored(slide, 0, x0=x, y0=y, width=448, height=448,
                                           out_size=(224, 224), dct_scaling=True))
    exact = np.asarray(read_level0_anchored(slide, 0, x0=x, y0=y, width=448, height=448,
                                            out_size=(224, 224)))
    assert np.array_equal(ours, exact)
    assert np.array_equal(exact, openslide_reduced(slide_path, x, y, 0, 448, 2))
    white: list[object] = []
    monkeypatch.setattr(region, "_canvas", lambda size: white.append(size))
    read_level0_anchored(slide, 0, x0=900, y0=702, width=448, height=448, out_size=(224, 224),
                         dct_scaling=True)
    assert white == []  # inside the level: no white canvas either
