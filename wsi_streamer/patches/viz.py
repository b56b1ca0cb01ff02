"""Pictures of what the pipeline does to a slide (Pillow and numpy only): the thumbnail with
the tissue mask and the sampled patch boxes, a grid of patches, and both in one preview.

Coordinates follow the pipeline's conventions: ``PatchCoordinate.x, y`` are level-0 pixels
(top left), ``patch_size`` is in ``level`` pixels, so a patch covers the level-0 square of side
``patch_size * level_downsamples[level]``. Every function returns a new RGB ``PIL.Image``.
wsistream's functions (``plot_tissue_mask``, ``plot_patch_grid``, ``plot_sampling_locations``,
``compare_transforms``: numpy arrays out) are here too, from ``viz_arrays``."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .types import PatchCoordinate
from .viz_arrays import compare_transforms as compare_transforms  # wsistream's four
from .viz_arrays import plot_patch_grid as plot_patch_grid
from .viz_arrays import plot_sampling_locations as plot_sampling_locations
from .viz_arrays import plot_tissue_mask as plot_tissue_mask

MASK_TINT = (0, 200, 70)  # blended over tissue at MASK_ALPHA
MASK_ALPHA = 0.3
MASK_OUTLINE = (0, 110, 40)
# Box outline per level (cycled), so several magnifications stay apart.
BOX_COLOURS = ((0, 70, 255), (255, 130, 0), (200, 0, 200), (0, 170, 190), (230, 30, 30))
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
PAD = 2  # pixels around every grid cell

Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def mask_overlay(thumbnail: np.ndarray, mask: np.ndarray, coords: Sequence[PatchCoordinate],
                 slide_dimensions: tuple[int, int], level_downsamples: Sequence[float],
                 ) -> Image.Image:
    """``thumbnail`` (H, W, 3) uint8 with ``mask`` (bool, any resolution covering the same
    slide; resized nearest to H x W) tinted green with a darker outline, and one box per
    coordinate: its level-0 footprint scaled by ``W / slide width`` and ``H / slide height``,
    drawn in ``BOX_COLOURS[level % 5]``, one pixel wide (two on thumbnails over 1024 px).
    Same size as the thumbnail. Raises ``ValueError`` for a wrong shape or a level missing
    from ``level_downsamples``."""
    rgb = _rgb_uint8(np.asarray(thumbnail), "thumbnail")
    height, width = rgb.shape[:2]
    tissue = _fit_mask(mask, width, height)
    out = rgb.astype(np.float32)
    out[tissue] = out[tissue] * (1 - MASK_ALPHA) + np.float32(MASK_ALPHA) * np.array(
        MASK_TINT, np.float32)
    picture = out.round().astype(np.uint8)
    picture[_outline(tissue)] = MASK_OUTLINE
    image = Image.fromarray(picture, "RGB")
    draw_boxes(image, coords, slide_dimensions, level_downsamples)
    return image


def draw_boxes(image: Image.Image, coords: Sequence[PatchCoordinate],
               slide_dimensions: tuple[int, int], level_downsamples: Sequence[float]) -> None:
    """Draw the footprint of each coordinate on ``image`` (in place), which shows the whole
    slide of ``slide_dimensions`` (level-0 width, height). A box keeps at least one pixel."""
    slide_w, slide_h = slide_dimensions
    if slide_w <= 0 or slide_h <= 0:
        raise ValueError(f"slide dimensions {slide_dimensions} must be positive")
    sx, sy = image.width / slide_w, image.height / slide_h
    line = 2 if max(image.size) > 1024 else 1
    draw = ImageDraw.Draw(image)
    for coord in coords:
        if not 0 <= coord.level < len(level_downsamples):
            raise ValueError(f"patch level {coord.level} is not one of the "
                             f"{len(level_downsamples)} levels")
        side = coord.patch_size * float(level_downsamples[coord.level])
        x0, y0 = math.floor(coord.x * sx), math.floor(coord.y * sy)
        x1 = max(x0, math.ceil((coord.x + side) * sx) - 1)
        y1 = max(y0, math.ceil((coord.y + side) * sy) - 1)
        colour = BOX_COLOURS[coord.level % len(BOX_COLOURS)]
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=line)


def patch_grid(images: Sequence[np.ndarray], columns: int = 8, cell: int = 128,
               labels: Sequence[str] | None = None) -> Image.Image:
    """Patches in rows of ``columns``, each fitted (aspect kept, centred) into a ``cell`` x
    ``cell`` square, ``PAD`` pixels apart on white, with ``labels[i]`` under patch ``i``.
    Images are (H, W, 3) or (H, W) (also (3, H, W), as the torch dataset gives); uint8 is
    shown as is, any other dtype (normalised float32) min-max rescaled per patch. The size is
    ``(c * (cell + PAD) + PAD, r * (cell + caption + PAD) + PAD)`` for ``c = min(columns,
    n)`` columns and ``r = ceil(n / c)`` rows (one empty cell when ``n == 0``); ``caption``
    is 0 without labels."""
    if columns < 1 or cell < 1:
        raise ValueError(f"columns ({columns}) and cell ({cell}) must be positive")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{len(labels)} labels for {len(images)} images")
    font = _font()
    caption = _line_height(font) + 2 if labels is not None else 0
    cols = max(1, min(columns, len(images)))
    rows = max(1, math.ceil(len(images) / cols))
    grid = Image.new("RGB", (cols * (cell + PAD) + PAD, rows * (cell + caption + PAD) + PAD),
                     BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for index, array in enumerate(images):
        left = PAD + (index % cols) * (cell + PAD)
        top = PAD + (index // cols) * (cell + caption + PAD)
        patch = Image.fromarray(displayable(array), "RGB")
        scale = cell / max(patch.size)
        size = (max(1, round(patch.width * scale)), max(1, round(patch.height * scale)))
        if size != patch.size:
            patch = patch.resize(size, Image.Resampling.BOX if scale < 1
                                 else Image.Resampling.NEAREST)
        grid.paste(patch, (left + (cell - size[0]) // 2, top + (cell - size[1]) // 2))
        if labels is not None:
            text = _fit_text(draw, labels[index], font, cell)
            draw.text((left, top + cell + 1), text, fill=TEXT, font=font)
    return grid


def preview(thumbnail: np.ndarray, mask: np.ndarray, coords: Sequence[PatchCoordinate],
            patches: Sequence[np.ndarray], slide_dimensions: tuple[int, int],
            level_downsamples: Sequence[float], title: str = "", *, columns: int = 8,
            cell: int = 128, max_side: int = 1024, caption: str = "") -> Image.Image:
    """One picture of a slide: a title line (``title``, the mask's tissue fraction, the
    number of patches), the overlay (thumbnail shrunk so its longest side is at most
    ``max_side``) on the left, the patch grid on its right; below it instead when the
    overlay is wide (width > 1.3 x height). The title line ends with a legend of the box
    colour of each level drawn; ``caption`` (the detector and its threshold: why a slide
    gave 0% tissue) is a second line. Patches are labelled with their level-0 x, y and mpp
    (the level when the mpp is unknown) when ``coords`` has one coordinate per patch."""
    rgb = _rgb_uint8(np.asarray(thumbnail), "thumbnail")
    height, width = rgb.shape[:2]
    scale = min(1.0, max_side / max(width, height))
    small = Image.fromarray(rgb, "RGB")
    if scale < 1.0:
        small = small.resize((max(1, round(width * scale)), max(1, round(height * scale))),
                             Image.Resampling.BOX)
    overlay = mask_overlay(np.asarray(small), mask, coords, slide_dimensions,
                           level_downsamples)
    labels = ([f"{c.x},{c.y} " + (f"{c.mpp:.3g} mpp" if c.mpp is not None else f"L{c.level}")
               for c in coords]
              if len(coords) == len(patches) else None)
    grid = patch_grid(patches, columns=columns, cell=cell, labels=labels)
    fraction = float(np.count_nonzero(mask)) / mask.size if mask.size else 0.0
    parts = [title] if title else []
    parts += [f"tissue {fraction:.1%}", f"{len(patches)} patches"]
    font = _font(14)
    line_h = _line_height(font)
    title_h = line_h + 8 + (line_h + 2 if caption else 0)
    below = overlay.width > 1.3 * overlay.height
    if below:
        size = (max(overlay.width, grid.width), title_h + overlay.height + PAD + grid.height)
        grid_at = (0, title_h + overlay.height + PAD)
    else:
        size = (overlay.width + PAD + grid.width, title_h + max(overlay.height, grid.height))
        grid_at = (overlay.width + PAD, title_h)
    canvas = Image.new("RGB", size, BACKGROUND)
    canvas.paste(overlay, (0, title_h))
    canvas.paste(grid, grid_at)
    draw = ImageDraw.Draw(canvas)
    text = _fit_text(draw, "  |  ".join(parts), font, size[0] - 8)
    draw.text((4, 4), text, fill=TEXT, font=font)
    if caption:
        draw.text((4, 6 + line_h), _fit_text(draw, caption, font, size[0] - 8), fill=TEXT,
                  font=font)
    _legend(draw, sorted({c.level for c in coords}), font,
            4 + round(draw.textlength(text, font=font)) + 16, line_h, size[0])
    return canvas


def _legend(draw: ImageDraw.ImageDraw, levels: list[int], font: Font, x: int, line: int,
            width: int) -> None:
    """A box of each level's colour and its name ("L0 L1 ..."), while it fits in ``width``."""
    for level in levels:
        name = f"L{level}"
        end = x + line + 4 + round(draw.textlength(name, font=font))
        if end > width - 4:
            return
        draw.rectangle((x, 5, x + line - 2, 3 + line), outline=BOX_COLOURS[
            level % len(BOX_COLOURS)], width=2)
        draw.text((x + line + 2, 4), name, fill=TEXT, font=font)
        x = end + 12


def save_png(image: Image.Image | np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write ``image`` (a PIL image, or an array ``displayable`` accepts) as PNG."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(
        displayable(image), "RGB")
    picture.save(os.fspath(path), format="PNG")


def displayable(array: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 copy of a patch: uint8 as is; other dtypes min-max rescaled to
    0-255 (a constant patch becomes mid grey, NaN and infinities 0); grey repeated to three
    channels, a fourth (alpha) channel dropped, (C, H, W) with C in 1 or 3 transposed."""
    data = np.asarray(array)
    if data.ndim == 3 and data.shape[0] in (1, 3) and data.shape[2] not in (1, 3, 4):
        data = data.transpose(1, 2, 0)
    if data.ndim == 3 and data.shape[2] in (1, 3, 4):
        data = data[..., :3] if data.shape[2] != 1 else data[..., 0]
    if data.ndim == 2:
        data = np.repeat(data[..., None], 3, axis=2)
    if data.ndim != 3 or data.shape[2] != 3 or 0 in data.shape:
        raise ValueError(f"a patch must be (H, W, 3), (H, W) or (3, H, W); got {array.shape}")
    if data.dtype == np.uint8:
        return np.ascontiguousarray(data)
    values = np.nan_to_num(data.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if high - low <= 1e-12:
        return np.full(values.shape, 128, np.uint8)
    return ((values - low) * (255.0 / (high - low))).round().astype(np.uint8)


def _rgb_uint8(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8 or 0 in array.shape:
        raise ValueError(f"{name} must be (H, W, 3) uint8; got {array.shape} {array.dtype}")
    return np.ascontiguousarray(array)


def _fit_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    data = np.asarray(mask)
    if data.ndim != 2 or 0 in data.shape:
        raise ValueError(f"mask must be 2-D and non-empty; got {data.shape}")
    tissue: np.ndarray = data.astype(bool)
    if tissue.shape == (height, width):
        return tissue
    small = Image.fromarray(tissue.astype(np.uint8) * 255, "L")
    fitted: np.ndarray = np.asarray(small.resize((width, height), Image.Resampling.NEAREST))
    return fitted > 127


def _outline(tissue: np.ndarray) -> np.ndarray:
    """Tissue pixels with a 4-neighbour outside the tissue (the image edge is not outside)."""
    padded = np.pad(tissue, 1, mode="edge")
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    edge: np.ndarray = tissue & ~inner
    return edge


def _font(size: int | None = None) -> Font:
    if size is not None:
        try:
            return ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1: only the fixed bitmap font
            pass
    return ImageFont.load_default()


def _line_height(font: Font) -> int:
    box = font.getbbox("Ag(0,9)")
    return int(box[3])


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: Font, width: int) -> str:
    """``text``, cut with an ellipsis ("...") to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."
