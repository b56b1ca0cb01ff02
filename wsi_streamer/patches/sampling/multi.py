"""Random patches at several fixed resolutions (Midnight's 0.25, 0.5, 1.0 and 2.0 um/px)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..types import PatchCoordinate, TissueMask
from .base import HasProperties, PatchSampler, ReadPlan, coordinate, plan_read
from .params import (
    check_float,
    check_fraction,
    check_int,
    check_num_patches,
    check_positive,
    check_sequence,
)
from .pool import MultiLevelCoordinatePool, plan_grid_coordinates
from .positions import PositionFinder

logger = logging.getLogger(__name__)


def _default_mpps() -> list[float]:
    return [0.25, 0.5, 1.0, 2.0]


@dataclass
class MultiMagnificationSampler(PatchSampler):
    """Per draw, a target from ``target_mpps`` (probabilities ``mpp_weights`` normalised;
    None is uniform), then a position uniform over the valid positions at that resolution
    (as ``RandomSampler``).

    Each target is read through ``plan_read``: the coarsest level whose mpp is at most the
    target, resampled to ``patch_size``, so the emitted mpp (``coordinate.mpp``) is within 2%
    of the target on any pyramid (wsistream reads the nearest level as is). A target with no
    valid position on the slide (its patch is larger than the slide, or no tissue) is dropped
    for the rest of the call and the others are renormalised, which is wsistream's retry-
    another-level behaviour without the failure count: the iterator ends exactly when no target
    has a valid position, so ``max_consecutive_failures`` (validated, kept for compatibility)
    never cuts a slide short. A slide without mpp is sampled at level 0 unscaled (mpp None) for
    every target, as in wsistream. ``num_patches=-1`` is an endless stream."""

    target_mpps: list[float] = field(default_factory=_default_mpps)
    mpp_weights: list[float] | None = None
    patch_size: int = 256
    num_patches: int = -1
    tissue_threshold: float = 0.4
    max_consecutive_failures: int = 100
    seed: int | None = None

    def __post_init__(self) -> None:
        mpps = check_sequence("target_mpps", self.target_mpps)
        self.target_mpps = [check_positive("target_mpps", m) for m in mpps]
        if self.mpp_weights is not None:
            weights = [check_float("mpp_weights", w)
                       for w in check_sequence("mpp_weights", self.mpp_weights)]
            if len(weights) != len(self.target_mpps):
                raise ValueError(f"mpp_weights length ({len(weights)}) must match "
                                 f"target_mpps length ({len(self.target_mpps)})")
            if any(w < 0 for w in weights) or sum(weights) <= 0:
                raise ValueError(f"mpp_weights must be >= 0 with a sum > 0, got {weights}")
            self.mpp_weights = weights
        self.patch_size = check_int("patch_size", self.patch_size, minimum=1)
        self.num_patches = check_num_patches(self.num_patches)
        self.tissue_threshold = check_fraction("tissue_threshold", self.tissue_threshold)
        self.max_consecutive_failures = check_int(
            "max_consecutive_failures", self.max_consecutive_failures, minimum=1)
        super().__init__(self.seed)

    def _probabilities(self) -> np.ndarray:
        """Probability of each target (sums to 1)."""
        raw = np.ones(len(self.target_mpps)) if self.mpp_weights is None \
            else np.asarray(self.mpp_weights, dtype=np.float64)
        result: np.ndarray = raw / raw.sum()
        return result

    def _plans(self, slide: HasProperties) -> list[ReadPlan]:
        """The read of each target on ``slide``."""
        props = slide.properties
        if props.mpp is None:
            logger.warning("Slide %s has no mpp; sampling every target at level 0 unscaled",
                           props.path)
        return [plan_read(props, self.patch_size, target_mpp=m) for m in self.target_mpps]

    def sample(self, slide: HasProperties, tissue_mask: TissueMask
               ) -> Iterator[PatchCoordinate]:
        props = slide.properties
        plans = self._plans(slide)
        finder = PositionFinder(tissue_mask, props.width, props.height, self.tissue_threshold,
                                cache_size=max(128, len(plans)))
        weights = self._probabilities()
        count = 0
        while self.num_patches == -1 or count < self.num_patches:
            total = weights.sum()
            if total <= 0:
                return
            index = int(self._rng.choice(len(weights), p=weights / total))
            plan = plans[index]
            position = finder.table(plan.level0_size(props)).draw(self._rng)
            if position is None:
                weights[index] = 0.0
                continue
            yield coordinate(plan, position[0], position[1], props.path)
            count += 1

    def build_coordinate_pool(self, slide: HasProperties, tissue_mask: TissueMask,
                              rng: np.random.Generator) -> MultiLevelCoordinatePool[ReadPlan]:
        """One pool per distinct read plan (targets resolving to the same plan merge their
        weights), each of the valid non-overlapping grid positions of that plan's footprint;
        pops pick a non-empty pool by renormalised weight; capped at ``num_patches`` unless -1.
        """
        pools: dict[ReadPlan, list[PatchCoordinate]] = {}
        weights: dict[ReadPlan, float] = {}
        for plan, weight in zip(self._plans(slide), self._probabilities().tolist(), strict=True):
            if plan not in pools:
                pools[plan] = plan_grid_coordinates(slide, tissue_mask, plan,
                                                    self.tissue_threshold)
            weights[plan] = weights.get(plan, 0.0) + weight
        max_total = None if self.num_patches == -1 else self.num_patches
        return MultiLevelCoordinatePool(pools, weights, rng, max_total)
