"""viz: patch boxes land on their level-0 footprint scaled to the thumbnail, the mask is tinted
and outlined at any resolution, grids have the documented size and show float patches, and a
preview holds both and writes as PNG."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsi_streamer.patches.types import PatchCoordinate
from wsi_streamer.patches.viz import (
    BOX_COLOURS,
    MASK_OUTLINE,
    PAD,
    displayable,
    mask_overlay,
    patch_grid,
    preview,
    save_png,
)

SLIDE = (2000, 1000)  # level-0 width, height
DOWNSAMPLES = (1.0, 2.0, 4.0)


def coord(x: int, y: int, level: int = 0, size: int = 100) -> PatchCoordinate:
    return PatchCoordinate(x=x, y=y, level=level, patch_size=size, mpp=0.25 * 2**level,
                           slide_path="s.tif")


def white(width: int = 200, height: int = 100) -> np.ndarray:
    return np.full((height, width, 3), 255, np.uint8)


def pixel(image: Image.Image, x: int, y: int) -> tuple[int, ...]:
    return tuple(image.getpixel((x, y)))  # type: ignore[arg-type]


def test_boxes_sit_on_the_scaled_footprint() -> None:
    # thumbnail 200 x 100 of a 2000 x 1000 slide: 0.1 thumbnail px per level-0 px
    no_tissue = np.zeros((100, 200), bool)
    coords = [coord(500, 200, level=1, size=100),  # level-0 side 200 -> (50, 20)-(69, 39)
              coord(1200, 600, level=0, size=300)]  # side 300 -> (120, 60)-(149, 89)
    image = mask_overlay(white(), no_tissue, coords, SLIDE, DOWNSAMPLES)
    assert image.size == (200, 100) and image.mode == "RGB"
    for x0, y0, x1, y1, colour in ((50, 20, 69, 39, BOX_COLOURS[1]),
                                   (120, 60, 149, 89, BOX_COLOURS[0])):
        for x, y in ((x0, y0), (x1, y1), (x0, (y0 + y1) // 2), (x1, (y0 + y1) // 2),
                     ((x0 + x1) // 2, y0), ((x0 + x1) // 2, y1)):
            assert pixel(image, x, y) == colour, (x, y)
        # just inside and just outside the box: untouched thumbnail
        for x, y in ((x0 + 1, y0 + 1), (x1 - 1, y1 - 1), (x0 - 1, y0), (x1 + 1, y1)):
            assert pixel(image, x, y) == (255, 255, 255), (x, y)
    drawn = np.asarray(image).min(-1) < 255
    assert drawn.sum() == 2 * (20 + 18) + 2 * (30 + 28)  # two outlines, nothing else


def test_a_tiny_footprint_still_shows() -> None:
    image = mask_overlay(white(), np.zeros((100, 200), bool), [coord(1000, 500, size=4)],
                         SLIDE, DOWNSAMPLES)
    assert pixel(image, 100, 50) == BOX_COLOURS[0]


def test_mask_of_another_resolution_is_tinted_and_outlined() -> None:
    mask = np.zeros((10, 20), bool)  # a tenth of the thumbnail: resized nearest
    mask[2:6, 4:10] = True  # thumbnail box (40, 20)-(99, 59)
    thumb = np.full((100, 200, 3), 200, np.uint8)
    image = mask_overlay(thumb, mask, [], SLIDE, DOWNSAMPLES)
    inside, outside = pixel(image, 70, 40), pixel(image, 150, 80)
    assert outside == (200, 200, 200)
    assert inside[1] > inside[0] and inside[1] > inside[2]  # green tint
    assert inside != (200, 200, 200)
    for x, y in ((40, 40), (99, 40), (70, 20), (70, 59)):
        assert pixel(image, x, y) == MASK_OUTLINE, (x, y)
    assert pixel(image, 39, 40) == (200, 200, 200) and pixel(image, 100, 40) == (200, 200, 200)


def test_overlay_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="thumbnail"):
        mask_overlay(white().astype(np.float32), np.zeros((4, 4), bool), [], SLIDE,
                     DOWNSAMPLES)
    with pytest.raises(ValueError, match="level 5"):
        mask_overlay(white(), np.zeros((4, 4), bool), [coord(0, 0, level=5)], SLIDE,
                     DOWNSAMPLES)


@pytest.mark.parametrize(("n", "columns", "cell", "labels", "cols", "rows"), [
    (10, 4, 64, False, 4, 3), (3, 8, 128, False, 3, 1), (8, 8, 32, True, 8, 1),
    (0, 8, 50, False, 1, 1)])
def test_grid_size(n: int, columns: int, cell: int, labels: bool, cols: int, rows: int) -> None:
    images = [np.full((224, 224, 3), 10 * i, np.uint8) for i in range(n)]
    names = [f"p{i}" for i in range(n)] if labels else None
    grid = patch_grid(images, columns=columns, cell=cell, labels=names)
    width = cols * (cell + PAD) + PAD
    if labels:
        assert grid.width == width and grid.height > rows * (cell + PAD) + PAD + 6
    else:
        assert grid.size == (width, rows * (cell + PAD) + PAD)


def test_grid_places_patches_in_row_major_cells() -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (40, 40, 40)]
    images = [np.full((32, 32, 3), c, np.uint8) for c in colours]
    grid = patch_grid(images, columns=3, cell=32)
    for index, colour in enumerate(colours):
        left, top = PAD + (index % 3) * (32 + PAD), PAD + (index // 3) * (32 + PAD)
        assert pixel(grid, left + 16, top + 16) == colour
        assert pixel(grid, left, top) == colour and pixel(grid, left + 31, top + 31) == colour
    assert pixel(grid, 0, 0) == (255, 255, 255)
    assert pixel(grid, PAD + 1 * (32 + PAD) + 16, PAD + 32 + PAD + 16) == (255, 255, 255)


def test_non_square_patch_is_fitted_and_centred() -> None:
    grid = patch_grid([np.zeros((50, 100, 3), np.uint8)], cell=100)
    picture = np.asarray(grid)[PAD:PAD + 100, PAD:PAD + 100]
    rows = np.flatnonzero(picture.max(axis=(1, 2)) == 0)
    assert (rows.min(), rows.max()) == (25, 74)


def test_float_patches_are_rescaled_for_display() -> None:
    normalised = np.stack([np.linspace(-2.1, 2.6, 64 * 64).reshape(64, 64)] * 3,
                          axis=-1).astype(np.float32)
    shown = displayable(normalised)
    assert shown.dtype == np.uint8 and shown.min() == 0 and shown.max() == 255
    chw = displayable(normalised.transpose(2, 0, 1))
    assert np.array_equal(chw, shown)
    assert (displayable(np.full((8, 8, 3), 0.7, np.float32)) == 128).all()
    nan = np.full((8, 8, 3), np.nan, np.float32)
    nan[0, 0] = 1.0
    assert displayable(nan).dtype == np.uint8
    assert displayable(np.zeros((8, 8), np.uint8)).shape == (8, 8, 3)
    grid = patch_grid([normalised, np.zeros((64, 64, 3), np.uint8)], cell=64)
    cell = np.asarray(grid)[PAD:PAD + 64, PAD:PAD + 64]
    assert cell.min() == 0 and cell.max() == 255
    with pytest.raises(ValueError, match="patch"):
        displayable(np.zeros((8, 8, 5), np.float32))


def test_grid_rejects_mismatched_labels() -> None:
    with pytest.raises(ValueError, match="labels"):
        patch_grid([np.zeros((8, 8, 3), np.uint8)], labels=["a", "b"])


def test_preview_holds_title_overlay_and_grid(tmp_path: Path) -> None:
    mask = np.zeros((50, 100), bool)
    mask[10:40, 20:60] = True
    coords = [coord(300 + 150 * i, 250, level=0, size=128) for i in range(5)]
    patches = [np.full((128, 128, 3), (200, 80 + 30 * i, 160), np.uint8) for i in range(5)]
    # a wide thumbnail: the grid goes below it
    wide = preview(white(), mask, coords, patches, SLIDE, DOWNSAMPLES, title="s.tif",
                   cell=64)
    grid = patch_grid(patches, cell=64, labels=["x"] * 5)
    assert wide.width == max(200, grid.width) and wide.height > 100 + grid.height
    # a tall thumbnail of a tall slide: the grid goes beside it
    tall = preview(white(100, 300), mask, coords, patches, (1000, 3000), DOWNSAMPLES,
                   cell=64)
    assert tall.width == 100 + PAD + grid.width and tall.height >= 300
    # a huge thumbnail is shrunk to max_side, and boxes are still drawn on it
    big = preview(white(4000, 2000), mask, coords, patches, SLIDE, DOWNSAMPLES, cell=64,
                  max_side=1000)
    assert big.width == 1000
    colours = set(map(tuple, np.asarray(big).reshape(-1, 3).tolist()))
    assert BOX_COLOURS[0] in colours and MASK_OUTLINE in colours
    path = tmp_path / "preview.png"
    save_png(wide, path)
    with Image.open(path) as written:
        assert written.format == "PNG" and written.size == wide.size
    save_png(np.zeros((4, 4, 3), np.float32), tmp_path / "array.png")


def test_preview_with_no_patches() -> None:
    image = preview(white(), np.zeros((10, 20), bool), [], [], SLIDE, DOWNSAMPLES)
    assert image.width >= 200 and image.height > 100


def test_preview_labels_patches_by_mpp_and_captions_the_detector() -> None:
    """Multi-mpp recipes read several mpps at one level: labels were all "L0"; the caption
    (the detector and its threshold) says why a slide gave 0% tissue."""
    patches = [np.full((128, 128, 3), 200, np.uint8)] * 2
    mask = np.zeros((50, 100), bool)
    at = [replace(coord(300, 250, size=128), mpp=mpp) for mpp in (0.5, 1.0)]
    same = [replace(coord(300, 250, size=128), mpp=0.5)] * 2
    one, other = (np.asarray(preview(white(), mask, c, patches, SLIDE, DOWNSAMPLES, cell=64))
                  for c in (at, same))
    assert one.shape == other.shape and not np.array_equal(one, other)
    plain = preview(white(), mask, at, patches, SLIDE, DOWNSAMPLES, cell=64)
    captioned = preview(white(), mask, at, patches, SLIDE, DOWNSAMPLES, cell=64,
                        caption="CLAMTissueDetector(a_t=100); a patch needs >= 40% tissue")
    assert captioned.height > plain.height
