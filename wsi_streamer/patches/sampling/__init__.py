"""Patch samplers: where on a slide patches are read (wsistream's samplers, same arguments)."""

from .base import (
    CoordinatePoolLike,
    HasProperties,
    PatchSampler,
    ReadPlan,
    coordinate,
    plan_read,
)
from .continuous import ContinuousMagnificationSampler
from .grid import GridSampler
from .multi import MultiMagnificationSampler
from .pool import CoordinatePool, MultiLevelCoordinatePool, enumerate_grid_coordinates
from .random import RandomSampler

__all__ = [
    "ContinuousMagnificationSampler",
    "CoordinatePool",
    "CoordinatePoolLike",
    "GridSampler",
    "HasProperties",
    "MultiLevelCoordinatePool",
    "MultiMagnificationSampler",
    "PatchSampler",
    "RandomSampler",
    "ReadPlan",
    "coordinate",
    "enumerate_grid_coordinates",
    "plan_read",
]
