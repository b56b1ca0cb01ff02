"""Finite coordinate pools for ``replacement="without_replacement"`` (wsistream's
``CoordinatePool`` and ``MultiLevelCoordinatePool``, same constructor arguments).

A pool is shuffled once when built and consumed by ``pop`` without repeats; ``reshuffled``
gives the pool of the next cycle: the same candidates, full again, in a new order. Pools are
not thread-safe (one consumer). The grid helpers list the candidates a sampler's pool holds."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from typing import Generic, TypeVar

import numpy as np

from ..types import PatchCoordinate, TissueMask
from .base import HasProperties, ReadPlan, coordinate, plan_read
from .mask_index import MaskIndex
from .positions import iter_grid

K = TypeVar("K", bound=Hashable)


def _order(n: int, rng: np.random.Generator, avoid: Sequence[int] | None,
           draws: int | None = None) -> tuple[list[int], int]:
    """A random permutation of ``range(n)``, different from ``avoid`` whenever ``n > 1``, and
    the number of permutations drawn for it; with ``draws``, the ``draws``-th permutation of
    ``rng`` (a recorded order rebuilt without its predecessor, ``PatchPipeline`` resume)."""
    order = [int(i) for i in rng.permutation(n)]
    count = 1
    while (count < draws if draws is not None
           else n > 1 and avoid is not None and order == list(avoid)):
        order = [int(i) for i in rng.permutation(n)]
        count += 1
    return order, count


class CoordinatePool:
    """``coordinates`` in a random order; with ``max_size`` a uniformly random subset of that
    size (shuffle, then truncate). ``pop`` ignores its ``rng`` (the order is fixed when built).

    ``reshuffled(rng)`` is a new pool over the same ``coordinates`` in a different order (for
    more than one coordinate); when ``max_size`` truncates, the next cycle is a fresh subset, as
    wsistream's rebuild gives."""

    __slots__ = ("_all", "_max_size", "_order", "_coords", "_total", "draws")

    def __init__(self, coordinates: Sequence[PatchCoordinate], rng: np.random.Generator,
                 max_size: int | None = None, *, _avoid: Sequence[int] | None = None,
                 _draws: int | None = None) -> None:
        if max_size is not None and max_size < 0:
            raise ValueError(f"max_size must be >= 0 or None, got {max_size}")
        self._all = tuple(coordinates)
        self._max_size = max_size
        order, self.draws = _order(len(self._all), rng, _avoid, _draws)
        if max_size is not None:
            order = order[:max_size]
        self._order = order
        self._coords: deque[PatchCoordinate] = deque(self._all[i] for i in order)
        self._total = len(self._coords)

    def pop(self, rng: np.random.Generator) -> PatchCoordinate | None:
        """The next coordinate, or None when exhausted."""
        return self._coords.popleft() if self._coords else None

    @property
    def remaining(self) -> int:
        return len(self._coords)

    @property
    def popped(self) -> int:
        """Coordinates taken so far."""
        return self._total - len(self._coords)

    @property
    def exhausted(self) -> bool:
        return not self._coords

    @property
    def total(self) -> int:
        """Coordinates the pool held when built (after ``max_size``)."""
        return self._total

    def reshuffled(self, rng: np.random.Generator) -> CoordinatePool:
        return CoordinatePool(self._all, rng, self._max_size, _avoid=self._order)

    def redrawn(self, rng: np.random.Generator, draws: int) -> CoordinatePool:
        """The pool over the same coordinates, full, in the ``draws``-th order of ``rng``."""
        return CoordinatePool(self._all, rng, self._max_size, _draws=draws)


class MultiLevelCoordinatePool(Generic[K]):
    """One shuffled pool per key (wsistream keys by pyramid level; here any hashable key,
    the samplers use their ``ReadPlan``), drawn by weight.

    Keys whose weight is <= 0 (or missing) are dropped: they are not stored and count in
    neither ``total`` nor ``remaining``. Each ``pop`` picks a key among the non-empty ones with
    the weights renormalised over them, then takes that pool's next coordinate. ``max_total``
    caps the pops (and each stored pool, which can never give more)."""

    __slots__ = ("_lists", "_weights", "_max_total", "_orders", "_pools", "_keys", "_total",
                 "_pops", "draws")

    def __init__(self, level_pools: Mapping[K, Sequence[PatchCoordinate]],
                 level_weights: Mapping[K, float], rng: np.random.Generator,
                 max_total: int | None = None, *,
                 _avoid: Mapping[K, Sequence[int]] | None = None,
                 _draws: Sequence[int] | None = None) -> None:
        if max_total is not None and max_total < 0:
            raise ValueError(f"max_total must be >= 0 or None, got {max_total}")
        self._lists = {key: tuple(coords) for key, coords in level_pools.items()
                       if level_weights.get(key, 0) > 0}
        self._weights = {key: float(level_weights[key]) for key in self._lists}
        self._max_total = max_total
        self._orders: dict[K, list[int]] = {}
        self._pools: dict[K, deque[PatchCoordinate]] = {}
        self.draws: list[int] = []  # permutations drawn per key (``CoordinatePool.draws``)
        for index, (key, coords) in enumerate(self._lists.items()):
            order, count = _order(len(coords), rng, None if _avoid is None else _avoid.get(key),
                                  None if _draws is None else _draws[index])
            self.draws.append(count)
            if max_total is not None:
                order = order[:max_total]
            self._orders[key] = order
            self._pools[key] = deque(coords[i] for i in order)
        self._keys = list(self._lists)
        self._total = sum(len(pool) for pool in self._pools.values())
        self._pops = 0

    def pop(self, rng: np.random.Generator) -> PatchCoordinate | None:
        """A coordinate from a key chosen by renormalised weight, or None when exhausted."""
        if self._max_total is not None and self._pops >= self._max_total:
            return None
        active = [key for key in self._keys if self._pools[key]]
        if not active:
            return None
        weights = np.array([self._weights[key] for key in active])
        choice = int(rng.choice(len(active), p=weights / weights.sum()))
        self._pops += 1
        return self._pools[active[choice]].popleft()

    @property
    def popped(self) -> int:
        return self._pops

    @property
    def remaining(self) -> int:
        left = sum(len(pool) for pool in self._pools.values())
        if self._max_total is not None:
            return min(self._max_total - self._pops, left)
        return left

    @property
    def exhausted(self) -> bool:
        return self.remaining <= 0

    @property
    def total(self) -> int:
        """Coordinates stored when built (zero-weight keys excluded)."""
        return self._total

    def reshuffled(self, rng: np.random.Generator) -> MultiLevelCoordinatePool[K]:
        return MultiLevelCoordinatePool(self._lists, self._weights, rng, self._max_total,
                                        _avoid=self._orders)

    def redrawn(self, rng: np.random.Generator, draws: Sequence[int]
                ) -> MultiLevelCoordinatePool[K]:
        """Full again, key ``i`` in the ``draws[i]``-th order of ``rng``."""
        return MultiLevelCoordinatePool(self._lists, self._weights, rng, self._max_total,
                                        _draws=draws)


def plan_grid_coordinates(slide: HasProperties, tissue_mask: TissueMask, plan: ReadPlan,
                          threshold: float) -> list[PatchCoordinate]:
    """Row-major coordinates of ``plan`` on the non-overlapping grid of its level-0 footprint
    (stride = footprint, from 0) whose tissue fraction is >= ``threshold``."""
    props = slide.properties
    size = plan.level0_size(props)
    positions = iter_grid(MaskIndex(tissue_mask), props.width, props.height, size, size,
                          threshold)
    return [coordinate(plan, x, y, props.path) for x, y in positions]


def enumerate_grid_coordinates(slide: HasProperties, tissue_mask: TissueMask, level: int,
                               patch_size: int, tissue_threshold: float
                               ) -> list[PatchCoordinate]:
    """wsistream's helper: the valid non-overlapping grid positions of a native
    ``patch_size`` patch at ``level``. Raises ``ValueError`` for a level the slide lacks."""
    plan = plan_read(slide.properties, patch_size, level=level)
    return plan_grid_coordinates(slide, tissue_mask, plan, tissue_threshold)
