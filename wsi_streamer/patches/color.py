"""Colour conversions shared by the tissue detectors and patch filters, without OpenCV.

``rgb_to_hsv_cv`` and ``rgb_to_grey_cv`` reproduce OpenCV's 8-bit ``cvtColor`` (RGB2HSV and
RGB2GRAY, their fixed-point arithmetic) bit for bit, so thresholds written for OpenCV (Midnight's
HSV box, CLAM's saturation threshold) mean the same here. ``require_extra`` imports an optional
dependency of the ``[patches]`` extra with an error message that says how to install it.
"""

from __future__ import annotations

import importlib
import math
from types import ModuleType

import numpy as np

_HSV_SHIFT = 12
_HALF = 1 << (_HSV_SHIFT - 1)


def _hsv_tables() -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's arithmetic tabulated: ``S[v, diff]`` and ``H[numerator + 255, diff]``.

    OpenCV divides through ``sdiv[i] = round((255 << 12) / i)`` and ``hdiv[i] = round((180 << 12)
    / (6 i))`` (``saturate_cast<int>`` rounds half to even, as ``np.rint``; entry 0 is 0), then
    rounds with ``(x + 2048) >> 12`` (half up, also for negative x), and adds 180 to a negative
    hue."""
    divisors = np.arange(256, dtype=np.float64)
    safe = np.maximum(divisors, 1.0)
    sdiv = np.where(divisors > 0, np.rint((255 << _HSV_SHIFT) / safe), 0).astype(np.int64)
    hdiv = np.where(divisors > 0, np.rint((180 << _HSV_SHIFT) / (6 * safe)), 0).astype(np.int64)
    diff = np.arange(256, dtype=np.int64)[None, :]
    sat = (diff * sdiv[:, None] + _HALF) >> _HSV_SHIFT
    numerator = np.arange(-255, 5 * 255 + 1, dtype=np.int64)[:, None]
    hue = (numerator * hdiv[None, :] + _HALF) >> _HSV_SHIFT
    hue = np.where(hue < 0, hue + 180, hue)
    return np.clip(sat, 0, 255).astype(np.uint8), np.clip(hue, 0, 179).astype(np.uint8)


_SAT_TABLE, _HUE_TABLE = _hsv_tables()

# Rows per band of the banded image loops (``rgb_to_grey_cv``, ``tissue.imageops``): a band
# of a 2048-px-wide image's uint32 temporaries (512 KiB) stays in a core's L2 cache.
BAND_ROWS = 64

PATCHES_EXTRA_HINT = 'pip install "wsi_streamer[patches]"'

HSVRange = tuple[float, float]


def require_extra(module: str) -> ModuleType:
    """Import ``module`` (scikit-image or scipy, from the ``[patches]`` extra).

    Raises ``ImportError`` naming the module and the install command when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{module} is needed for wsi_streamer.patches tissue detection, "
                          f"filters and colour augmentation: {PATCHES_EXTRA_HINT}") from exc


def check_rgb_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Return ``image`` as an ndarray after checking it is ``(H, W, 3)`` uint8.

    Raises ``TypeError`` for another dtype and ``ValueError`` for another shape, naming
    ``name``."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise TypeError(f"{name} must be uint8, got {array.dtype}")
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"{name} must have shape (H, W, 3), got {array.shape}")
    return array


def rgb_to_hsv_cv(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 ``(..., 3)`` -> HSV uint8 ``(..., 3)`` on OpenCV's 8-bit scale.

    H in [0, 180) is half the hue angle in degrees, S = round(255 * (max - min) / max) (0 for
    black), V = max; each channel is rounded as OpenCV rounds it (its tables and shifts), so the
    result equals ``cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)``. Grey pixels have H = 0."""
    array = np.asarray(rgb)
    if array.dtype != np.uint8 or array.shape[-1:] != (3,):
        raise ValueError(f"rgb must be uint8 with 3 channels last, got {array.dtype} "
                         f"{array.shape}")
    r, g, b = array[..., 0], array[..., 1], array[..., 2]
    v = np.maximum(np.maximum(r, g), b)
    diff = v - np.minimum(np.minimum(r, g), b)
    r16, g16, b16, d16 = (c.astype(np.int16) for c in (r, g, b, diff))
    # The hue numerator, offset by 255 to index the table: OpenCV tests v == r, then v == g.
    numerator = np.where(v == r, g16 - b16 + 255,
                         np.where(v == g, b16 - r16 + 2 * d16 + 255, r16 - g16 + 4 * d16 + 255))
    hsv = np.empty(array.shape, dtype=np.uint8)
    hsv[..., 0] = _HUE_TABLE[numerator, diff]
    hsv[..., 1] = _SAT_TABLE[v, diff]
    hsv[..., 2] = v
    return hsv


def rgb_to_grey_cv(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 ``(..., 3)`` -> grey uint8 ``(...)``: BT.601 luma (0.299 R + 0.587 G +
    0.114 B) in OpenCV's 15-bit fixed point, equal to ``cvtColor(rgb, COLOR_RGB2GRAY)``.
    An image ``(H, W, 3)`` is converted ``BAND_ROWS`` rows at a time (about 2x faster on a
    thumbnail than whole-image uint32 temporaries)."""
    array = np.asarray(rgb)
    if array.ndim != 3:
        return _grey(array).astype(np.uint8)
    out = np.empty(array.shape[:2], dtype=np.uint8)
    for top in range(0, array.shape[0], BAND_ROWS):
        out[top:top + BAND_ROWS] = _grey(array[top:top + BAND_ROWS])
    return out


def _grey(rgb: np.ndarray) -> np.ndarray:
    """``rgb_to_grey_cv`` of one block, as uint32 (its products and sums in place, at most
    2**23)."""
    grey = rgb[..., 0].astype(np.uint32)
    grey *= 9798
    for channel, weight in ((1, 19235), (2, 3735)):
        term = rgb[..., channel].astype(np.uint32)
        term *= weight
        grey += term
    grey += 1 << 14
    grey >>= 15
    return grey


def check_range(name: str, value: object) -> HSVRange:
    """``value`` as a ``(low, high)`` pair of finite numbers with ``low <= high`` (integral
    values as ``int``).

    Raises ``TypeError`` (not a pair of numbers) or ``ValueError`` (order, NaN), naming
    ``name``."""
    first: object
    second: object
    try:
        first, second = value  # type: ignore[misc]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a (low, high) pair, got {value!r}") from None
    if isinstance(value, (str, bytes)) or not all(
            isinstance(item, (int, float, np.integer, np.floating)) and not isinstance(item, bool)
            for item in (first, second)):
        raise TypeError(f"{name} must be a (low, high) pair of numbers, got {value!r}")
    low, high = float(first), float(second)  # type: ignore[arg-type]
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"{name} must satisfy low <= high (finite), got {value!r}")
    return (_plain(low), _plain(high))


def _plain(number: float) -> float:
    """An integral value as ``int`` (so reprs and cache keys are stable), else the float."""
    return int(number) if number.is_integer() else number


def hsv_box_mask(rgb: np.ndarray, hue_range: HSVRange, sat_range: HSVRange,
                 val_range: HSVRange) -> np.ndarray:
    """Boolean ``(H, W)``: pixels whose OpenCV-scale HSV lies in the box, all ends inclusive
    (``cv2.inRange`` semantics)."""
    hsv = rgb_to_hsv_cv(rgb)
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    return ((h >= hue_range[0]) & (h <= hue_range[1]) & (s >= sat_range[0])
            & (s <= sat_range[1]) & (v >= val_range[0]) & (v <= val_range[1]))


__all__ = ["BAND_ROWS", "PATCHES_EXTRA_HINT", "HSVRange", "check_range", "check_rgb_uint8",
           "hsv_box_mask", "require_extra", "rgb_to_grey_cv", "rgb_to_hsv_cv"]
