"""The image operations of the tissue detectors, without OpenCV: OpenCV's Gaussian blur,
binary closing, Otsu's threshold and small-component removal on a thumbnail (about 3 Mpx).

They run as numpy arithmetic on bands of ``BAND_ROWS`` rows (a band's temporaries stay in a
core's cache; whole-image temporaries of 12 MB do not), or in Pillow's C loops where Pillow
has the operation (histograms, lookup tables), with the same results as the whole-image
formulations they replace (the tests compare them with scipy and scikit-image).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from ..color import BAND_ROWS, require_extra

# OpenCV's fixed kernels for ``GaussianBlur(ksize, sigma=0)`` with ksize <= 7.
SMALL_GAUSSIANS = {3: (0.25, 0.5, 0.25), 5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
                   7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125)}


def gaussian_blur(image: np.ndarray, ksize: int) -> np.ndarray:
    """``GaussianBlur(image, (ksize, ksize), 0)`` as OpenCV defines it (its fixed kernels up
    to 7, else sigma = 0.3 ((ksize - 1) / 2 - 1) + 0.8), reflect-101 borders; within one grey
    level of OpenCV (which rounds in fixed point). The fixed kernels are dyadic, so they run
    as exact integer sums of shifted views, band by band."""
    if not blur_needs_scipy(ksize):
        return image if ksize == 1 else _dyadic_blur(image, SMALL_GAUSSIANS[ksize])
    ndimage = require_extra("scipy.ndimage")
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    offsets = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2
    weights = np.exp(-(offsets**2) / (2 * sigma * sigma))
    kernel = (weights / weights.sum()).astype(np.float32)
    out = image.astype(np.float32)
    for axis in (0, 1):
        out = ndimage.correlate1d(out, kernel, axis=axis, mode="mirror")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def blur_needs_scipy(ksize: int) -> bool:
    """Whether ``gaussian_blur(_, ksize)`` runs on scipy.ndimage (no fixed dyadic kernel)."""
    return ksize != 1 and ksize not in SMALL_GAUSSIANS


def _dyadic_blur(image: np.ndarray, kernel: tuple[float, ...]) -> np.ndarray:
    """Separable blur with weights ``k / 2**n``: integer sums, rounded half up once. The
    kernels are symmetric: each pass adds mirrored pairs of shifted views in place, the rows
    in uint16 (at most 255 x 64), the columns in uint32; one band of output rows at a time
    (with its ``len(kernel) // 2`` rows of context above and below)."""
    scale = 1 << 6  # every fixed kernel is in 64ths
    weights = [int(round(w * scale)) for w in kernel]
    half = len(weights) // 2
    height, width = image.shape
    padded = np.pad(image, half, mode="reflect")
    out = np.empty((height, width), dtype=np.uint8)
    for top in range(0, height, BAND_ROWS):
        rows = min(BAND_ROWS, height - top)
        band = padded[top:top + rows + 2 * half].astype(np.uint16)
        across = _pair_sums(band, weights, width, axis=1)
        summed = _pair_sums(across.astype(np.uint32), weights, rows, axis=0)
        summed += scale * scale // 2
        summed >>= 12
        out[top:top + rows] = summed
    return out


def _pair_sums(padded: np.ndarray, weights: list[int], size: int, axis: int) -> np.ndarray:
    """``sum(weights[i] * padded shifted by i)`` along ``axis`` (``size`` outputs), for a
    symmetric ``weights``: one multiply per mirrored pair, no temporaries per term."""
    n = len(weights)
    half = n // 2

    def view(i: int) -> np.ndarray:
        return padded[:, i:i + size] if axis == 1 else padded[i:i + size]

    out: np.ndarray = view(half) * padded.dtype.type(weights[half])
    pair = np.empty_like(out)
    for i in range(half):
        np.add(view(i), view(n - 1 - i), out=pair)
        pair *= padded.dtype.type(weights[i])
        out += pair
    return out


def ellipse(ksize: int) -> np.ndarray:
    """OpenCV's ``MORPH_ELLIPSE`` structuring element of ``ksize x ksize``."""
    element = np.zeros((ksize, ksize), dtype=bool)
    r = c = ksize // 2
    for i in range(ksize):
        dy = i - r
        if abs(dy) <= r:
            dx = int(np.rint(c * math.sqrt((r * r - dy * dy) / (r * r)))) if r else 0
            element[i, max(c - dx, 0):min(c + dx + 1, ksize)] = True
    return element


def close(mask: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Binary closing (dilate, then erode) with the anchor at ``size // 2``; outside the image
    counts as neither foreground nor background (OpenCV's default), so tissue touching the
    border is kept."""
    dilated = _shifted_reduce(mask, footprint, np.logical_or, fill=False)
    return _shifted_reduce(dilated, footprint, np.logical_and, fill=True)


def _shifted_reduce(mask: np.ndarray, footprint: np.ndarray, op: Any, *, fill: bool
                    ) -> np.ndarray:
    """``op`` over the mask shifted by every offset of ``footprint`` (centre at
    ``size // 2``), the outside read as ``fill``: max/min filters on booleans. Each
    footprint row is made of horizontal runs; a run is reduced along x once (by doubling:
    ``ceil(log2(length))`` operations), then combined for every row that holds it, so an
    ellipse of 5 takes 8 operations, not 21."""
    fh, fw = footprint.shape
    cy, cx = fh // 2, fw // 2
    height, width = mask.shape
    padded = np.full((height + fh - 1, width + fw - 1), fill, dtype=bool)
    padded[cy:cy + height, cx:cx + width] = mask
    rows_of: dict[tuple[int, int], list[int]] = {}
    for dy in range(fh):
        for run in _runs(footprint[dy]):
            rows_of.setdefault(run, []).append(dy)
    # Pixel (y, x) reads padded (y + dy, x + dx), i.e. mask (y + dy - cy, x + dx - cx), as
    # scipy's maximum_filter / minimum_filter do (correlation, no mirror).
    out: np.ndarray | None = None
    for (start, length), rows in rows_of.items():
        along = _run_reduce(padded[:, start:start + width + length - 1], length, op)
        for dy in rows:
            if out is None:
                out = along[dy:dy + height].copy()
            else:
                op(out, along[dy:dy + height], out=out)
    assert out is not None, "empty footprint"
    return out


def _runs(row: np.ndarray) -> list[tuple[int, int]]:
    """``(start, length)`` of each run of True in a footprint row."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], row.astype(np.int8), [0]))))
    return [(int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _run_reduce(strip: np.ndarray, length: int, op: Callable[..., np.ndarray]) -> np.ndarray:
    """``out[:, x] = op over strip[:, x : x + length]`` for every x that fits."""
    acc, span = strip, 1
    while span < length:
        step = min(span, length - span)
        n = acc.shape[1] - step
        acc = op(acc[:, :n], acc[:, step:step + n])
        span += step
    return acc


def otsu_threshold(image: np.ndarray) -> float | None:
    """Otsu's threshold (class 0 is ``<= t``) of a uint8 image, or None for an image with a
    single value. scikit-image's ``threshold_otsu`` (its integer histogram: the grey levels
    from the image's minimum to its maximum), the same float arithmetic, from one histogram
    (Pillow's, ~10x numpy's ``bincount`` on uint8) instead of its four passes over the image."""
    if image.size == 0:
        return None
    hist = np.asarray(Image.fromarray(np.ascontiguousarray(image)).histogram(),
                      dtype=np.int64)
    present = np.flatnonzero(hist)
    if present.size < 2:
        return None
    lo, hi = int(present[0]), int(present[-1])
    counts = hist[lo:hi + 1]
    centers = np.arange(lo, hi + 1)
    weight1 = np.cumsum(counts)
    weight2 = np.cumsum(counts[::-1])[::-1]
    mean1 = np.cumsum(counts * centers) / weight1
    mean2 = (np.cumsum((counts * centers)[::-1]) / weight2[::-1])[::-1]
    variance12 = weight1[:-1] * weight2[1:] * (mean1[:-1] - mean2[1:]) ** 2
    return float(centers[int(np.argmax(variance12))])


def drop_small_components(mask: np.ndarray, min_area: int) -> np.ndarray:
    """``mask`` without its 8-connected components of fewer than ``min_area`` pixels (the
    mask itself when none is that small). Up to 255 components the areas and the lookup run
    in Pillow (a histogram and a table of the labels as uint8: about 3x numpy's
    ``bincount`` and ``take`` on int32 labels); more, in numpy."""
    ndimage = require_extra("scipy.ndimage")
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return mask
    if count < 256:
        image = Image.fromarray(labels.astype(np.uint8))
        areas = np.asarray(image.histogram()[:count + 1])
    else:
        areas = np.bincount(labels.ravel())
    keep = areas >= min_area
    keep[0] = False
    if keep[1:].all():
        return mask
    if count < 256:
        table = keep.astype(np.uint8).tolist() + [0] * (255 - count)
        return np.asarray(image.point(table)).view(bool).copy()
    kept: np.ndarray = np.take(keep, labels)  # ``take``: about 2x fancy indexing's speed
    return kept


__all__ = ["SMALL_GAUSSIANS", "close", "drop_small_components", "ellipse", "gaussian_blur",
           "otsu_threshold"]
