"""Transforms: HED (Tellez), flips/rotations, resize, normalise, compose, albumentations."""

from __future__ import annotations

import copy
import pickle
import random
from typing import Any

import numpy as np
import pytest

from wsi_streamer.patches.rng import Randomizable, reseed
from wsi_streamer.patches.transforms import (
    AlbumentationsWrapper,
    ComposeTransforms,
    HEDColorAugmentation,
    NormalizeTransform,
    PatchTransform,
    RandomFlipRotate,
    ResizeTransform,
)


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(32, 24, 3), dtype=np.uint8)


def seq(n: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(n)


# --- HED -----------------------------------------------------------------------------------

def test_hed_sigma_zero_is_identity(image: np.ndarray) -> None:
    out = HEDColorAugmentation(sigma=0.0, seed=1)(image)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.abs(out.astype(int) - image.astype(int)).max() <= 1


def test_hed_seeded_is_reproducible_and_reseeds_differ(image: np.ndarray) -> None:
    first = HEDColorAugmentation(sigma=0.2, seed=5)(image)
    assert np.array_equal(first, HEDColorAugmentation(sigma=0.2, seed=5)(image))
    assert not np.array_equal(first, image)
    hed = HEDColorAugmentation(sigma=0.2)
    reseed(hed, seq(1))
    a = hed(image)
    reseed(hed, seq(1))
    assert np.array_equal(a, hed(image))
    reseed(hed, seq(2))
    assert not np.array_equal(a, hed(image))


def test_hed_follows_tellez_in_optical_density() -> None:
    from skimage.color import hed_from_rgb, rgb_from_hed

    rng = np.random.default_rng(9)
    pixels = rng.integers(20, 236, size=(6, 6, 3), dtype=np.uint8)
    hed = HEDColorAugmentation(sigma=0.1, seed=3)
    draws = np.random.default_rng(3)
    alpha = draws.uniform(0.9, 1.1, size=3)
    beta = draws.uniform(-0.1, 0.1, size=3)
    od = -np.log(pixels / 255.0 + 1e-6)
    stains = (od @ hed_from_rgb) * alpha + beta
    expected = np.clip(np.rint((np.exp(-(stains @ rgb_from_hed)) - 1e-6) * 255), 0, 255)
    assert np.abs(hed(pixels).astype(int) - expected.astype(int)).max() <= 1


def test_hed_bias_only_and_validation(image: np.ndarray) -> None:
    hed = HEDColorAugmentation(sigma=0.0, sigma_bias=0.3, seed=4)
    assert hed.effective_sigma_bias == 0.3
    assert not np.array_equal(hed(image), image)
    assert HEDColorAugmentation(sigma=0.07).effective_sigma_bias == 0.07
    for kwargs, name in (({"sigma": -1.0}, "sigma"), ({"sigma": float("nan")}, "sigma"),
                         ({"sigma_bias": -0.1}, "sigma_bias")):
        with pytest.raises(ValueError, match=name):
            HEDColorAugmentation(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="uint8"):
        hed(image.astype(np.float32))


# --- flips and rotations -------------------------------------------------------------------

def test_flip_rotate_probabilities(image: np.ndarray) -> None:
    assert np.array_equal(RandomFlipRotate(0.0, 0.0, 0.0, seed=1)(image), image)
    assert np.array_equal(RandomFlipRotate(1.0, 0.0, 0.0, seed=1)(image), image[:, ::-1])
    assert np.array_equal(RandomFlipRotate(0.0, 1.0, 0.0, seed=1)(image), image[::-1])
    rotated = RandomFlipRotate(0.0, 0.0, 1.0, seed=1)(image)
    assert rotated.shape == (24, 32, 3) or rotated.shape == image.shape
    assert any(np.array_equal(rotated, np.rot90(image, k)) for k in (1, 2, 3))
    assert rotated.flags.c_contiguous


def test_flip_rotate_reproducible_under_reseed(image: np.ndarray) -> None:
    square = image[:24]
    flips = RandomFlipRotate()
    reseed(flips, seq(11))
    first = [flips(square) for _ in range(12)]
    reseed(flips, seq(11))
    assert all(np.array_equal(a, flips(square)) for a in first)
    reseed(flips, seq(12))
    assert not all(np.array_equal(a, flips(square)) for a in first)


def test_flip_rotate_validation() -> None:
    for name in ("p_hflip", "p_vflip", "p_rot90"):
        with pytest.raises(ValueError, match=name):
            RandomFlipRotate(**{name: 1.5})  # type: ignore[arg-type]


def test_deepcopy_gives_an_independent_generator(image: np.ndarray) -> None:
    original = HEDColorAugmentation(sigma=0.2, seed=8)
    clone = copy.deepcopy(original)
    assert clone.rng is not original.rng
    from_clone = clone(image)
    clone(image)
    clone(image)  # advancing the copy must not advance the original
    assert np.array_equal(original(image), from_clone)


def test_transforms_pickle_and_never_touch_global_state(image: np.ndarray) -> None:
    before = (pickle.dumps(np.random.get_state()), random.getstate())
    chain = ComposeTransforms([HEDColorAugmentation(seed=1), RandomFlipRotate(seed=2)])
    restored = pickle.loads(pickle.dumps(chain))
    assert np.array_equal(restored(image), chain(image))
    assert pickle.dumps(np.random.get_state()) == before[0] and random.getstate() == before[1]


# --- compose, resize, normalise ------------------------------------------------------------

def test_compose_order_children_and_recursive_reseed(image: np.ndarray) -> None:
    calls: list[str] = []

    def tag(name: str) -> Any:
        def apply(img: np.ndarray) -> np.ndarray:
            calls.append(name)
            return img
        return apply

    inner = ComposeTransforms([RandomFlipRotate(), HEDColorAugmentation()])
    chain = ComposeTransforms([tag("a"), inner, tag("b")])
    chain(image)
    assert calls == ["a", "b"]
    assert list(chain.children())[1] is inner and chain.transforms[1] is inner
    assert isinstance(chain, PatchTransform) and not isinstance(chain, Randomizable)
    reseed(chain, seq(3))
    once = chain(image)
    reseed(chain, seq(3))
    assert np.array_equal(once, chain(image))
    assert inner.transforms[0].rng is not inner.transforms[1].rng  # type: ignore[attr-defined]
    assert ComposeTransforms()(image) is image
    with pytest.raises(TypeError, match=r"transforms\[0\]"):
        ComposeTransforms([42])  # type: ignore[list-item]


def test_compose_children_draw_different_numbers(image: np.ndarray) -> None:
    """Reseeding a ComposeTransforms gives each child its own stream (child ``i`` of the
    seed): two identical random children do not draw the same numbers, at any depth."""
    inner = ComposeTransforms([HEDColorAugmentation(), HEDColorAugmentation()])
    chain = ComposeTransforms([HEDColorAugmentation(), HEDColorAugmentation(), inner])
    reseed(chain, seq(3))
    leaves = [chain.transforms[0], chain.transforms[1], *inner.transforms]
    draws = [tuple(t.rng.random(4)) for t in leaves]  # type: ignore[attr-defined]
    assert len(set(draws)) == len(draws), draws
    reseed(chain, seq(3))
    assert not np.array_equal(chain.transforms[0](image), chain.transforms[1](image))


def test_resize_is_antialiased_and_exact(image: np.ndarray) -> None:
    noise = np.random.default_rng(2).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    small = ResizeTransform(8)(noise)
    assert small.shape == (8, 8, 3) and small.dtype == np.uint8
    # an antialiased 8x shrink averages ~100 pixels per output (std ~ 74 / 10); point
    # sampling or 2-tap bilinear would keep most of the noise (std > 50)
    assert small.std() < 20 and abs(small.mean() - noise.mean()) < 10
    assert small.flags.writeable
    assert ResizeTransform(32)(np.zeros((32, 32, 3), np.uint8)).shape == (32, 32, 3)
    assert ResizeTransform(10)(image).shape == (10, 10, 3)
    with pytest.raises(ValueError, match="target_size"):
        ResizeTransform(0)
    with pytest.raises(ValueError, match="resample"):
        ResizeTransform(10, resample="cubic-ish")


def test_resize_takes_wsistreams_opencv_interpolation_flag(image: np.ndarray) -> None:
    """wsistream's docs write ``ResizeTransform(target_size=224, interpolation=cv2.INTER_LINEAR)``
    (OpenCV's flags by value: NEAREST 0, LINEAR 1, CUBIC 2, AREA 3, LANCZOS4 4)."""
    assert ResizeTransform(10, interpolation=1).resample == "bilinear"
    assert ResizeTransform(10, 3).resample == "box"
    nearest = ResizeTransform(10, interpolation=0)(image)
    assert np.array_equal(nearest, ResizeTransform(10, resample="nearest")(image))
    with pytest.raises(ValueError, match="INTER_"):
        ResizeTransform(10, interpolation=7)
    with pytest.raises(ValueError, match="one setting"):
        ResizeTransform(10, interpolation=2, resample="box")


def test_normalize() -> None:
    pixels = np.array([[[0, 127, 255]]], dtype=np.uint8)
    out = NormalizeTransform(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(pixels)
    assert out.dtype == np.float32
    assert np.allclose(out, [[[-1.0, 127 / 127.5 - 1.0, 1.0]]], atol=1e-6)
    imagenet = NormalizeTransform((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(pixels)
    assert np.allclose(imagenet[0, 0, 0], (0 - 0.485) / 0.229, atol=1e-5)
    with pytest.raises(ValueError, match="mean and std"):
        NormalizeTransform((0.5, 0.5), (0.5, 0.5))
    with pytest.raises(ValueError, match="std"):
        NormalizeTransform((0.5, 0.5, 0.5), (0.5, 0.0, 0.5))
    with pytest.raises(TypeError, match="uint8"):
        NormalizeTransform((0.5,) * 3, (0.5,) * 3)(out)


# --- albumentations ------------------------------------------------------------------------

class FakeAlbumentations:
    """Stands in for albumentations.Compose: set_random_seed + __call__(image=...)."""

    def __init__(self) -> None:
        self.seeds: list[int] = []
        self._rng = np.random.default_rng(0)

    def set_random_seed(self, seed: int) -> None:
        self.seeds.append(seed)
        self._rng = np.random.default_rng(seed)

    def __call__(self, *, image: np.ndarray) -> dict[str, np.ndarray]:
        return {"image": np.clip(image.astype(int) + int(self._rng.integers(1, 50)), 0,
                                 255).astype(np.uint8)}


def test_albumentations_wrapper_seeds_through_set_random_seed(image: np.ndarray) -> None:
    fake = FakeAlbumentations()
    wrapper = AlbumentationsWrapper(fake, seed=3)
    first = wrapper(image)
    assert len(fake.seeds) == 1
    wrapper(image)
    assert len(fake.seeds) == 1  # pushed once per (re)seed, not per call
    reseed(wrapper, seq(4))
    a = wrapper(image)
    assert len(fake.seeds) == 2
    reseed(wrapper, seq(4))
    assert np.array_equal(a, wrapper(image)) and fake.seeds[1] == fake.seeds[2]
    reseed(wrapper, seq(5))
    wrapper(image)
    assert fake.seeds[3] != fake.seeds[2]
    assert first.shape == image.shape
    assert AlbumentationsWrapper(None)(image) is image


def test_albumentations_wrapper_without_set_random_seed_warns_once(image: np.ndarray) -> None:
    def plain(*, image: np.ndarray) -> dict[str, np.ndarray]:
        return {"image": image[::-1]}

    wrapper = AlbumentationsWrapper(plain)
    with pytest.warns(UserWarning, match="set_random_seed"):
        out = wrapper(image)
    assert np.array_equal(out, image[::-1])
    reseed(wrapper, seq(1))
    wrapper(image)  # no second warning (filterwarnings=error would raise)
    with pytest.raises(TypeError, match="transform"):
        AlbumentationsWrapper(42)


def test_albumentations_is_not_imported() -> None:
    import sys

    import wsi_streamer.patches.transforms  # noqa: F401

    assert "albumentations" not in sys.modules and "cv2" not in sys.modules
