"""Views: RandomResizedCrop, ViewConfig validation, name expansion, validate/apply/reseed."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from wsi_streamer.patches.rng import reseed
from wsi_streamer.patches.transforms import ComposeTransforms, HEDColorAugmentation
from wsi_streamer.patches.views import (
    RESERVED_BATCH_KEYS,
    CropParams,
    RandomResizedCrop,
    ViewConfig,
    apply_views,
    expand_view_names,
    reseed_views,
    validate_views,
)


@pytest.fixture
def patch() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)


def seq(n: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(n)


def invert(image: np.ndarray) -> np.ndarray:
    return np.asarray(255 - image, dtype=np.uint8)


# --- RandomResizedCrop ---------------------------------------------------------------------

def test_crop_params_respect_scale_and_ratio(patch: np.ndarray) -> None:
    crop = RandomResizedCrop(32, scale=(0.2, 0.5), ratio=(0.75, 4 / 3), seed=1)
    for _ in range(50):
        p = crop.sample_params(patch)
        assert 0 <= p.x and p.x + p.width <= 64 and 0 <= p.y and p.y + p.height <= 64
        area = p.width * p.height / 64**2
        assert 0.2 - 0.05 <= area <= 0.5 + 0.05
        assert 0.75 - 0.1 <= p.width / p.height <= 4 / 3 + 0.1
    out = crop(patch)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_crop_aspect_ratio_is_log_uniform() -> None:
    """torchvision draws ``log(aspect)`` uniformly in ``log(ratio)``: with ratio (1/10, 10),
    half the windows are wider than tall and a quarter have log(aspect) below -log(10)/2. A
    uniform draw in (0.1, 10) would give 91% wider and 2% in that quarter. A small area on a
    large image so every first try fits (no fallback); 2000 draws, fixed seed."""
    image = np.zeros((1000, 1000, 3), np.uint8)
    crop = RandomResizedCrop(8, scale=(0.01, 0.01), ratio=(0.1, 10.0), seed=0)
    logs = np.log([p.width / p.height for p in (crop.sample_params(image)
                                                 for _ in range(2000))])
    assert np.abs(logs).max() <= np.log(10) + 0.05
    assert 0.45 <= np.mean(logs > 0) <= 0.55, np.mean(logs > 0)
    assert 0.20 <= np.mean(logs < -np.log(10) / 2) <= 0.30
    assert abs(np.mean(logs)) < 0.15


def test_crop_apply_params_is_the_window(patch: np.ndarray) -> None:
    crop = RandomResizedCrop(16, scale=(1.0, 1.0))
    params = CropParams(x=8, y=4, width=16, height=16)
    assert np.array_equal(crop.apply_params(patch, params), patch[4:20, 8:24])
    assert crop.sample_params(patch) == CropParams(0, 0, 64, 64)


def test_crop_falls_back_to_centre(patch: np.ndarray) -> None:
    wide = np.zeros((10, 100, 3), dtype=np.uint8)
    crop = RandomResizedCrop(8, scale=(0.9, 1.0), ratio=(1.0, 1.0), seed=0)
    assert crop.sample_params(wide) == CropParams(45, 0, 10, 10)


def test_crop_reproducible_under_reseed_and_deepcopy(patch: np.ndarray) -> None:
    crop = RandomResizedCrop(24, scale=(0.1, 0.9))
    reseed(crop, seq(5))
    first = [crop.sample_params(patch) for _ in range(5)]
    reseed(crop, seq(5))
    assert [crop.sample_params(patch) for _ in range(5)] == first
    reseed(crop, seq(6))
    assert [crop.sample_params(patch) for _ in range(5)] != first
    seeded = RandomResizedCrop(24, scale=(0.1, 0.9), seed=3)
    clone = copy.deepcopy(seeded)
    assert clone.rng is not seeded.rng
    from_clone = clone.sample_params(patch)
    clone.sample_params(patch)
    assert seeded.sample_params(patch) == from_clone


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"size": 0, "scale": (0.5, 1.0)}, "size"),
    ({"size": 8, "scale": (0.0, 1.0)}, "scale"),
    ({"size": 8, "scale": (0.6, 0.5)}, "scale"),
    ({"size": 8, "scale": (0.5, 1.2)}, "scale"),
    ({"size": 8, "scale": (0.5, 1.0), "ratio": (2.0, 1.0)}, "ratio"),
    ({"size": 8, "scale": (0.5, 1.0), "ratio": (0.0, 1.0)}, "ratio"),
])
def test_crop_validation(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        RandomResizedCrop(**kwargs)  # type: ignore[arg-type]


def test_crop_rejects_empty_image() -> None:
    with pytest.raises(ValueError, match="positive"):
        RandomResizedCrop(8, scale=(0.5, 1.0)).sample_params(np.zeros((0, 4, 3), np.uint8))


# --- ViewConfig and names ------------------------------------------------------------------

def test_expand_view_names() -> None:
    views = [ViewConfig("global", transforms=invert, count=2), ViewConfig("full"),
             ViewConfig("local", crop=RandomResizedCrop(8, (0.1, 0.3)), count=3)]
    assert expand_view_names(views) == ["global_0", "global_1", "full", "local_0", "local_1",
                                        "local_2"]
    assert expand_view_names([]) == []


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"name": ""}, "name"),
    ({"name": "a", "count": 0}, "count"),
    ({"name": "a", "count": 1.5}, "count"),
    ({"name": "a", "mpp_override": 0.0}, "mpp_override"),
    ({"name": "a", "mpp_override": -1.0}, "mpp_override"),
    ({"name": "a", "patch_size_override": 64}, "patch_size_override requires mpp_override"),
    ({"name": "a", "mpp_override": 1.0, "patch_size_override": 0}, "patch_size_override"),
    ({"name": "a", "transforms": 3}, "transforms"),
    ({"name": "a", "crop": "crop"}, "crop"),
])
def test_view_config_validation(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises((ValueError, TypeError), match=name):
        ViewConfig(**kwargs)  # type: ignore[arg-type]


def test_identical_copies_warn() -> None:
    with pytest.warns(UserWarning, match="identical"):
        ViewConfig("same", count=2)


# --- validate_views -------------------------------------------------------------------------

def test_validate_views_accepts_and_returns_names() -> None:
    views = [ViewConfig("a"), ViewConfig("b", transforms=invert, count=2)]
    assert validate_views(views, None, invert) == ["a", "b_0", "b_1"]
    assert validate_views(None, invert, None) == []


@pytest.mark.parametrize(("views", "transforms", "shared", "message"), [
    ([ViewConfig("a")], invert, None, "mutually exclusive"),
    (None, None, invert, "shared_transforms requires views"),
    ([], None, None, "at least one"),
    ([ViewConfig("a"), ViewConfig("a")], None, None, "unique"),
    ([ViewConfig("a_0"), ViewConfig("a", transforms=invert, count=2)], None, None, "unique"),
    ([ViewConfig("image")], None, None, "reserved"),
    ([ViewConfig("mpp", transforms=invert)], None, None, "reserved"),
    ([ViewConfig("a"), ViewConfig("low", mpp_override=2.0)], None, invert, "mpp_override"),
])
def test_validate_views_errors(views: list[ViewConfig] | None, transforms: object,
                               shared: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_views(views, transforms, shared)


def test_validate_views_type_and_reserved_set() -> None:
    with pytest.raises(TypeError, match=r"views\[0\]"):
        validate_views(["a"], None, None)  # type: ignore[list-item]
    assert {"image", "x", "y", "level", "patch_size", "slide_path", "mpp", "tissue_fraction",
            "dataset_name", "patient_id", "tissue_type", "cancer_type", "sample_type",
            "extra"} == RESERVED_BATCH_KEYS


# --- apply_views ------------------------------------------------------------------------------

def test_apply_views_order_shared_once_and_copies(patch: np.ndarray) -> None:
    shared_calls: list[int] = []

    def shared(image: np.ndarray) -> np.ndarray:
        shared_calls.append(1)
        return invert(image)

    views = [ViewConfig("plain"), ViewConfig("crops", crop=RandomResizedCrop(16, (0.2, 0.5),
                                                                             seed=1), count=3)]
    out = apply_views(views, patch, shared, lambda view: pytest.fail("no override read"))
    assert list(out) == ["plain", "crops_0", "crops_1", "crops_2"]
    assert len(shared_calls) == 1
    assert np.array_equal(out["plain"], invert(patch)) and out["plain"] is not patch
    assert all(out[f"crops_{i}"].shape == (16, 16, 3) for i in range(3))
    assert not np.array_equal(out["crops_0"], out["crops_1"])  # independent draws
    out["plain"][0, 0] = 0
    assert np.array_equal(patch, np.random.default_rng(0).integers(0, 256, (64, 64, 3),
                                                                   dtype=np.uint8))


def test_apply_views_crop_then_transforms(patch: np.ndarray) -> None:
    order: list[str] = []

    def crop(image: np.ndarray) -> np.ndarray:
        order.append("crop")
        return image[:8, :8]

    def transform(image: np.ndarray) -> np.ndarray:
        order.append(f"transform {image.shape[0]}")
        return image

    apply_views([ViewConfig("v", transforms=transform, crop=crop)], patch, None,
                lambda view: patch)
    assert order == ["crop", "transform 8"]


def test_apply_views_override_read_once_per_view(patch: np.ndarray) -> None:
    reads: list[str] = []
    low = np.full((32, 32, 3), 7, dtype=np.uint8)

    def read_override(view: ViewConfig) -> np.ndarray:
        reads.append(view.name)
        return low

    views = [ViewConfig("main"),
             ViewConfig("context", mpp_override=2.0, count=3, transforms=invert),
             ViewConfig("wide", mpp_override=1.0, patch_size_override=48)]
    out = apply_views(views, patch, None, read_override)
    assert reads == ["context", "wide"]
    assert np.array_equal(out["main"], patch)
    for i in range(3):
        assert np.array_equal(out[f"context_{i}"], invert(low))
    assert out["context_0"] is not out["context_1"]
    out["wide"][0, 0] = 1
    assert low[0, 0, 0] == 7  # each copy starts from its own copy of the read


def test_reseed_views_reproducible_and_distinct(patch: np.ndarray) -> None:
    def build() -> list[ViewConfig]:
        return [ViewConfig("g", crop=RandomResizedCrop(16, (0.3, 1.0)),
                           transforms=ComposeTransforms([HEDColorAugmentation(sigma=0.2)]),
                           count=2),
                ViewConfig("l", crop=RandomResizedCrop(8, (0.05, 0.3)), count=2)]

    views = build()
    reseed_views(views, seq(9))
    a = apply_views(views, patch, None, lambda view: patch)
    reseed_views(views, seq(9))
    b = apply_views(views, patch, None, lambda view: patch)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    other = build()
    reseed_views(other, seq(10))
    c = apply_views(other, patch, None, lambda view: patch)
    assert not np.array_equal(a["g_0"], c["g_0"])
    assert views[0].crop.rng is not views[1].crop.rng  # type: ignore[union-attr]
