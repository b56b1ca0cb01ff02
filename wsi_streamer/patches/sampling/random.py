"""Uniform random patches on tissue, drawn among the valid positions (no rejection)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..types import PatchCoordinate, TissueMask
from .base import HasProperties, PatchSampler, ReadPlan, coordinate, plan_read
from .params import check_fraction, check_int, check_num_patches, check_positive
from .pool import CoordinatePool, plan_grid_coordinates
from .positions import PositionFinder


@dataclass
class RandomSampler(PatchSampler):
    """Patches whose top left is uniform over the valid positions of the slide.

    A position is valid when the patch lies inside the slide and the mask's tissue fraction
    over its level-0 footprint is >= ``tissue_threshold``. Unlike wsistream (bounded rejection
    in the whole slide, which gives up on slides with little tissue), the valid positions are
    computed from the mask once per ``sample`` call, so a slide with at least one valid position
    yields its whole budget and a slide with none (no tissue, smaller than the patch) ends the
    iterator at once.

    ``patch_size`` is the emitted side. Without ``target_mpp`` the patch is read at ``level``
    as is. With it, the read follows ``plan_read``: the coarsest level whose mpp is at most the
    target, a square resampled to ``patch_size`` (``coordinate.output_size``), the emitted mpp
    within 2% of the target; a slide without mpp is read at level 0 unscaled (mpp None), as in
    wsistream. ``num_patches=-1`` is an endless stream. ``max_retries`` is validated and kept
    for compatibility; no draw is ever rejected. Raises ``ValueError`` (at the first ``next``)
    for a level the slide lacks."""

    patch_size: int = 256
    num_patches: int = -1
    level: int = 0
    target_mpp: float | None = None
    tissue_threshold: float = 0.4
    max_retries: int = 50
    seed: int | None = None

    def __post_init__(self) -> None:
        self.patch_size = check_int("patch_size", self.patch_size, minimum=1)
        self.num_patches = check_num_patches(self.num_patches)
        self.level = check_int("level", self.level, minimum=0)
        if self.target_mpp is not None:
            self.target_mpp = check_positive("target_mpp", self.target_mpp)
        self.tissue_threshold = check_fraction("tissue_threshold", self.tissue_threshold)
        self.max_retries = check_int("max_retries", self.max_retries, minimum=1)
        super().__init__(self.seed)

    def _plan(self, slide: HasProperties) -> ReadPlan:
        """How this sampler reads a patch on ``slide``."""
        return plan_read(slide.properties, self.patch_size, level=self.level,
                         target_mpp=self.target_mpp)

    def sample(self, slide: HasProperties, tissue_mask: TissueMask
               ) -> Iterator[PatchCoordinate]:
        props = slide.properties
        plan = self._plan(slide)
        finder = PositionFinder(tissue_mask, props.width, props.height, self.tissue_threshold)
        table = finder.table(plan.level0_size(props))
        count = 0
        while self.num_patches == -1 or count < self.num_patches:
            position = table.draw(self._rng)
            if position is None:
                return
            yield coordinate(plan, position[0], position[1], props.path,
                             props.level_downsamples[plan.level])
            count += 1

    def build_coordinate_pool(self, slide: HasProperties, tissue_mask: TissueMask,
                              rng: np.random.Generator) -> CoordinatePool:
        """Every non-overlapping grid position (stride = the level-0 footprint) that is valid,
        shuffled with ``rng``; truncated to ``num_patches`` unless -1."""
        plan = self._plan(slide)
        coords = plan_grid_coordinates(slide, tissue_mask, plan, self.tissue_threshold)
        return CoordinatePool(coords, rng, None if self.num_patches == -1 else self.num_patches)

