"""wsistream's four picture functions (``wsistream.viz``), with its signatures: arrays in, an
(H, W, 3) uint8 array out, written to ``save_path`` too when one is given (the format from its
suffix; parent folders are made). Drawn with Pillow and numpy: neither OpenCV nor matplotlib
is needed. Re-exported by ``viz``, beside our own pictures (``mask_overlay``, ``patch_grid``,
``preview``).

Differences from wsistream kept on purpose: the tissue tint is blended over tissue only (the
rest of the thumbnail keeps its pixels; wsistream darkens everything by ``1 - alpha``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GRID_PAD = 4  # pixels between cells of plot_patch_grid and compare_transforms
GRID_BACKGROUND = 240
CELL = 128  # compare_transforms' cell side
LABEL_WIDTH = 160  # compare_transforms' column of names
OUTLINE = 2  # width of the tissue outline, pixels


def plot_tissue_mask(thumbnail: np.ndarray, mask: np.ndarray, alpha: float = 0.4,
                     color: tuple[int, int, int] = (0, 255, 0),
                     save_path: str | os.PathLike[str] | None = None) -> np.ndarray:
    """``thumbnail`` (H, W, 3) uint8 with ``color`` blended at ``alpha`` over the tissue of
    ``mask`` (H, W, bool) and an outline of ``OUTLINE`` pixels in ``color`` along its edge.
    Raises ``ValueError`` when the shapes differ or ``alpha`` is outside [0, 1]."""
    rgb = _as_rgb(thumbnail, "thumbnail")
    tissue = np.asarray(mask).astype(bool)
    if tissue.shape != rgb.shape[:2]:
        raise ValueError(f"mask {tissue.shape} does not match thumbnail {rgb.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    tint = np.asarray(color, np.float32)
    out = rgb.astype(np.float32)
    out[tissue] = out[tissue] * (1.0 - alpha) + tint * alpha
    picture = out.round().clip(0, 255).astype(np.uint8)
    picture[_edge(tissue, OUTLINE)] = np.asarray(color, np.uint8)
    return _saved(picture, save_path)


def plot_patch_grid(patches: Sequence[np.ndarray], ncols: int = 8,
                    patch_display_size: int = 128, titles: Sequence[str] | None = None,
                    save_path: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Patches resized to ``patch_display_size`` squares, in rows of ``ncols``, ``GRID_PAD``
    pixels apart on light grey, ``titles[i]`` (when given) written at the top left of patch
    ``i``. The array is ``(rows * (s + pad) + pad, ncols * (s + pad) + pad, 3)``; no patches
    give one black ``s`` x ``s`` square."""
    if ncols < 1 or patch_display_size < 1:
        raise ValueError(f"ncols ({ncols}) and patch_display_size ({patch_display_size}) "
                         "must be positive")
    size = patch_display_size
    if len(patches) == 0:
        return np.zeros((size, size, 3), np.uint8)
    rows = -(-len(patches) // ncols)
    cell = size + GRID_PAD
    canvas = Image.new("RGB", (ncols * cell + GRID_PAD, rows * cell + GRID_PAD),
                       (GRID_BACKGROUND,) * 3)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for index, patch in enumerate(patches):
        row, col = divmod(index, ncols)
        left, top = col * cell + GRID_PAD, row * cell + GRID_PAD
        canvas.paste(_square(patch, size), (left, top))
        if titles is not None and index < len(titles):
            draw.text((left + 4, top + 4), str(titles[index]), fill=(0, 0, 0), font=font)
    return _saved(np.asarray(canvas), save_path)


def compare_transforms(original: np.ndarray,
                       transforms_dict: dict[str, Callable[[np.ndarray], Any]],
                       n_samples: int = 5,
                       save_path: str | os.PathLike[str] | None = None) -> np.ndarray:
    """One row per transform: its name, ``original``, then ``n_samples`` outputs of the
    transform applied to a fresh copy of ``original`` each time; cells are ``CELL`` pixels,
    ``GRID_PAD`` apart on white. The array is ``(n * (CELL + pad) + pad, LABEL_WIDTH +
    (n_samples + 1) * (CELL + pad) + pad, 3)`` for ``n`` transforms."""
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    cell = CELL + GRID_PAD
    canvas = Image.new("RGB", (LABEL_WIDTH + (n_samples + 1) * cell + GRID_PAD,
                               len(transforms_dict) * cell + GRID_PAD), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    source = np.asarray(original)
    shown = _square(source, CELL)
    for row, (name, transform) in enumerate(transforms_dict.items()):
        top = row * cell + GRID_PAD
        draw.text((8, top + CELL // 2 - 5), name, fill=(0, 0, 0), font=font)
        canvas.paste(shown, (LABEL_WIDTH + GRID_PAD, top))
        for sample in range(n_samples):
            result = np.asarray(transform(source.copy()))
            canvas.paste(_square(result, CELL), (LABEL_WIDTH + (sample + 1) * cell + GRID_PAD,
                                                 top))
    return _saved(np.asarray(canvas), save_path)


def plot_sampling_locations(thumbnail: np.ndarray, coordinates: Sequence[Any],
                            slide_dimensions: tuple[int, int],
                            color: tuple[int, int, int] = (255, 0, 0), marker_size: int = 3,
                            save_path: str | os.PathLike[str] | None = None) -> np.ndarray:
    """A copy of ``thumbnail`` with a filled disc of radius ``marker_size`` at each
    coordinate's level-0 top left (``.x``, ``.y``), scaled by thumbnail / ``slide_dimensions``
    (level-0 width, height)."""
    rgb = _as_rgb(thumbnail, "thumbnail")
    slide_w, slide_h = slide_dimensions
    if slide_w <= 0 or slide_h <= 0:
        raise ValueError(f"slide dimensions {slide_dimensions} must be positive")
    image = Image.fromarray(rgb, "RGB")
    sx, sy = image.width / slide_w, image.height / slide_h
    draw = ImageDraw.Draw(image)
    r = marker_size
    for coord in coordinates:
        cx, cy = int(coord.x * sx), int(coord.y * sy)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(color))
    return _saved(np.asarray(image), save_path)


def _as_rgb(array: np.ndarray, name: str) -> np.ndarray:
    data = np.asarray(array)
    if data.ndim != 3 or data.shape[2] != 3 or data.dtype != np.uint8:
        raise ValueError(f"{name} must be (H, W, 3) uint8; got {data.shape} {data.dtype}")
    return np.ascontiguousarray(data)


def _square(patch: np.ndarray, size: int) -> Image.Image:
    """``patch`` ((H, W, 3), (H, W, 4) or (H, W)) as an RGB image stretched to ``size`` x
    ``size``: uint8 as is, floats in [0, 1] scaled by 255, anything else clipped to 0-255."""
    data = np.asarray(patch)
    if data.ndim == 2:
        data = np.repeat(data[..., None], 3, axis=2)
    if data.ndim != 3 or data.shape[2] not in (3, 4) or 0 in data.shape:
        raise ValueError(f"a patch must be (H, W, 3) or (H, W); got {data.shape}")
    data = data[..., :3]
    if data.dtype != np.uint8:
        values = np.nan_to_num(data.astype(np.float64))
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            values = values * 255.0
        data = values.round().clip(0, 255).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(data), "RGB")
    if image.size == (size, size):
        return image
    return image.resize((size, size), Image.Resampling.BILINEAR)


def _edge(tissue: np.ndarray, width: int) -> np.ndarray:
    """Tissue pixels within ``width`` 4-neighbour steps of a non-tissue pixel (the image
    border counts as tissue)."""
    inner = tissue.copy()
    for _ in range(width):
        padded = np.pad(inner, 1, mode="edge")
        inner = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2]
                 & padded[1:-1, 2:] & inner)
    edge: np.ndarray = tissue & ~inner
    return edge


def _saved(picture: np.ndarray, save_path: str | os.PathLike[str] | None) -> np.ndarray:
    if save_path:
        path = Path(save_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture, "RGB").save(path)
    return picture
