"""GridSampler: row-major, deterministic, tissue-thresholded, stride at the patch's level."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from wsi_streamer.patches.sampling import GridSampler
from wsi_streamer.patches.types import SlideProperties, TissueMask


@dataclass
class FakeSlide:
    properties: SlideProperties


def make_slide(width: int, height: int) -> FakeSlide:
    downsamples = (1.0, 4.0)
    dims = tuple((int(width / d), int(height / d)) for d in downsamples)
    return FakeSlide(SlideProperties("mem://grid.svs", (width, height), 2, dims, downsamples,
                                     0.5, "fake"))


def expected_grid(mask: TissueMask, width: int, height: int, size: int, stride: int,
                  threshold: float) -> list[tuple[int, int]]:
    return [(x, y) for y in range(0, height - size + 1, stride)
            for x in range(0, width - size + 1, stride)
            if mask.tissue_fraction_at(x, y, size, size) >= threshold]


@pytest.mark.parametrize(("patch_size", "level", "stride"), [
    (256, 0, None), (256, 0, 128), (100, 0, 37), (64, 1, None), (64, 1, 16),
])
def test_grid_is_row_major_and_thresholded(patch_size: int, level: int,
                                           stride: int | None) -> None:
    slide = make_slide(3000, 2200)
    rng = np.random.default_rng(patch_size + level)
    mask = TissueMask(rng.random((220, 300)) < 0.45, 10.0, (3000, 2200))
    sampler = GridSampler(patch_size=patch_size, level=level, stride=stride,
                          tissue_threshold=0.4)
    coords = list(sampler.sample(slide, mask))
    ds = 4 if level else 1
    size, step = patch_size * ds, (stride or patch_size) * ds
    assert [(c.x, c.y) for c in coords] == expected_grid(mask, 3000, 2200, size, step, 0.4)
    assert coords and [(c.y, c.x) for c in coords] == sorted((c.y, c.x) for c in coords)
    assert all(c.level == level and c.patch_size == patch_size and c.out_size == patch_size
               and c.mpp == 0.5 * ds for c in coords)
    assert coords == list(sampler.sample(slide, mask))  # deterministic


def test_threshold_zero_gives_the_full_grid_and_empty_mask_nothing() -> None:
    slide = make_slide(1000, 600)
    empty = TissueMask(np.zeros((60, 100), dtype=bool), 10.0, (1000, 600))
    full_grid = list(GridSampler(patch_size=200, tissue_threshold=0.0).sample(slide, empty))
    assert [(c.x, c.y) for c in full_grid] == [(x, y) for y in (0, 200, 400)
                                                for x in (0, 200, 400, 600, 800)]
    assert list(GridSampler(patch_size=200).sample(slide, empty)) == []
    assert list(GridSampler(patch_size=2000, tissue_threshold=0.0).sample(slide, empty)) == []


@pytest.mark.parametrize(("kwargs", "error", "name"), [
    ({"patch_size": 0}, ValueError, "patch_size"),
    ({"stride": 0}, ValueError, "stride"),
    ({"stride": 1.5}, TypeError, "stride"),
    ({"level": -1}, ValueError, "level"),
    ({"tissue_threshold": 2}, ValueError, "tissue_threshold"),
])
def test_arguments_are_checked(kwargs: dict[str, object], error: type[Exception],
                               name: str) -> None:
    with pytest.raises(error, match=name):
        GridSampler(**kwargs)  # type: ignore[arg-type]


def test_defaults_and_no_pool() -> None:
    sampler = GridSampler()
    assert (sampler.patch_size, sampler.level, sampler.stride,
            sampler.tissue_threshold) == (256, 0, None, 0.4)
    assert not GridSampler.supports_pool()
