"""MultiMagnificationSampler and ContinuousMagnificationSampler: achieved resolution, the
crop rule, tissue, budgets on small or sparse slides, distributions, seeds, argument checks."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest

from wsi_streamer.patches.sampling import (
    ContinuousMagnificationSampler,
    MultiMagnificationSampler,
)
from wsi_streamer.patches.sampling import continuous as continuous_module
from wsi_streamer.patches.types import PatchCoordinate, SlideProperties, TissueMask

from .test_sampling_random import counting

TARGETS = (0.25, 0.5, 1.0, 2.0)


@dataclass
class FakeSlide:
    properties: SlideProperties


def make_slide(width: int = 20000, height: int = 16000,
               mpp: float | None = 0.25) -> FakeSlide:
    downsamples = (1.0, 4.0, 16.0)
    dims = tuple((int(width / d), int(height / d)) for d in downsamples)
    return FakeSlide(SlideProperties("mem://mag.svs", (width, height), 3, dims, downsamples,
                                     mpp, "fake"))


def make_mask(slide: FakeSlide, tissue: np.ndarray) -> TissueMask:
    w, h = slide.properties.dimensions
    return TissueMask(tissue, w / tissue.shape[1], (w, h))


def on_tissue(slide: FakeSlide, mask: TissueMask, coord: PatchCoordinate,
              threshold: float = 0.4) -> bool:
    props = slide.properties
    size = max(1, round(coord.patch_size * props.level_downsamples[coord.level]))
    inside = 0 <= coord.x <= props.width - size and 0 <= coord.y <= props.height - size
    return inside and mask.tissue_fraction_at(coord.x, coord.y, size, size) >= threshold


# --- MultiMagnificationSampler -------------------------------------------------------------

def test_multi_reads_every_target_within_two_percent() -> None:
    slide = make_slide()
    mask = make_mask(slide, np.random.default_rng(0).random((800, 1000)) < 0.6)
    sampler = MultiMagnificationSampler(patch_size=224, num_patches=400, seed=0)
    coords = list(sampler.sample(slide, mask))
    assert len(coords) == 400 and all(on_tissue(slide, mask, c) for c in coords)
    hits: Counter[float] = Counter()
    for c in coords:
        assert c.mpp is not None and c.out_size == 224
        target = min(TARGETS, key=lambda t: abs(t - (c.mpp or 0.0)))
        assert abs(c.mpp - target) <= 0.02 * target
        hits[target] += 1
    assert all(hits[t] > 60 for t in TARGETS)  # uniform weights: about 100 each
    reads = {(c.level, c.patch_size, c.output_size) for c in coords}
    assert reads == {(0, 224, None), (0, 448, 224), (1, 224, None), (1, 448, 224)}


def test_multi_weights_and_infeasible_targets() -> None:
    slide = make_slide()
    mask = make_mask(slide, np.ones((800, 1000), dtype=bool))
    only = MultiMagnificationSampler(mpp_weights=[0, 0, 1, 0], num_patches=50, seed=1)
    assert {c.mpp for c in only.sample(slide, mask)} == {1.0}
    # 2.0 um/px needs 448 px at level 1 (1792 level-0 px): larger than this slide
    small = make_slide(1500, 1500)
    small_mask = make_mask(small, np.ones((150, 150), dtype=bool))
    sampler = MultiMagnificationSampler(patch_size=224, num_patches=300, seed=2,
                                        max_consecutive_failures=1)
    coords = list(sampler.sample(small, small_mask))
    assert len(coords) == 300
    assert {round(c.mpp or 0, 2) for c in coords} == {0.25, 0.5, 1.0}


def test_multi_no_tissue_no_mpp_and_seeds() -> None:
    slide = make_slide()
    empty = make_mask(slide, np.zeros((800, 1000), dtype=bool))
    sampler, rng = counting(MultiMagnificationSampler(seed=0))
    assert list(sampler.sample(slide, empty)) == []
    # Ends at once (counted, not timed): each target is chosen and found empty once at most.
    assert rng.calls <= 2 * len(sampler.target_mpps), rng.calls
    bare = make_slide(mpp=None)
    mask = make_mask(bare, np.random.default_rng(1).random((800, 1000)) < 0.5)
    coords = list(MultiMagnificationSampler(num_patches=20, seed=0).sample(bare, mask))
    assert len(coords) == 20
    assert {(c.level, c.patch_size, c.mpp, c.output_size) for c in coords} == {
        (0, 256, None, None)}

    def run(seed: int) -> list[tuple[int, int, float | None]]:
        return [(c.x, c.y, c.mpp) for c in
                MultiMagnificationSampler(num_patches=30, seed=seed).sample(slide, mask)]

    assert run(5) == run(5) and run(5) != run(6)


def test_multi_pool_per_target_without_repeats() -> None:
    slide = make_slide(8000, 8000)
    mask = make_mask(slide, np.random.default_rng(2).random((500, 500)) < 0.6)
    sampler = MultiMagnificationSampler(patch_size=256, mpp_weights=[1, 1, 1, 1])
    rng = np.random.default_rng(0)
    pool = sampler.build_coordinate_pool(slide, mask, rng)
    got = []
    while (coord := pool.pop(rng)) is not None:
        got.append(coord)
    assert len(got) == pool.total == len(set(got)) > 0
    for key, group in itertools.groupby(sorted(got, key=lambda c: c.mpp or 0),
                                        key=lambda c: c.mpp):
        members = list(group)
        size = round(members[0].patch_size * slide.properties.level_downsamples[
            members[0].level])
        assert key is not None
        assert all(c.x % size == 0 and c.y % size == 0 for c in members)  # one grid each
        assert all(on_tissue(slide, mask, c) for c in members)
    assert {round(c.mpp or 0, 2) for c in got} == set(TARGETS)
    again = pool.reshuffled(rng)
    second = []
    while (coord := again.pop(rng)) is not None:
        second.append(coord)
    assert set(second) == set(got) and second != got
    capped = MultiMagnificationSampler(num_patches=9).build_coordinate_pool(slide, mask, rng)
    assert sum(1 for _ in iter(lambda: capped.pop(rng), None)) == 9


def test_multi_pool_targets_sharing_a_read_plan_sum_their_weights() -> None:
    """0.25, 0.251 and 0.252 um/px all read level 0 as is (within 2%): one pool, weight 3;
    1.0 reads level 1, weight 1. Pops follow 3:1 (225 of 300 expected; 150 if only the last
    target's weight counted). Deterministic given the seed; both pools stay non-empty."""
    slide = make_slide()
    mask = make_mask(slide, np.ones((800, 1000), dtype=bool))
    sampler = MultiMagnificationSampler(patch_size=256, target_mpps=[0.25, 0.251, 0.252, 1.0],
                                        mpp_weights=[1, 1, 1, 1])
    rng = np.random.default_rng(7)
    pool = sampler.build_coordinate_pool(slide, mask, rng)
    levels = Counter(pool.pop(rng).level for _ in range(300))  # type: ignore[union-attr]
    assert levels[0] + levels[1] == 300
    assert 190 <= levels[0] <= 270, levels  # 241 with this seed


@pytest.mark.parametrize(("kwargs", "error", "name"), [
    ({"target_mpps": []}, ValueError, "target_mpps"),
    ({"target_mpps": [0.5, -1.0]}, ValueError, "target_mpps"),
    ({"target_mpps": "0.5"}, TypeError, "target_mpps"),
    ({"mpp_weights": [1.0]}, ValueError, "mpp_weights"),
    ({"mpp_weights": [1.0, -1.0, 1.0, 1.0]}, ValueError, "mpp_weights"),
    ({"mpp_weights": [0, 0, 0, 0]}, ValueError, "mpp_weights"),
    ({"patch_size": 0}, ValueError, "patch_size"),
    ({"num_patches": 0}, ValueError, "num_patches"),
    ({"tissue_threshold": 1.01}, ValueError, "tissue_threshold"),
    ({"max_consecutive_failures": 0}, ValueError, "max_consecutive_failures"),
])
def test_multi_arguments_are_checked(kwargs: dict[str, object], error: type[Exception],
                                     name: str) -> None:
    with pytest.raises(error, match=name):
        MultiMagnificationSampler(**kwargs)  # type: ignore[arg-type]


# --- ContinuousMagnificationSampler --------------------------------------------------------

class ScriptedTargets(ContinuousMagnificationSampler):
    """Draws its target mpps from a fixed list (to check the crop rule exactly)."""

    script: list[float]

    def draw_mpp(self) -> float:
        return self.script.pop(0)


@pytest.mark.parametrize(("target", "level", "crop"), [
    (0.25, 0, 224), (0.3, 0, 269), (0.9, 0, 806), (1.0, 1, 224), (1.7, 1, 381),
    (3.9, 1, 874), (4.0, 2, 224), (0.2, 0, 179),
])
def test_continuous_crop_rule(target: float, level: int, crop: int) -> None:
    slide = make_slide()
    mask = make_mask(slide, np.ones((800, 1000), dtype=bool))
    sampler = ScriptedTargets(num_patches=1, mpp_range=(0.1, 5.0), seed=0)
    sampler.script = [target]
    (coord,) = list(sampler.sample(slide, mask))
    assert (coord.level, coord.patch_size, coord.output_size) == (level, crop, 224)
    level_mpp = 0.25 * (1, 4, 16)[level]
    assert coord.mpp is not None and coord.mpp == pytest.approx(level_mpp * crop / 224)
    assert abs(coord.mpp - target) <= level_mpp / 224  # within half a crop pixel


@pytest.mark.parametrize("distribution", ["uniform", "maxavg"])
def test_continuous_patches_on_tissue_in_range(distribution: str) -> None:
    slide = make_slide()
    mask = make_mask(slide, np.random.default_rng(3).random((800, 1000)) < 0.55)
    sampler = ContinuousMagnificationSampler(output_size=224, distribution=distribution,
                                             num_patches=300, seed=4)
    assert sampler.output_size == 224
    coords = list(sampler.sample(slide, mask))
    assert len(coords) == 300 and all(on_tissue(slide, mask, c) for c in coords)
    assert all(c.out_size == 224 and c.mpp is not None
               and 0.25 - 0.01 <= c.mpp <= 2.0 + 0.01 for c in coords)
    assert len({c.patch_size for c in coords}) > 50  # continuous, not a few levels


def test_continuous_sparse_tissue_gets_the_whole_budget() -> None:
    slide = make_slide()
    tissue = np.zeros((800, 1000), dtype=bool)
    rng = np.random.default_rng(5)
    for r, c in rng.integers(0, 780, size=(8, 2)):  # a few scattered 20x20 islands: ~0.4%
        tissue[r:r + 20, c:c + 20] = True
    mask = make_mask(slide, tissue)
    coords = list(ContinuousMagnificationSampler(num_patches=200, seed=6).sample(slide, mask))
    assert len(coords) == 200 and all(on_tissue(slide, mask, c) for c in coords)


def test_continuous_ends_without_tissue_or_room() -> None:
    slide = make_slide()
    empty = make_mask(slide, np.zeros((800, 1000), dtype=bool))
    sampler, rng = counting(ContinuousMagnificationSampler(seed=0))
    assert list(sampler.sample(slide, empty)) == []
    tiny = make_slide(200, 200)
    full = make_mask(tiny, np.ones((20, 20), dtype=bool))
    sampler, rng2 = counting(ContinuousMagnificationSampler(seed=0))
    assert list(sampler.sample(tiny, full)) == []
    # Counted, not timed: no tissue ends before any draw; no room ends after
    # max_consecutive_failures targets, each with at most max_retries position draws.
    assert rng.calls == 0
    assert rng2.calls <= sampler.max_consecutive_failures * (1 + sampler.max_retries)


def test_continuous_no_mpp_and_seeds() -> None:
    bare = make_slide(mpp=None)
    mask = make_mask(bare, np.random.default_rng(7).random((800, 1000)) < 0.5)
    coords = list(ContinuousMagnificationSampler(num_patches=10, seed=0).sample(bare, mask))
    assert {(c.level, c.patch_size, c.output_size, c.mpp) for c in coords} == {
        (0, 224, 224, None)}
    slide = make_slide()

    def run(seed: int) -> list[tuple[int, int, int]]:
        sampler = ContinuousMagnificationSampler(num_patches=20, seed=seed)
        return [(c.x, c.y, c.patch_size) for c in sampler.sample(slide, mask)]

    assert run(1) == run(1) and run(1) != run(2)


def test_distributions_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    uniform = ContinuousMagnificationSampler(seed=0)
    draws = np.array([uniform.draw_mpp() for _ in range(2000)])
    assert draws.min() >= 0.25 and draws.max() <= 2.0
    grid, probs = ContinuousMagnificationSampler(distribution="maxavg").support()
    assert probs.sum() == pytest.approx(1.0) and grid[0] == 0.25 and grid[-1] == 2.0
    middle = probs[(grid > 0.6) & (grid < 1.6)].sum()
    assert middle > 0.6  # peaked at central magnifications (uniform would give 0.57)
    flatter = ContinuousMagnificationSampler(distribution="maxavg", lambda_maxavg=100.0)
    assert np.ptp(flatter.support()[1]) < np.ptp(probs)
    # minmax on a coarse grid (the 1000-point program takes seconds)
    monkeypatch.setattr(continuous_module, "GRID_SIZE", 41)
    continuous_module._support.cache_clear()
    try:
        grid, probs = ContinuousMagnificationSampler(distribution="minmax").support()
        kernel = continuous_module.info_kernel(grid)
        assert grid.size == 41 and probs.sum() == pytest.approx(1.0)
        assert probs[0] + probs[-1] > 2 * probs[20]  # heavier at the ends
        assert (kernel @ probs).min() >= (kernel @ np.full(41, 1 / 41)).min() - 1e-9
    finally:
        continuous_module._support.cache_clear()


@pytest.mark.parametrize(("kwargs", "error", "name"), [
    ({"output_size": 0}, ValueError, "output_size"),
    ({"mpp_range": (2.0, 1.0)}, ValueError, "mpp_range"),
    ({"mpp_range": (0.0, 1.0)}, ValueError, "mpp_range"),
    ({"mpp_range": (0.5,)}, TypeError, "mpp_range"),
    ({"distribution": "gauss"}, ValueError, "distribution"),
    ({"lambda_maxavg": 0.0}, ValueError, "lambda_maxavg"),
    ({"num_patches": -3}, ValueError, "num_patches"),
    ({"tissue_threshold": -1}, ValueError, "tissue_threshold"),
    ({"max_retries": 0}, ValueError, "max_retries"),
    ({"max_consecutive_failures": 0}, ValueError, "max_consecutive_failures"),
])
def test_continuous_arguments_are_checked(kwargs: dict[str, object], error: type[Exception],
                                          name: str) -> None:
    with pytest.raises(error, match=name):
        ContinuousMagnificationSampler(**kwargs)  # type: ignore[arg-type]


def test_defaults_match_wsistream() -> None:
    multi = MultiMagnificationSampler()
    assert (multi.target_mpps, multi.mpp_weights, multi.patch_size, multi.num_patches,
            multi.tissue_threshold, multi.max_consecutive_failures, multi.seed) == (
        [0.25, 0.5, 1.0, 2.0], None, 256, -1, 0.4, 100, None)
    cont = ContinuousMagnificationSampler()
    assert (cont.output_size, cont.mpp_range, cont.distribution, cont.lambda_maxavg,
            cont.num_patches, cont.tissue_threshold, cont.max_retries, cont.seed,
            cont.max_consecutive_failures) == (224, (0.25, 2.0), "uniform", 1.0, -1, 0.4,
                                               50, None, 100)
    assert MultiMagnificationSampler.supports_pool()
    assert not ContinuousMagnificationSampler.supports_pool()
