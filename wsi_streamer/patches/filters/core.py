"""Per-patch quality filters, run on the extracted pixels before any transform (wsistream's
filters). ``accept`` is a pure function of the patch: no state, safe from any thread."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from ..color import HSVRange, check_range, check_rgb_uint8, hsv_box_mask

# Slack for ``min_pixel_fraction * n`` computed in floating point (0.55 * 100 is
# 55.00000000000001): a count equal to the exact product passes.
_COUNT_EPSILON = 1e-9


class PatchFilter(ABC):
    """Accepts or rejects an RGB uint8 ``(H, W, 3)`` patch."""

    @abstractmethod
    def accept(self, patch: np.ndarray) -> bool:
        """True to keep ``patch``, False to discard it (counted as filtered)."""


@dataclass
class HSVPatchFilter(PatchFilter):
    """Midnight's tile criterion (Karasikov et al. 2025, arXiv:2504.05186): accept iff at least
    ``min_pixel_fraction`` of the pixels lie in the inclusive HSV box on OpenCV's scale (H 0-180,
    S and V 0-255). The comparison is on counts: 60 of 100 pixels pass 0.6, 59 do not. An empty
    patch is rejected."""

    hue_range: HSVRange = (90, 180)
    sat_range: HSVRange = (8, 255)
    val_range: HSVRange = (103, 255)
    min_pixel_fraction: float = 0.6

    def __post_init__(self) -> None:
        self.hue_range = check_range("hue_range", self.hue_range)
        self.sat_range = check_range("sat_range", self.sat_range)
        self.val_range = check_range("val_range", self.val_range)
        fraction = self.min_pixel_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)):
            raise TypeError(f"min_pixel_fraction must be a number, got {fraction!r}")
        if not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
            raise ValueError(f"min_pixel_fraction must be in [0, 1], got {fraction}")

    def accept(self, patch: np.ndarray) -> bool:
        rgb = check_rgb_uint8(patch, "patch")
        total = rgb.shape[0] * rgb.shape[1]
        if total == 0:
            return False
        inside = int(np.count_nonzero(hsv_box_mask(rgb, self.hue_range, self.sat_range,
                                                   self.val_range)))
        return bool(inside >= self.min_pixel_fraction * total - _COUNT_EPSILON * total)


__all__ = ["HSVPatchFilter", "PatchFilter"]
