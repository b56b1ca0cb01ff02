"""The plain data of the patch pipeline: slide properties, tissue masks, coordinates, results
and slide metadata (wsistream's types, same fields). All frozen; arrays are not copied."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ..errors import WsiError


class NoPatchesError(WsiError):
    """A full pass over every slide yielded nothing (``cycle=True``): names slides and reasons."""


@dataclass(frozen=True)
class SlideProperties:
    """Geometry and scale of an open slide. ``mpp`` is microns per pixel at level 0 in x,
    ``mpp_y`` in y (None when the file does not say)."""

    path: str
    dimensions: tuple[int, int]  # (width, height) at level 0
    level_count: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None
    vendor: str | None
    mpp_y: float | None = None

    @property
    def width(self) -> int:
        return self.dimensions[0]

    @property
    def height(self) -> int:
        return self.dimensions[1]

    def mpp_at_level(self, level: int) -> float | None:
        """Microns per pixel (x) at ``level``; None without an MPP."""
        if self.mpp is None:
            return None
        return self.mpp * self.level_downsamples[level]


@dataclass(frozen=True)
class TissueMask:
    """Boolean tissue mask of shape (H, W) covering the slide at ``downsample`` (level-0
    pixels per mask pixel)."""

    mask: np.ndarray
    downsample: float
    slide_dimensions: tuple[int, int]

    @property
    def tissue_fraction(self) -> float:
        return float(self.mask.sum()) / self.mask.size if self.mask.size else 0.0

    def tissue_fraction_at(self, x: int, y: int, width: int, height: int) -> float:
        """Fraction of tissue over the level-0 box ``[x, x+width) x [y, y+height)``; mask
        pixels outside the mask count as background (0)."""
        ds = self.downsample
        mx, my = int(x / ds), int(y / ds)
        mw, mh = max(1, int(width / ds)), max(1, int(height / ds))
        h_mask, w_mask = self.mask.shape
        x0, y0 = max(0, mx), max(0, my)
        x1, y1 = min(mx + mw, w_mask), min(my + mh, h_mask)
        if x1 <= x0 or y1 <= y0:
            return 0.0
        return float(self.mask[y0:y1, x0:x1].sum()) / (mw * mh)

    def contains_tissue(self, x: int, y: int, width: int, height: int,
                        threshold: float = 0.4) -> bool:
        return self.tissue_fraction_at(x, y, width, height) >= threshold


@dataclass(frozen=True)
class PatchCoordinate:
    """Where a patch comes from: ``x, y`` level-0 top left, ``patch_size`` pixels at
    ``level`` (the square read there), ``mpp`` the achieved microns per pixel of the emitted
    image. ``output_size`` is the emitted side when the read is resampled (``target_mpp``,
    continuous magnification); None means the image is ``patch_size`` as read."""

    x: int
    y: int
    level: int
    patch_size: int
    mpp: float | None
    slide_path: str
    output_size: int | None = None

    @property
    def out_size(self) -> int:
        return self.output_size if self.output_size is not None else self.patch_size


@dataclass(frozen=True)
class SlideMetadata:
    """Dataset metadata of a slide (filled by a ``DatasetAdapter``)."""

    slide_path: str
    dataset_name: str = "unknown"
    patient_id: str | None = None
    tissue_type: str | None = None
    cancer_type: str | None = None
    sample_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_flat_dict(self) -> dict[str, str]:
        """Every field as a string (``extra`` as JSON, None as ""), for batch collation."""
        return {f.name: json.dumps(getattr(self, f.name)) if f.name == "extra"
                else (getattr(self, f.name) or "") for f in fields(self)}

    @classmethod
    def empty_dict(cls) -> dict[str, str]:
        return {f.name: "{}" if f.name == "extra" else "" for f in fields(cls)}


@dataclass(frozen=True)
class PatchResult:
    """One emitted patch: exactly one of ``image`` (H, W, 3) and ``views`` (name -> image)."""

    image: np.ndarray | None
    coordinate: PatchCoordinate
    tissue_fraction: float
    slide_metadata: SlideMetadata | None = None
    views: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.image is None and self.views is None:
            raise ValueError("PatchResult needs either image or views")
        if self.image is not None and self.views is not None:
            raise ValueError("PatchResult cannot have both image and views")
        if self.views is not None and not self.views:
            raise ValueError("PatchResult views must hold at least one view")


# wsistream's ``types`` path also names the slide-path resolver and the extension set (defined
# in ``sources``, which needs the storage layer).
from .sources import WSI_EXTENSIONS, resolve_slide_paths  # noqa: E402, F401
