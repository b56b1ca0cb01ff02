"""Exact mpp at the decoder's cost in the pipeline (issue 21): a ``RandomSampler`` whose read
is 2x its output places it on the factor's grid of the level read and reports that
coordinate; the tiles are decoded at 1/2 in the DCT domain, and the patch is OpenSlide's read
of the reported box, area-reduced (>= 45 dB), at a level above 0 too (where an origin off
the grid is a fractional level pixel)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.images import psnr
from tests.fixtures.patch_slides import write_islands_svs
from wsi_streamer.format.tiff.slide import TiffSlide
from wsi_streamer.patches import PatchPipeline, RandomSampler

openslide = pytest.importorskip("openslide")


def test_random_patches_at_a_coarser_level_are_on_the_grid_and_exact(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_islands_svs(tmp_path, "s.svs", fraction=0.6, seed=4)  # 0.25 um/px, ds 1/4/16
    scales: list[Any] = []
    real = TiffSlide.tile_images

    def tile_images(self: TiffSlide, level: int, tiles: Any, reduce_to: Any = None) -> Any:
        scales.append((level, reduce_to))
        return real(self, level, tiles, reduce_to)

    monkeypatch.setattr(TiffSlide, "tile_images", tile_images)
    pipe = PatchPipeline([str(path)], sampler=RandomSampler(56, target_mpp=2.0), seed=5,
                         thumbnail_size=(512, 512), patches_per_slide=8,
                         cache_dir=str(tmp_path / "cache"))
    results = list(pipe)
    assert len(results) == 8
    with openslide.OpenSlide(str(path)) as slide:
        for result in results:
            c = result.coordinate
            assert (c.level, c.patch_size, c.out_size) == (1, 112, 56)
            assert c.x % 8 == 0 and c.y % 8 == 0  # level 1 (ds 4), factor 2
            rgba = slide.read_region((c.x, c.y), 1, (112, 112))
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            want = np.asarray(Image.alpha_composite(white, rgba).convert("RGB").reduce(2))
            assert psnr(result.image, want) >= 45, c
    # every patch's level-1 tiles (256 px) decoded at 1/2; the rest is the thumbnail's read
    assert scales.count((1, (128, 128))) == 8 and len(scales) == 9
