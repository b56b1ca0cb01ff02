"""CoordinatePool and MultiLevelCoordinatePool: no repeats, truncation, weights, and
``reshuffled`` (the same set in another order)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from wsi_streamer.patches.sampling import CoordinatePool, MultiLevelCoordinatePool
from wsi_streamer.patches.sampling.base import CoordinatePoolLike
from wsi_streamer.patches.types import PatchCoordinate


def coords(n: int, level: int = 0) -> list[PatchCoordinate]:
    return [PatchCoordinate(x=256 * i, y=0, level=level, patch_size=256, mpp=None,
                            slide_path="mem://pool.svs") for i in range(n)]


def drain(pool: CoordinatePoolLike, rng: np.random.Generator) -> list[PatchCoordinate]:
    out = []
    while not pool.exhausted:
        coord = pool.pop(rng)
        assert coord is not None
        out.append(coord)
    assert pool.pop(rng) is None
    return out


def test_pool_pops_each_coordinate_once_and_reshuffles() -> None:
    rng = np.random.default_rng(0)
    items = coords(50)
    pool = CoordinatePool(items, rng)
    assert pool.total == pool.remaining == 50
    first = drain(pool, rng)
    assert len(set(first)) == 50 and set(first) == set(items) and first != items
    assert pool.exhausted and pool.remaining == 0 and pool.total == 50
    again = pool.reshuffled(rng)
    second = drain(again, rng)
    assert set(second) == set(first) and second != first and again.total == 50


def test_reshuffled_always_changes_the_order() -> None:
    rng = np.random.default_rng(1)
    pool = CoordinatePool(coords(2), rng)
    for _ in range(20):
        nxt = pool.reshuffled(rng)
        assert drain(nxt, rng) != drain(pool, rng)
        pool = nxt
    single = CoordinatePool(coords(1), rng)
    assert drain(single.reshuffled(rng), rng) == coords(1)
    assert CoordinatePool([], rng).exhausted


def test_max_size_takes_a_random_subset_and_a_fresh_one_next_cycle() -> None:
    rng = np.random.default_rng(2)
    items = coords(100)
    pool = CoordinatePool(items, rng, max_size=10)
    first = drain(pool, rng)
    assert pool.total == 10 and len(set(first)) == 10 and set(first) <= set(items)
    second = drain(pool.reshuffled(rng), rng)
    assert len(set(second)) == 10 and set(second) != set(first)
    with pytest.raises(ValueError, match="max_size"):
        CoordinatePool(items, rng, max_size=-1)


def test_multilevel_pool_weights_drop_and_cap() -> None:
    rng = np.random.default_rng(3)
    pools = {0: coords(300, 0), 1: coords(300, 1), 2: coords(300, 2)}
    pool = MultiLevelCoordinatePool(pools, {0: 3.0, 1: 1.0, 2: 0.0}, rng)
    assert pool.total == 600  # the zero-weight key is dropped
    head = [pool.pop(rng) for _ in range(200)]
    levels = Counter(c.level for c in head if c is not None)
    assert 2 not in levels and 125 <= levels[0] <= 175  # 3:1
    rest = drain(pool, rng)
    everything = head + rest
    assert len(everything) == 600 and len(set(everything)) == 600
    capped = MultiLevelCoordinatePool(pools, {0: 1.0, 1: 1.0}, rng, max_total=7)
    got = drain(capped, rng)
    assert len(got) == 7 and capped.remaining == 0 and capped.exhausted


def test_multilevel_pool_falls_back_to_non_empty_keys_and_reshuffles() -> None:
    rng = np.random.default_rng(4)
    pools = {"a": coords(3, 0), "b": coords(40, 1)}
    pool = MultiLevelCoordinatePool(pools, {"a": 100.0, "b": 1.0}, rng)
    first = drain(pool, rng)
    assert len(first) == 43 and len(set(first)) == 43
    assert {c.level for c in first[:3]} == {0}  # "a" dominates while it lasts
    second = drain(pool.reshuffled(rng), rng)
    assert set(second) == set(first) and second != first
