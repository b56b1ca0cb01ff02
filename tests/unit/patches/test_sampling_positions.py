"""Valid-position tables against brute force over every position of small random masks,
including non-integer and sub-pixel downsamples, masks smaller or larger than the slide and
thresholds exactly on a fraction."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from wsi_streamer.patches.sampling.mask_index import MaskIndex
from wsi_streamer.patches.sampling.positions import PositionFinder, iter_grid, position_table
from wsi_streamer.patches.types import TissueMask

DOWNSAMPLES = (1.0, 2.0, 2.5, 3.7, 0.75, 4)


def brute_force(mask: TissueMask, width: int, height: int, size: int,
                threshold: float) -> set[tuple[int, int]]:
    return {(x, y) for y in range(height - size + 1) for x in range(width - size + 1)
            if mask.tissue_fraction_at(x, y, size, size) >= threshold}


def random_case(rng: np.random.Generator) -> tuple[TissueMask, int, int, int, float]:
    width, height = (int(v) for v in rng.integers(8, 40, size=2))
    ds = DOWNSAMPLES[int(rng.integers(len(DOWNSAMPLES)))]
    mw = max(1, math.ceil(width / ds) + int(rng.integers(-2, 3)))
    mh = max(1, math.ceil(height / ds) + int(rng.integers(-2, 3)))
    tissue = rng.random((mh, mw)) < rng.uniform(0.05, 0.9)
    if rng.random() < 0.5:  # tissue only in a random window: exercises the bounding boxes
        c0, r0 = int(rng.integers(mw)), int(rng.integers(mh))
        window = np.zeros_like(tissue)
        window[r0:r0 + int(rng.integers(1, 5)), c0:c0 + int(rng.integers(1, 5))] = True
        tissue &= window
    mask = TissueMask(tissue, ds, (width, height))
    size = int(rng.integers(1, max(width, height) + 3))
    cells = max(1, int(size / ds))
    pick = int(rng.integers(4))
    threshold = (0.0, 1.0, float(rng.uniform()),
                 int(rng.integers(cells * cells + 1)) / (cells * cells))[pick]
    return mask, width, height, size, threshold


@pytest.mark.parametrize("seed", range(6))
def test_table_is_exactly_the_valid_set(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(40):
        mask, width, height, size, threshold = random_case(rng)
        expected = brute_force(mask, width, height, size, threshold)
        table = position_table(MaskIndex(mask), width, height, size, threshold)
        got = [table.position(k) for k in range(table.total)]
        assert len(got) == len(set(got)) == table.total
        assert set(got) == expected, (mask.downsample, width, height, size, threshold)


@pytest.mark.parametrize("seed", range(4))
def test_grid_is_the_valid_subset_in_row_major_order(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    for _ in range(30):
        mask, width, height, size, threshold = random_case(rng)
        stride = int(rng.integers(1, 9))
        expected = [(x, y) for y in range(0, height - size + 1, stride)
                    for x in range(0, width - size + 1, stride)
                    if mask.tissue_fraction_at(x, y, size, size) >= threshold]
        got = list(iter_grid(MaskIndex(mask), width, height, size, stride, threshold))
        assert got == expected


@pytest.mark.parametrize("tries", [0, 3, 50])
def test_every_draw_is_valid(tries: int) -> None:
    rng = np.random.default_rng(7)
    for _ in range(30):
        mask, width, height, size, threshold = random_case(rng)
        valid = brute_force(mask, width, height, size, threshold)
        finder = PositionFinder(mask, width, height, threshold)
        box = finder._candidate_box(size)  # the rejection stage's box holds every valid one
        if valid:
            assert box is not None
            assert all(box[0] <= x <= box[1] and box[2] <= y <= box[3] for x, y in valid)
        for _ in range(20):
            # a nearby size too, to go through the shared-footprint table
            for s in (size, size + 1):
                found = finder.draw(s, rng, tries=tries)
                if s == size:
                    assert (found is None) == (not valid)
                if found is not None:
                    x, y = found
                    assert 0 <= x <= width - s and 0 <= y <= height - s
                    assert mask.tissue_fraction_at(x, y, s, s) >= threshold


@pytest.mark.parametrize("tries", [0, 2])
def test_draws_are_uniform_over_valid_positions(tries: int) -> None:
    # 12x12 slide, ds 2, tissue in two cells of unequal weight near the border
    grid = np.zeros((6, 6), dtype=bool)
    grid[0, 0] = grid[5, 3] = True
    mask = TissueMask(grid, 2.0, (12, 12))
    size = 2
    valid = brute_force(mask, 12, 12, size, 0.5)
    assert len(valid) == 6  # the second cell is clipped by the slide edge (y <= 10)
    finder = PositionFinder(mask, 12, 12, 0.5)
    rng = np.random.default_rng(11)
    counts = Counter(finder.draw(size, rng, tries=tries) for _ in range(6000))
    assert set(counts) == valid
    assert all(800 <= n <= 1200 for n in counts.values()), counts


def test_no_tissue_and_oversized_footprints_have_no_position() -> None:
    empty = TissueMask(np.zeros((10, 10), dtype=bool), 4.0, (40, 40))
    finder = PositionFinder(empty, 40, 40, 0.4)
    assert finder.hopeless
    assert finder.draw(8, np.random.default_rng(0), tries=5) is None
    full = TissueMask(np.ones((10, 10), dtype=bool), 4.0, (40, 40))
    assert position_table(MaskIndex(full), 40, 40, 41, 0.4).total == 0
    assert position_table(MaskIndex(full), 40, 40, 40, 0.4).total == 1
    assert PositionFinder(full, 40, 40, 0.4).draw(41, np.random.default_rng(0)) is None


def test_position_out_of_range_raises() -> None:
    full = TissueMask(np.ones((4, 4), dtype=bool), 1.0, (4, 4))
    table = position_table(MaskIndex(full), 4, 4, 2, 0.5)
    assert table.total == 9
    with pytest.raises(IndexError):
        table.position(9)


def test_shared_footprint_size_is_the_smallest_with_that_footprint() -> None:
    for ds in DOWNSAMPLES:
        mask = TissueMask(np.ones((8, 8), dtype=bool), ds, (64, 64))
        finder = PositionFinder(mask, 64, 64, 0.4)
        for size in range(1, 60):
            base = finder._base_size(size)
            assert base <= size
            assert finder.index.footprint(base) == finder.index.footprint(size)
            assert base == 1 or finder.index.footprint(base - 1) < finder.index.footprint(size)


def test_summed_area_table_counts_every_prefix() -> None:
    from wsi_streamer.patches.sampling.mask_index import summed_area_table

    rng = np.random.default_rng(9)
    for shape in ((0, 0), (0, 5), (1, 1), (1, 7), (6, 1), (37, 53)):
        mask = rng.random(shape) > 0.5
        sat = summed_area_table(mask)
        want = np.zeros((shape[0] + 1, shape[1] + 1), dtype=np.int64)
        want[1:, 1:] = mask.astype(np.int64).cumsum(axis=0).cumsum(axis=1)
        assert sat.shape == want.shape and np.array_equal(sat, want), shape
