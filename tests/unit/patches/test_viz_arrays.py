"""wsistream's viz functions (issue 22): its signatures and array layouts, the tint over tissue
only, dots at the scaled level-0 positions, transforms applied to fresh copies, files written
where asked, and neither OpenCV nor matplotlib imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsi_streamer.patches.types import PatchCoordinate
from wsi_streamer.patches.viz import (
    compare_transforms,
    plot_patch_grid,
    plot_sampling_locations,
    plot_tissue_mask,
)


def grey(height: int = 60, width: int = 80, value: int = 200) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)


def test_tissue_mask_tints_tissue_only_and_outlines_it(tmp_path: Path) -> None:
    thumb = grey()
    mask = np.zeros((60, 80), bool)
    mask[10:50, 20:60] = True
    out = plot_tissue_mask(thumb, mask, alpha=0.5, color=(0, 255, 0),
                           save_path=tmp_path / "sub" / "mask.png")
    assert out.shape == (60, 80, 3) and out.dtype == np.uint8
    assert tuple(out[0, 0]) == (200, 200, 200)  # background untouched
    assert tuple(out[30, 40]) == (100, 228, 100)  # 0.5 * 200 + 0.5 * (0, 255, 0)
    assert tuple(out[10, 40]) == (0, 255, 0) and tuple(out[11, 40]) == (0, 255, 0)
    assert tuple(out[12, 40]) == (100, 228, 100)  # the outline is 2 px wide
    assert np.array_equal(np.asarray(Image.open(tmp_path / "sub" / "mask.png")), out)
    assert np.array_equal(thumb, grey())  # input not modified
    with pytest.raises(ValueError, match="does not match"):
        plot_tissue_mask(thumb, mask[:10])


def test_patch_grid_layout_titles_and_float_patches() -> None:
    patches = [np.full((64, 32, 3), 10 * i, np.uint8) for i in range(5)]
    grid = plot_patch_grid(patches, ncols=3, patch_display_size=40)
    cell = 40 + 4
    assert grid.shape == (2 * cell + 4, 3 * cell + 4, 3) and grid.dtype == np.uint8
    assert tuple(grid[0, 0]) == (240, 240, 240)
    assert tuple(grid[cell + 4 + 20, cell + 4 + 20]) == (40, 40, 40)  # patch 4, stretched
    as_float = plot_patch_grid([np.full((8, 8, 3), 0.5, np.float32)], ncols=1,
                               patch_display_size=8)
    assert tuple(as_float[6, 6]) == (128, 128, 128)
    titled = plot_patch_grid([grey()], ncols=1, patch_display_size=40, titles=["ab"])
    assert (titled[4:44, 4:44] < 100).any()  # dark text on the grey patch
    assert plot_patch_grid([], patch_display_size=16).shape == (16, 16, 3)


def test_sampling_locations_dot_at_scaled_top_left() -> None:
    coords = [PatchCoordinate(x=500, y=250, level=0, patch_size=256, mpp=0.5,
                              slide_path="s.svs")]
    vis = plot_sampling_locations(grey(100, 100), coords, slide_dimensions=(1000, 500),
                                  color=(255, 0, 0), marker_size=2)
    assert vis.shape == (100, 100, 3)
    assert tuple(vis[50, 50]) == (255, 0, 0)  # (500 * 0.1, 250 * 0.2)
    assert tuple(vis[50, 56]) == (200, 200, 200)
    assert int((vis != 200).any(axis=2).sum()) <= 25


def test_compare_transforms_applies_each_transform_to_fresh_copies() -> None:
    calls: list[int] = []

    def invert(image: np.ndarray) -> np.ndarray:
        calls.append(int(image[0, 0, 0]))
        image[:] = 255 - image  # mutating its input must not leak into the next sample
        return image

    original = grey(32, 32, 100)
    out = compare_transforms(original, {"invert": invert, "same": lambda im: im},
                             n_samples=3)
    assert calls == [100, 100, 100]
    assert out.shape == (2 * 132 + 4, 160 + 4 * 132 + 4, 3)
    assert tuple(out[4 + 64, 160 + 4 + 64]) == (100, 100, 100)  # the original
    assert tuple(out[4 + 64, 160 + 132 + 4 + 64]) == (155, 155, 155)  # first sample
    assert np.array_equal(original, grey(32, 32, 100))


def test_neither_opencv_nor_matplotlib_is_imported() -> None:
    code = ("import sys, numpy as np; from wsi_streamer.patches import viz; "
            "viz.plot_patch_grid([np.zeros((8, 8, 3), np.uint8)]); "
            "viz.compare_transforms(np.zeros((8, 8, 3), np.uint8), {'a': lambda x: x}, 1); "
            "print(sorted(m for m in ('cv2', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]"
