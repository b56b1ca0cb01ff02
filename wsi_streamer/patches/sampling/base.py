"""The sampler contract and the rule that turns a target resolution into a read.

``PatchSampler.sample(slide, mask)`` yields ``PatchCoordinate``s; ``slide`` is anything with
``properties`` (a ``SlideProperties``), such as ``SlideHandle``. Samplers that support
``replacement="without_replacement"`` also implement ``build_coordinate_pool``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ...slide.region import dct_factor, dct_origin
from ..rng import Randomizable
from ..types import PatchCoordinate, SlideProperties, TissueMask

MPP_TOLERANCE = 0.02  # a native level within 2% of the target is used as is


class HasProperties(Protocol):
    @property
    def properties(self) -> SlideProperties: ...


class CoordinatePoolLike(Protocol):
    """A finite, shuffled set of coordinates consumed without repeats."""

    @property
    def exhausted(self) -> bool: ...
    @property
    def total(self) -> int: ...
    def pop(self, rng: np.random.Generator) -> PatchCoordinate | None: ...
    def reshuffled(self, rng: np.random.Generator) -> CoordinatePoolLike:
        """The same coordinate set, full again, in a new order (the next cycle)."""
        ...
    # Resumable pools (``PatchPipeline.state_dict``) also have ``popped`` (coordinates
    # taken), ``draws`` (permutations drawn for the order) and ``redrawn(rng, draws)``.


class PatchSampler(Randomizable, ABC):
    """Yields coordinates for one slide; its generator (``_rng``) is reseeded by the pipeline."""

    @abstractmethod
    def sample(self, slide: HasProperties, tissue_mask: TissueMask
               ) -> Iterator[PatchCoordinate]: ...

    def build_coordinate_pool(self, slide: HasProperties, tissue_mask: TissueMask,
                              rng: np.random.Generator) -> CoordinatePoolLike:
        raise TypeError(f"{type(self).__name__} does not support "
                        "replacement='without_replacement'")

    @classmethod
    def supports_pool(cls) -> bool:
        return cls.build_coordinate_pool is not PatchSampler.build_coordinate_pool


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """How to read a patch of ``output_size`` pixels: a ``read_size`` square at ``level``,
    resampled when the two differ. ``mpp`` is the achieved microns per pixel (x) or None."""

    level: int
    read_size: int
    output_size: int
    mpp: float | None

    def level0_size(self, props: SlideProperties) -> int:
        """Side of the patch in level-0 pixels."""
        return max(1, int(round(self.read_size * props.level_downsamples[self.level])))


def plan_read(props: SlideProperties, output_size: int, *, level: int = 0,
              target_mpp: float | None = None, mpp_tolerance: float = MPP_TOLERANCE) -> ReadPlan:
    """The read for an ``output_size`` patch at ``target_mpp`` (or native at ``level``).

    With a target: the coarsest level whose mpp is at most ``target * (1 + tolerance)``; if that
    level is within the tolerance it is read as is, else a ``round(output_size * target /
    level_mpp)`` square is read there and resampled to ``output_size`` (so the emitted mpp is
    within 2% of the target whatever the scanner's levels). A slide without MPP is read at
    level 0 unscaled (mpp None). Raises ``ValueError`` for a level the slide lacks."""
    if not 0 <= level < props.level_count:
        raise ValueError(f"level {level} not in 0..{props.level_count - 1}")
    if target_mpp is None or props.mpp is None:
        lvl = level if target_mpp is None else 0
        return ReadPlan(lvl, output_size, output_size, props.mpp_at_level(lvl))
    chosen = 0
    for lvl in range(props.level_count):
        lvl_mpp = props.mpp_at_level(lvl)
        if lvl_mpp is not None and lvl_mpp <= target_mpp * (1 + mpp_tolerance):
            chosen = lvl if lvl_mpp >= (props.mpp_at_level(chosen) or 0) else chosen
    lvl_mpp = props.mpp_at_level(chosen) or props.mpp
    if abs(lvl_mpp - target_mpp) <= mpp_tolerance * target_mpp:
        return ReadPlan(chosen, output_size, output_size, lvl_mpp)
    read = max(1, int(round(output_size * target_mpp / lvl_mpp)))
    return ReadPlan(chosen, read, output_size, lvl_mpp * read / output_size)


def coordinate(plan: ReadPlan, x: int, y: int, slide_path: str,
               downsample: float | None = None) -> PatchCoordinate:
    """The ``PatchCoordinate`` of a plan placed at level-0 ``(x, y)``; with the level's
    ``downsample``, a read 2, 4 or 8 times its output is moved onto that factor's grid of the
    level (``slide.region.dct_origin``: at most factor - 1 level pixels up and left), where it
    decodes in the DCT domain, and the coordinate reported is the one read."""
    factor = dct_factor(plan.read_size, plan.read_size, (plan.output_size,) * 2)
    if downsample is not None and factor > 1:
        x, y = dct_origin(downsample, int(x), int(y), factor)
    return PatchCoordinate(x=int(x), y=int(y), level=plan.level, patch_size=plan.read_size,
                           mpp=plan.mpp, slide_path=slide_path,
                           output_size=None if plan.output_size == plan.read_size
                           else plan.output_size)


def describe(component: Any) -> str:
    """A stable text of a component's configuration (class + sorted public attributes)."""
    attrs = {k: v for k, v in sorted(vars(component).items()) if not k.startswith("_")}
    return f"{type(component).__name__}({attrs!r})"


# wsistream's ``sampling.base`` path also names the coordinate pools (defined in ``pool``,
# which imports this module's names above: imported last).
from .pool import (  # noqa: E402
    CoordinatePool,
    MultiLevelCoordinatePool,
    enumerate_grid_coordinates,
)

__all__ = ["CoordinatePool", "CoordinatePoolLike", "HasProperties", "MultiLevelCoordinatePool",
           "PatchSampler", "ReadPlan", "coordinate", "describe", "enumerate_grid_coordinates",
           "plan_read"]
