"""Continuous magnification sampling by crop and resize (Moellers et al. 2026, "Mind the Gap:
Continuous Magnification Sampling for Pathology Foundation Models", arXiv:2601.02198)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..types import PatchCoordinate, SlideProperties, TissueMask
from .base import HasProperties, PatchSampler
from .params import check_fraction, check_int, check_num_patches, check_positive
from .positions import PositionFinder

logger = logging.getLogger(__name__)

DISTRIBUTIONS = ("uniform", "maxavg", "minmax")
GRID_SIZE = 1000  # support points of the "maxavg" and "minmax" distributions


def info_kernel(grid: np.ndarray) -> np.ndarray:
    """``K[i, j] = (min(g_i, g_j) / max(g_i, g_j)) ** 2``: how well training at ``g_j``
    serves ``g_i``."""
    lo = np.minimum.outer(grid, grid)
    hi = np.maximum.outer(grid, grid)
    result: np.ndarray = (lo / hi) ** 2
    return result


def maxavg_weights(grid: np.ndarray, a: float, b: float, lam: float) -> np.ndarray:
    """``p(x) ~ exp(Kbar(x) / lam)`` with ``Kbar(x) = integral_a^b K(x, y) dy
    = (x^3 - a^3) / (3 x^2) + x^2 (1/x - 1/b) = 4x/3 - a^3 / (3x^2) - x^2 / b``."""
    potential = 4.0 * grid / 3.0 - a ** 3 / (3.0 * grid ** 2) - grid ** 2 / b
    logits = potential / lam
    p = np.exp(logits - logits.max())
    result: np.ndarray = p / p.sum()
    return result


def minmax_weights(grid: np.ndarray) -> np.ndarray:
    """The ``p`` maximising ``min_i (K p)_i`` over the simplex (a linear program in
    ``(p, t)``: maximise ``t`` with ``K p >= t``, ``p >= 0``, ``sum p = 1``). Needs scipy
    (``pip install "wsi_streamer[patches]"``); raises ``ImportError`` without it and
    ``RuntimeError`` if the solver fails."""
    try:
        from scipy.optimize import linprog
    except ImportError:
        raise ImportError("distribution='minmax' needs scipy: "
                          'pip install "wsi_streamer[patches]"') from None
    n = grid.size
    objective = np.zeros(n + 1)
    objective[-1] = -1.0
    a_ub = np.hstack([-info_kernel(grid), np.ones((n, 1))])
    a_eq = np.append(np.ones(n), 0.0)[None, :]
    bounds = [(0.0, None)] * n + [(None, None)]
    solved: Any = linprog(objective, A_ub=a_ub, b_ub=np.zeros(n), A_eq=a_eq, b_eq=[1.0],
                          bounds=bounds, method="highs")
    if not solved.success:
        raise RuntimeError(f"minmax linear program failed: {solved.message}")
    p = np.clip(np.asarray(solved.x[:n], dtype=np.float64), 0.0, None)
    result: np.ndarray = p / p.sum()
    return result


@functools.lru_cache(maxsize=8)
def _support(distribution: str, a: float, b: float, lam: float
             ) -> tuple[np.ndarray, np.ndarray]:
    """Read-only support points and probabilities of ``distribution`` on ``[a, b]``."""
    grid = np.linspace(a, b, GRID_SIZE)
    if distribution == "uniform":
        probs = np.full(GRID_SIZE, 1.0 / GRID_SIZE)
    elif distribution == "maxavg":
        probs = maxavg_weights(grid, a, b, lam)
    else:
        probs = minmax_weights(grid)
    grid.setflags(write=False)
    probs.setflags(write=False)
    return grid, probs


def finest_level_below(props: SlideProperties, target_mpp: float) -> int:
    """The coarsest level whose mpp is <= ``target_mpp`` (so the crop is downscaled); level 0
    when none is (a mild upscale) or the slide has no mpp."""
    best = 0
    for level in range(props.level_count):
        level_mpp = props.mpp_at_level(level)
        if level_mpp is not None and level_mpp <= target_mpp:
            best = level
    return best


@dataclass
class ContinuousMagnificationSampler(PatchSampler):
    """Per draw, a target mpp from ``distribution`` over ``mpp_range`` (``"uniform"``: uniform
    on the interval; ``"maxavg"``: the entropy-regularised maximiser of average quality,
    peaked at central magnifications, flatter for larger ``lambda_maxavg``; ``"minmax"``: the
    maximiser of worst-case quality, heavier at the ends, needs scipy; both on ``GRID_SIZE``
    evenly spaced support points), then a crop: ``level`` = the coarsest with mpp <= target,
    ``patch_size = max(1, round(output_size * target / level_mpp))`` pixels there,
    ``output_size`` the emitted side, ``mpp = level_mpp * patch_size / output_size`` the
    achieved mpp (wsistream reports the target instead).

    The position is uniform over the valid positions of that crop: up to ``max_retries``
    candidates are tried in the box around the tissue, then the exact set is used, so a crop
    that fits somewhere on tissue is always placed. A target whose crop is larger than the
    slide or has no valid position counts as a failure; the iterator ends after
    ``max_consecutive_failures`` in a row, at once when the mask has no tissue (threshold > 0).
    A slide without mpp is sampled at level 0 with ``output_size`` crops (mpp None), as in
    wsistream. ``num_patches=-1`` is an endless stream. ``output_size`` is read by the pipeline
    to resize every patch."""

    output_size: int = 224
    mpp_range: tuple[float, float] = (0.25, 2.0)
    distribution: str = "uniform"
    lambda_maxavg: float = 1.0
    num_patches: int = -1
    tissue_threshold: float = 0.4
    max_retries: int = 50
    seed: int | None = None
    max_consecutive_failures: int = 100
    _support: tuple[np.ndarray, np.ndarray] | None = field(
        default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.output_size = check_int("output_size", self.output_size, minimum=1)
        if not isinstance(self.mpp_range, (tuple, list)) or len(self.mpp_range) != 2:
            raise TypeError(f"mpp_range must be a (low, high) pair, got {self.mpp_range!r}")
        a = check_positive("mpp_range", self.mpp_range[0])
        b = check_positive("mpp_range", self.mpp_range[1])
        if a >= b:
            raise ValueError(f"mpp_range must be (a, b) with 0 < a < b, got {self.mpp_range}")
        self.mpp_range = (a, b)
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, "
                             f"got {self.distribution!r}")
        self.lambda_maxavg = check_positive("lambda_maxavg", self.lambda_maxavg)
        self.num_patches = check_num_patches(self.num_patches)
        self.tissue_threshold = check_fraction("tissue_threshold", self.tissue_threshold)
        self.max_retries = check_int("max_retries", self.max_retries, minimum=1)
        self.max_consecutive_failures = check_int(
            "max_consecutive_failures", self.max_consecutive_failures, minimum=1)
        super().__init__(self.seed)
        if self.distribution != "uniform":
            self._support = _support(self.distribution, a, b, self.lambda_maxavg)

    def support(self) -> tuple[np.ndarray, np.ndarray]:
        """Support points and probabilities of the distribution (computed at construction,
        as in wsistream, so forked workers inherit them; "minmax" takes a few seconds once
        per process and range)."""
        if self._support is None:
            a, b = self.mpp_range
            self._support = _support(self.distribution, a, b, self.lambda_maxavg)
        return self._support

    def draw_mpp(self) -> float:
        """One target mpp from the distribution (uses the sampler's generator)."""
        if self.distribution == "uniform":
            return float(self._rng.uniform(*self.mpp_range))
        grid, probs = self.support()
        return float(grid[int(self._rng.choice(grid.size, p=probs))])

    def sample(self, slide: HasProperties, tissue_mask: TissueMask
               ) -> Iterator[PatchCoordinate]:
        props = slide.properties
        finder = PositionFinder(tissue_mask, props.width, props.height, self.tissue_threshold)
        if finder.hopeless:
            return
        if props.mpp is None:
            logger.warning("Slide %s has no mpp; sampling %d px crops at level 0 unscaled",
                           props.path, self.output_size)
            yield from self._unscaled(props, finder)
            return
        count = failures = 0
        while self.num_patches == -1 or count < self.num_patches:
            coord = self._draw(props, props.mpp, finder)
            if coord is None:
                failures += 1
                if failures >= self.max_consecutive_failures:
                    return
                continue
            failures = 0
            yield coord
            count += 1

    def _unscaled(self, props: SlideProperties, finder: PositionFinder
                  ) -> Iterator[PatchCoordinate]:
        """``output_size`` crops at level 0 (a slide without mpp), uniform on valid positions."""
        table = finder.table(self.output_size)
        count = 0
        while self.num_patches == -1 or count < self.num_patches:
            position = table.draw(self._rng)
            if position is None:
                return
            yield PatchCoordinate(x=position[0], y=position[1], level=0,
                                  patch_size=self.output_size, mpp=None,
                                  slide_path=props.path, output_size=self.output_size)
            count += 1

    def _draw(self, props: SlideProperties, mpp0: float,
              finder: PositionFinder) -> PatchCoordinate | None:
        """One crop at a freshly drawn target (``mpp0``: level-0 mpp), or None if that crop
        cannot be placed."""
        target = self.draw_mpp()
        level = finest_level_below(props, target)
        level_mpp = mpp0 * props.level_downsamples[level]
        crop = max(1, round(self.output_size * target / level_mpp))
        size = max(1, int(round(crop * props.level_downsamples[level])))
        position = finder.draw(size, self._rng, tries=self.max_retries)
        if position is None:
            return None
        return PatchCoordinate(x=position[0], y=position[1], level=level, patch_size=crop,
                               mpp=level_mpp * crop / self.output_size, slide_path=props.path,
                               output_size=self.output_size)
