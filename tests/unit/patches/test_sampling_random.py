"""RandomSampler: every coordinate on tissue, the whole budget on sparse tissue, nothing (at
once) without a valid position, seeded streams, target-mpp reads, argument checks, and its
without-replacement pool."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pytest

from wsi_streamer.patches.sampling import RandomSampler
from wsi_streamer.patches.types import PatchCoordinate, SlideProperties, TissueMask

S = TypeVar("S")


@dataclass
class FakeSlide:
    properties: SlideProperties


def make_slide(width: int = 4096, height: int = 4096, mpp: float | None = 0.25,
               downsamples: tuple[float, ...] = (1.0, 4.0, 16.0)) -> FakeSlide:
    dims = tuple((int(width / d), int(height / d)) for d in downsamples)
    return FakeSlide(SlideProperties("mem://slide.svs", (width, height), len(downsamples),
                                     dims, downsamples, mpp, "fake"))


def make_mask(slide: FakeSlide, tissue: np.ndarray) -> TissueMask:
    w, h = slide.properties.dimensions
    return TissueMask(tissue, w / tissue.shape[1], (w, h))


def footprint_ok(mask: TissueMask, coord: PatchCoordinate, slide: FakeSlide,
                 threshold: float) -> bool:
    props = slide.properties
    size = max(1, round(coord.patch_size * props.level_downsamples[coord.level]))
    inside = 0 <= coord.x <= props.width - size and 0 <= coord.y <= props.height - size
    return inside and mask.tissue_fraction_at(coord.x, coord.y, size, size) >= threshold


@pytest.mark.parametrize("seed", range(5))
def test_every_coordinate_is_on_tissue_of_random_masks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    slide = make_slide(3000, 2000)
    density = float(rng.uniform(0.1, 0.7))
    mask = make_mask(slide, rng.random((125, 187)) < density)
    threshold = density * float(rng.uniform(0.2, 0.9))
    sampler = RandomSampler(patch_size=int(rng.integers(16, 200)), num_patches=300,
                            level=int(rng.integers(2)), tissue_threshold=threshold, seed=seed)
    coords = list(sampler.sample(slide, mask))
    assert coords  # these masks always have valid positions
    assert len(coords) == 300
    assert all(footprint_ok(mask, c, slide, threshold) for c in coords)


@pytest.mark.parametrize("scattered", [False, True])
def test_one_percent_tissue_gives_the_whole_budget(scattered: bool) -> None:
    slide = make_slide(16000, 16000)  # mask 1000 x 1000 at downsample 16
    tissue = np.zeros((1000, 1000), dtype=bool)
    if scattered:  # 1% of the mask as 4x4 specks all over the slide
        rng = np.random.default_rng(3)
        for r, c in rng.integers(0, 996, size=(625, 2)):
            tissue[r:r + 4, c:c + 4] = True
    else:  # one 100 x 100 island
        tissue[700:800, 150:250] = True
    mask = make_mask(slide, tissue)
    assert mask.tissue_fraction <= 0.011
    sampler = RandomSampler(patch_size=64, num_patches=2000, seed=1)
    coords = list(sampler.sample(slide, mask))
    assert len(coords) == 2000
    assert all(footprint_ok(mask, c, slide, 0.4) for c in coords)
    assert len({(c.x, c.y) for c in coords}) > 1900  # spread out, not one repeated spot


class CountingRng:
    """Wraps a sampler's ``numpy.random.Generator`` and counts the draws asked of it, so
    "ends at once" is counted work (no rejection loop), not a time."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng, self.calls = rng, 0

    def __getattr__(self, name: str) -> object:
        attr = getattr(self.rng, name)
        if not callable(attr):
            return attr

        def counted(*args: object, **kwargs: object) -> object:
            self.calls += 1
            return attr(*args, **kwargs)
        return counted


def counting(sampler: S) -> tuple[S, CountingRng]:
    rng = CountingRng(sampler._rng)  # type: ignore[attr-defined]
    sampler._rng = rng  # type: ignore[attr-defined]
    return sampler, rng


def test_no_valid_position_ends_the_stream_at_once() -> None:
    slide = make_slide()
    empty = make_mask(slide, np.zeros((256, 256), dtype=bool))
    sampler, rng = counting(RandomSampler(seed=0))
    assert list(sampler.sample(slide, empty)) == []  # num_patches=-1
    small = make_slide(200, 150)
    full = make_mask(small, np.ones((150, 200), dtype=bool))
    sampler, rng2 = counting(RandomSampler(patch_size=256, seed=0))
    assert list(sampler.sample(small, full)) == []
    sparse = make_mask(slide, np.zeros((256, 256), dtype=bool))
    sparse.mask[0, 0] = True  # 1 of 256 pixels under a 256 px patch: under any threshold
    sampler, rng3 = counting(RandomSampler(patch_size=256, seed=0))
    assert list(sampler.sample(slide, sparse)) == []
    assert rng.calls + rng2.calls + rng3.calls == 0  # no draw: nothing to draw from


def test_infinite_stream_and_zero_threshold() -> None:
    slide = make_slide(1024, 1024)
    empty = make_mask(slide, np.zeros((64, 64), dtype=bool))
    sampler = RandomSampler(patch_size=100, tissue_threshold=0.0, seed=2)
    coords = list(itertools.islice(sampler.sample(slide, empty), 5000))
    assert len(coords) == 5000
    assert max(c.x for c in coords) <= 924 and max(c.y for c in coords) <= 924
    assert min(c.x for c in coords) < 10 and max(c.x for c in coords) > 914


def test_seeded_streams_repeat_and_differ() -> None:
    slide = make_slide()
    mask = make_mask(slide, np.random.default_rng(0).random((256, 256)) < 0.5)

    def run(seed: int) -> list[tuple[int, int]]:
        return [(c.x, c.y) for c in RandomSampler(num_patches=50, seed=seed).sample(slide, mask)]

    assert run(7) == run(7)
    assert run(7) != run(8)
    sampler = RandomSampler(num_patches=50, seed=7)
    first = [(c.x, c.y) for c in sampler.sample(slide, mask)]
    second = [(c.x, c.y) for c in sampler.sample(slide, mask)]
    assert first == run(7) and second != first  # the generator carries over between calls
    sampler.set_random_state(7)
    assert [(c.x, c.y) for c in sampler.sample(slide, mask)] == first


def test_level_and_target_mpp_reads() -> None:
    slide = make_slide()
    mask = make_mask(slide, np.ones((256, 256), dtype=bool))
    native = next(iter(RandomSampler(patch_size=224, level=1, seed=0).sample(slide, mask)))
    assert (native.level, native.patch_size, native.out_size, native.mpp) == (1, 224, 224, 1.0)
    resampled = next(iter(RandomSampler(patch_size=224, target_mpp=0.5, seed=0)
                          .sample(slide, mask)))
    assert (resampled.level, resampled.patch_size, resampled.output_size) == (0, 448, 224)
    assert resampled.mpp == pytest.approx(0.5, rel=0.02)
    coarse = next(iter(RandomSampler(patch_size=224, target_mpp=4.0, level=1, seed=0)
                       .sample(slide, mask)))
    assert (coarse.level, coarse.patch_size, coarse.output_size, coarse.mpp) == (2, 224, None, 4.0)
    no_mpp = make_slide(mpp=None)
    plain = next(iter(RandomSampler(patch_size=224, target_mpp=0.5, seed=0)
                      .sample(no_mpp, mask)))
    assert (plain.level, plain.patch_size, plain.out_size, plain.mpp) == (0, 224, 224, None)
    assert plain.slide_path == "mem://slide.svs"
    with pytest.raises(ValueError, match="level"):
        next(iter(RandomSampler(level=3).sample(slide, mask)))


@pytest.mark.parametrize(("kwargs", "error", "name"), [
    ({"patch_size": 0}, ValueError, "patch_size"),
    ({"patch_size": "256"}, TypeError, "patch_size"),
    ({"patch_size": True}, TypeError, "patch_size"),
    ({"num_patches": 0}, ValueError, "num_patches"),
    ({"num_patches": -2}, ValueError, "num_patches"),
    ({"level": -1}, ValueError, "level"),
    ({"target_mpp": 0.0}, ValueError, "target_mpp"),
    ({"tissue_threshold": 1.5}, ValueError, "tissue_threshold"),
    ({"tissue_threshold": -0.1}, ValueError, "tissue_threshold"),
    ({"tissue_threshold": float("nan")}, ValueError, "tissue_threshold"),
    ({"max_retries": 0}, ValueError, "max_retries"),
])
def test_arguments_are_checked(kwargs: dict[str, object], error: type[Exception],
                               name: str) -> None:
    with pytest.raises(error, match=name):
        RandomSampler(**kwargs)  # type: ignore[arg-type]


def test_defaults_match_wsistream() -> None:
    sampler = RandomSampler()
    assert (sampler.patch_size, sampler.num_patches, sampler.level, sampler.target_mpp,
            sampler.tissue_threshold, sampler.max_retries, sampler.seed) == (
        256, -1, 0, None, 0.4, 50, None)
    assert RandomSampler.supports_pool()


def test_pool_holds_every_valid_grid_position_once() -> None:
    slide = make_slide(2000, 1500)
    rng = np.random.default_rng(4)
    mask = make_mask(slide, rng.random((150, 200)) < 0.5)
    sampler = RandomSampler(patch_size=64, level=1, tissue_threshold=0.5)
    pool = sampler.build_coordinate_pool(slide, mask, np.random.default_rng(0))
    coords = []
    while (coord := pool.pop(rng)) is not None:
        coords.append(coord)
    assert pool.exhausted and len(coords) == pool.total
    size = 256  # 64 px at downsample 4
    expected = {(x, y) for y in range(0, 1500 - size + 1, size)
                for x in range(0, 2000 - size + 1, size)
                if mask.tissue_fraction_at(x, y, size, size) >= 0.5}
    got = [(c.x, c.y) for c in coords]
    assert len(got) == len(set(got)) and set(got) == expected and expected
    assert got != sorted(got, key=lambda p: (p[1], p[0]))  # shuffled
    assert all(c.level == 1 and c.patch_size == 64 for c in coords)
    capped = RandomSampler(patch_size=64, level=1, tissue_threshold=0.5, num_patches=5)
    assert capped.build_coordinate_pool(slide, mask, np.random.default_rng(0)).total == 5
