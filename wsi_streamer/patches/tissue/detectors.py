"""Tissue detection on a low-resolution slide image (wsistream's detectors, without OpenCV).

Every detector maps an RGB uint8 thumbnail ``(H, W, 3)`` to a boolean mask ``(H, W)`` (True =
tissue); ``downsample`` is level-0 pixels per thumbnail pixel, ``(x, y)`` or one number for both.
``config_key()`` is a stable text of the class and its configuration, used in the tissue-mask
cache key: two detectors with equal keys give equal masks. Image processing uses scipy and
scikit-image (the ``[patches]`` extra), imported on first use.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..color import (
    HSVRange,
    check_range,
    check_rgb_uint8,
    hsv_box_mask,
    require_extra,
    rgb_to_grey_cv,
    rgb_to_hsv_cv,
)
from . import imageops

Downsample = float | tuple[float, float]


class TissueDetector(ABC):
    """Produces a tissue mask from a thumbnail. Subclasses implement ``detect``; bump
    ``config_version`` when the algorithm changes so cached masks are not reused.

    A detector imports the optional modules its ``detect`` needs when it is built (in the
    process that builds the pipeline), not at its first thumbnail: forked DataLoader workers
    inherit them instead of importing them each (scipy.ndimage: about 0.26 s of CPU per
    process), and a missing extra fails at construction, naming the install command."""

    config_version: int = 1

    @abstractmethod
    def detect(self, thumbnail: np.ndarray, downsample: Downsample = (1.0, 1.0)) -> np.ndarray:
        """Boolean ``(H, W)`` mask of ``thumbnail`` (RGB uint8 ``(H, W, 3)``)."""

    def config_key(self) -> str:
        """``module.Class/vN(name=value, ...)`` over the public configuration (dataclass fields,
        else public attributes), sorted by name; nested detectors use their own key."""
        if dataclasses.is_dataclass(self):
            items = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        else:
            items = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        text = ", ".join(f"{name}={_key_text(items[name])}" for name in sorted(items))
        cls = type(self)
        return f"{cls.__module__}.{cls.__qualname__}/v{self.config_version}({text})"


def _key_text(value: Any) -> str:
    if isinstance(value, TissueDetector):
        return value.config_key()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_key_text(item) for item in value) + "]"
    return repr(value)


def normalize_downsample(downsample: Downsample) -> tuple[float, float]:
    """``(dsx, dsy)`` from one number or a pair; raises ``ValueError`` unless both are finite
    and > 0."""
    pair = (downsample, downsample) if isinstance(downsample, (int, float)) else downsample
    try:
        dsx, dsy = (float(value) for value in pair)
    except (TypeError, ValueError):
        raise ValueError(f"downsample must be a number or an (x, y) pair, got {downsample!r}"
                         ) from None
    if not all(math.isfinite(d) and d > 0 for d in (dsx, dsy)):
        raise ValueError(f"downsample must be finite and > 0, got {downsample!r}")
    return dsx, dsy


def _check_int(name: str, value: object, minimum: int, odd: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum or (odd and value % 2 == 0):
        kind = "a positive odd integer" if odd else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value}")


def _check_number(name: str, value: object, minimum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(float(value)) or value < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum}, got {value}")


@dataclass
class OtsuTissueDetector(TissueDetector):
    """Otsu (1979) on a Gaussian-blurred grey image: tissue is at or below the threshold
    (darker than the background); then closing with an ``morph_close_ksize`` ellipse (0: none)
    and removal of 8-connected components smaller than ``min_area_ratio`` of the image (0:
    none). An image with no contrast (one grey value, e.g. all white) gives an empty mask."""

    blur_ksize: int = 7
    morph_close_ksize: int = 5
    min_area_ratio: float = 0.001

    def __post_init__(self) -> None:
        _check_int("blur_ksize", self.blur_ksize, 1, odd=True)
        _check_int("morph_close_ksize", self.morph_close_ksize, 0)
        _check_number("min_area_ratio", self.min_area_ratio, 0.0)
        if self.min_area_ratio > 0 or imageops.blur_needs_scipy(self.blur_ksize):
            require_extra("scipy.ndimage")  # when built: ``TissueDetector``

    def detect(self, thumbnail: np.ndarray, downsample: Downsample = (1.0, 1.0)) -> np.ndarray:
        rgb = check_rgb_uint8(thumbnail, "thumbnail")
        normalize_downsample(downsample)
        blurred = imageops.gaussian_blur(rgb_to_grey_cv(rgb), self.blur_ksize)
        threshold = imageops.otsu_threshold(blurred)
        if threshold is None:
            return np.zeros(blurred.shape, dtype=bool)
        mask = blurred <= threshold
        if self.morph_close_ksize > 0:
            mask = imageops.close(mask, imageops.ellipse(self.morph_close_ksize))
        min_area = int(mask.size * self.min_area_ratio)
        if min_area > 0:
            mask = imageops.drop_small_components(mask, min_area)
        return mask


@dataclass
class HSVTissueDetector(TissueDetector):
    """Pixels inside the inclusive HSV box on OpenCV's scale (H 0-180, S and V 0-255); the
    defaults are Midnight's (Karasikov et al. 2025) per-tile box applied to the thumbnail."""

    hue_range: HSVRange = (90, 180)
    sat_range: HSVRange = (8, 255)
    val_range: HSVRange = (103, 255)

    def __post_init__(self) -> None:
        self.hue_range = check_range("hue_range", self.hue_range)
        self.sat_range = check_range("sat_range", self.sat_range)
        self.val_range = check_range("val_range", self.val_range)

    def detect(self, thumbnail: np.ndarray, downsample: Downsample = (1.0, 1.0)) -> np.ndarray:
        rgb = check_rgb_uint8(thumbnail, "thumbnail")
        normalize_downsample(downsample)
        return hsv_box_mask(rgb, self.hue_range, self.sat_range, self.val_range)


@dataclass
class CombinedTissueDetector(TissueDetector):
    """The intersection (logical AND) of its detectors' masks; at least one detector."""

    detectors: Sequence[TissueDetector] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.detectors = list(self.detectors)
        if not self.detectors:
            raise ValueError("detectors must contain at least one TissueDetector")
        for index, detector in enumerate(self.detectors):
            if not isinstance(detector, TissueDetector):
                raise TypeError(f"detectors[{index}] must be a TissueDetector, got "
                                f"{type(detector).__name__}")

    def detect(self, thumbnail: np.ndarray, downsample: Downsample = (1.0, 1.0)) -> np.ndarray:
        result: np.ndarray | None = None
        for detector in self.detectors:
            mask = np.asarray(detector.detect(thumbnail, downsample), dtype=bool)
            result = mask if result is None else result & mask
        assert result is not None
        return result


@dataclass
class CLAMTissueDetector(TissueDetector):
    """CLAM's segmentation (Lu et al. 2021, ``create_patches_fp.py`` defaults) as a mask.

    Saturation (OpenCV scale), ``mthresh`` median blur (replicated borders), ``> sthresh`` (or
    ``> Otsu`` with ``use_otsu``; nothing when ``sthresh_up`` is 0), closing with a
    ``close x close`` square (0: none). Then per 8-connected component: kept iff its net area
    (its own pixels, i.e. filled area minus all holes) is above ``a_t`` units; of its holes
    (enclosed 4-connected background), the ``max_n_holes`` largest that are above ``a_h`` units
    stay holes, the others are filled. One unit is ``int(ref_patch_size**2 / (dsx * dsy))``
    thumbnail pixels. Areas are pixel counts where CLAM uses polygon areas through boundary
    pixel centres (about half a perimeter less); a component nested in a kept hole is judged on
    its own, whatever the drawing order."""

    sthresh: int = 8
    sthresh_up: int = 255
    use_otsu: bool = False
    mthresh: int = 7
    close: int = 4
    a_t: float = 100
    a_h: float = 16
    max_n_holes: int = 8
    ref_patch_size: int = 512

    def __post_init__(self) -> None:
        _check_int("sthresh", self.sthresh, 0)
        _check_int("sthresh_up", self.sthresh_up, 0)
        if not isinstance(self.use_otsu, (bool, np.bool_)):
            raise TypeError(f"use_otsu must be a bool, got {self.use_otsu!r}")
        _check_int("mthresh", self.mthresh, 1, odd=True)
        _check_int("close", self.close, 0)
        _check_number("a_t", self.a_t, 0.0)
        _check_number("a_h", self.a_h, 0.0)
        _check_int("max_n_holes", self.max_n_holes, 0)
        _check_int("ref_patch_size", self.ref_patch_size, 1)
        require_extra("scipy.ndimage")  # when built: ``TissueDetector``
        if self.mthresh > 1:
            require_extra("skimage.filters.rank")

    def detect(self, thumbnail: np.ndarray, downsample: Downsample = (1.0, 1.0)) -> np.ndarray:
        rgb = check_rgb_uint8(thumbnail, "thumbnail")
        dsx, dsy = normalize_downsample(downsample)
        saturation = _median(rgb_to_hsv_cv(rgb)[..., 1], self.mthresh)
        threshold = imageops.otsu_threshold(saturation) if self.use_otsu else float(self.sthresh)
        if threshold is None or self.sthresh_up == 0:
            return np.zeros(saturation.shape, dtype=bool)
        binary = saturation > threshold
        if self.close > 0:
            binary = imageops.close(binary, np.ones((self.close, self.close), dtype=bool))
        unit = int(self.ref_patch_size**2 / (dsx * dsy))
        return _filter_components(binary, self.a_t * unit, self.a_h * unit, self.max_n_holes)


def _median(image: np.ndarray, ksize: int) -> np.ndarray:
    """``ksize x ksize`` median with replicated borders (OpenCV's ``medianBlur``)."""
    if ksize == 1:
        return image
    rank = require_extra("skimage.filters.rank")
    pad = ksize // 2
    padded = np.pad(image, pad, mode="edge")
    filtered = rank.median(padded, footprint=np.ones((ksize, ksize), dtype=np.uint8))
    return np.asarray(filtered[pad:pad + image.shape[0], pad:pad + image.shape[1]])


def _filter_components(binary: np.ndarray, min_area: float, min_hole_area: float,
                       max_n_holes: int) -> np.ndarray:
    """CLAM's contour filter on a binary image (see ``CLAMTissueDetector``)."""
    ndimage = require_extra("scipy.ndimage")
    labels, count = ndimage.label(binary, structure=np.ones((3, 3), dtype=bool))
    out = np.zeros(binary.shape, dtype=bool)
    if count == 0:
        return out
    areas = np.bincount(labels.ravel())
    boxes = ndimage.find_objects(labels)
    cross = ndimage.generate_binary_structure(2, 1)
    for index in np.flatnonzero(areas[1:] > min_area) + 1:
        box = boxes[index - 1]
        component = labels[box] == index
        region = np.asarray(ndimage.binary_fill_holes(component, structure=cross))
        holes = region & ~component
        if max_n_holes > 0 and holes.any():
            hole_labels, _ = ndimage.label(holes, structure=cross)
            hole_areas = np.bincount(hole_labels.ravel())[1:]
            largest = np.argsort(-hole_areas, kind="stable")[:max_n_holes]
            kept = largest[hole_areas[largest] > min_hole_area] + 1
            if kept.size:
                region &= ~np.isin(hole_labels, kept)
        out[box] |= region
    return out


__all__ = ["CLAMTissueDetector", "CombinedTissueDetector", "HSVTissueDetector",
           "OtsuTissueDetector", "TissueDetector", "normalize_downsample"]
