"""Exhaustive grid sampling on tissue (deterministic, for feature extraction)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..types import PatchCoordinate, TissueMask
from .base import HasProperties, PatchSampler, coordinate, plan_read
from .mask_index import MaskIndex
from .params import check_fraction, check_int
from .positions import iter_grid


@dataclass
class GridSampler(PatchSampler):
    """Every grid position whose tissue fraction is >= ``tissue_threshold``, row-major (y
    outer, x inner, both increasing from 0), the same on every call (no randomness).

    ``patch_size`` and ``stride`` (default ``patch_size``: non-overlapping) are pixels at
    ``level``; positions are ``range(0, W - s + 1, t)`` in level-0 pixels with ``s`` and ``t``
    the patch and stride scaled by the level's downsample (rounded). Positions never overhang
    the slide. Raises ``ValueError`` (at the first ``next``) for a level the slide lacks."""

    patch_size: int = 256
    level: int = 0
    stride: int | None = None
    tissue_threshold: float = 0.4

    def __post_init__(self) -> None:
        self.patch_size = check_int("patch_size", self.patch_size, minimum=1)
        self.level = check_int("level", self.level, minimum=0)
        if self.stride is not None:
            self.stride = check_int("stride", self.stride, minimum=1)
        self.tissue_threshold = check_fraction("tissue_threshold", self.tissue_threshold)
        super().__init__(None)

    def sample(self, slide: HasProperties, tissue_mask: TissueMask
               ) -> Iterator[PatchCoordinate]:
        props = slide.properties
        plan = plan_read(props, self.patch_size, level=self.level)
        ds = props.level_downsamples[plan.level]
        stride = self.stride if self.stride is not None else self.patch_size
        stride_l0 = max(1, int(round(stride * ds)))
        size_l0 = plan.level0_size(props)
        for x, y in iter_grid(MaskIndex(tissue_mask), props.width, props.height, size_l0,
                              stride_l0, self.tissue_threshold):
            yield coordinate(plan, x, y, props.path)
