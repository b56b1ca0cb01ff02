"""Patch transforms and augmentations (wsistream's, same arguments), without OpenCV.

Images are RGB uint8 ``(H, W, 3)`` in and out, except ``NormalizeTransform`` (float32 out; put it
last). Random transforms are ``Randomizable``: each draws only from its own ``_rng``, which the
pipeline reseeds (``rng.reseed``); none touches the global ``random`` or ``np.random`` state.
A transform object is not thread-safe (its generator advances); the pipeline deep-copies it.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from ..color import check_rgb_uint8, require_extra
from ..rng import Randomizable, SeedLike

ImageFn = Callable[[np.ndarray], np.ndarray]

_OD_EPSILON = 1e-6  # Tellez et al. (2018), eqs. 5 and 7
_RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
             "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
             "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}


class PatchTransform(ABC):
    """A callable ``image -> image``."""

    @abstractmethod
    def __call__(self, image: np.ndarray) -> np.ndarray: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ComposeTransforms(PatchTransform):
    """Applies ``transforms`` in order. ``children()`` (the same list) lets reseeding recurse."""

    def __init__(self, transforms: Sequence[ImageFn] | None = None) -> None:
        self.transforms: list[ImageFn] = list(transforms or [])
        for index, transform in enumerate(self.transforms):
            if not callable(transform):
                raise TypeError(f"transforms[{index}] must be callable, got "
                                f"{type(transform).__name__}")

    def __call__(self, image: np.ndarray) -> np.ndarray:
        for transform in self.transforms:
            image = transform(image)
        return image

    def children(self) -> Iterable[Any]:
        return list(self.transforms)

    def __repr__(self) -> str:
        return f"ComposeTransforms([{', '.join(repr(t) for t in self.transforms)}])"


def _check_fraction(name: str, value: object, low: float = 0.0, high: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and low <= number <= high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return number


@lru_cache(maxsize=1)
def _ruifrok_matrices() -> tuple[np.ndarray, np.ndarray]:
    """(hed_from_rgb, rgb_from_hed): Ruifrok & Johnston's (2001) H&E-DAB matrices, as
    scikit-image defines them, float32."""
    color = require_extra("skimage.color")
    return (np.asarray(color.hed_from_rgb, dtype=np.float32),
            np.asarray(color.rgb_from_hed, dtype=np.float32))


class HEDColorAugmentation(Randomizable, PatchTransform):
    """Tellez et al. (2018) stain augmentation: optical densities ``-log(P + 1e-6)`` projected on
    the Ruifrok H, E, DAB vectors; per image and channel ``s' = alpha * s + beta`` with
    ``alpha ~ U(1 - sigma, 1 + sigma)``, ``beta ~ U(-sigma_bias, sigma_bias)`` (``sigma_bias``
    defaults to ``sigma``), no clamping of ``s'``; back with ``exp(-s' M) - 1e-6``, rounded and
    clipped to uint8. ``sigma=0.05`` is Tellez's "HED-light", 0.2 "HED-strong"."""

    def __init__(self, sigma: float = 0.05, seed: SeedLike = None,
                 sigma_bias: float | None = None) -> None:
        super().__init__(seed)
        self.sigma = _check_fraction("sigma", sigma, 0.0, math.inf)
        self.sigma_bias = (None if sigma_bias is None
                           else _check_fraction("sigma_bias", sigma_bias, 0.0, math.inf))
        self.seed = seed

    @property
    def effective_sigma_bias(self) -> float:
        """The additive half-width in use, in optical-density units."""
        return self.sigma if self.sigma_bias is None else self.sigma_bias

    def __call__(self, image: np.ndarray) -> np.ndarray:
        rgb = check_rgb_uint8(image)
        to_hed, to_rgb = _ruifrok_matrices()
        alpha = self._rng.uniform(1.0 - self.sigma, 1.0 + self.sigma, size=3)
        bias = self.effective_sigma_bias
        beta = self._rng.uniform(-bias, bias, size=3)
        density = -np.log(rgb.astype(np.float32) / np.float32(255.0) + np.float32(_OD_EPSILON))
        stains = (density @ to_hed) * alpha.astype(np.float32) + beta.astype(np.float32)
        out: np.ndarray = np.exp(-(stains @ to_rgb)) - np.float32(_OD_EPSILON)
        return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)

    def __repr__(self) -> str:
        return f"HEDColorAugmentation(sigma={self.sigma}, sigma_bias={self.sigma_bias})"


class RandomFlipRotate(Randomizable, PatchTransform):
    """Horizontal flip with ``p_hflip``, then vertical flip with ``p_vflip``, then with
    ``p_rot90`` a rotation by 90, 180 or 270 degrees (equally likely). Output is contiguous."""

    def __init__(self, p_hflip: float = 0.5, p_vflip: float = 0.5, p_rot90: float = 0.5,
                 seed: SeedLike = None) -> None:
        super().__init__(seed)
        self.p_hflip = _check_fraction("p_hflip", p_hflip)
        self.p_vflip = _check_fraction("p_vflip", p_vflip)
        self.p_rot90 = _check_fraction("p_rot90", p_rot90)
        self.seed = seed

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self._rng.random() < self.p_hflip:
            image = image[:, ::-1]
        if self._rng.random() < self.p_vflip:
            image = image[::-1]
        if self._rng.random() < self.p_rot90:
            image = np.rot90(image, k=int(self._rng.integers(1, 4)))
        return np.ascontiguousarray(image)

    def __repr__(self) -> str:
        return (f"RandomFlipRotate(p_hflip={self.p_hflip}, p_vflip={self.p_vflip}, "
                f"p_rot90={self.p_rot90})")


def resample_filter(name: str) -> Image.Resampling:
    """The Pillow filter called ``name`` (nearest, bilinear, bicubic, lanczos, box, hamming);
    Pillow's filters other than nearest antialias when shrinking."""
    try:
        return _RESAMPLE[name]
    except KeyError:
        raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}, got {name!r}") from None


def resize_rgb(image: np.ndarray, width: int, height: int, resample: Image.Resampling,
               box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """``image`` (or its ``box`` = (left, top, right, bottom)) resized to ``height x width``
    with Pillow; a new writable array."""
    pil = Image.fromarray(check_rgb_uint8(image))
    return np.array(pil.resize((width, height), resample=resample, box=box))  # writable copy


# wsistream's ``interpolation``: OpenCV's flags (INTER_NEAREST ... INTER_LANCZOS4, by value,
# so OpenCV is never imported), as the Pillow filter that stands for each.
_CV2_INTERPOLATION = {0: "nearest", 1: "bilinear", 2: "bicubic", 3: "box", 4: "lanczos"}


class ResizeTransform(PatchTransform):
    """Resizes to ``target_size x target_size`` with Pillow (antialiased ``resample`` filter,
    bilinear by default); an image already that size is returned as is. ``interpolation``
    takes wsistream's OpenCV flag instead (``cv2.INTER_LINEAR`` -> bilinear, ``INTER_AREA`` ->
    box, ...); ``ValueError`` for another flag or with a different ``resample``."""

    def __init__(self, target_size: int = 224, interpolation: int | None = None, *,
                 resample: str | None = None) -> None:
        if isinstance(target_size, bool) or not isinstance(target_size, (int, np.integer)):
            raise TypeError(f"target_size must be an int, got {target_size!r}")
        if target_size < 1:
            raise ValueError(f"target_size must be >= 1, got {target_size}")
        if interpolation is not None:
            named = _CV2_INTERPOLATION.get(int(interpolation))
            if named is None:
                raise ValueError(f"interpolation must be one of OpenCV's INTER_NEAREST, "
                                 f"INTER_LINEAR, INTER_CUBIC, INTER_AREA, INTER_LANCZOS4 "
                                 f"(0-4), got {interpolation!r}")
            if resample is not None and resample != named:
                raise ValueError(f"interpolation={interpolation} ({named}) and resample="
                                 f"{resample!r} name one setting; give one")
            resample = named
        self.target_size = int(target_size)
        self.resample = resample or "bilinear"
        self._filter = resample_filter(self.resample)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        size = self.target_size
        if image.shape[0] == size and image.shape[1] == size:
            return image
        return resize_rgb(image, size, size, self._filter)

    def __repr__(self) -> str:
        return f"ResizeTransform(target_size={self.target_size}, resample={self.resample!r})"


class NormalizeTransform(PatchTransform):
    """uint8 -> float32 ``(image / 255 - mean) / std`` per channel (mean and std on the 0-1
    scale, e.g. ImageNet's); no defaults, as in wsistream. Raises ``TypeError`` for a
    non-uint8 image (it would be scaled twice)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std must have 3 values (RGB), got mean={mean}, std={std}")
        if not all(math.isfinite(float(v)) for v in (*mean, *std)):
            raise ValueError(f"mean and std must be finite, got mean={mean}, std={std}")
        if any(abs(float(s)) < 1e-10 for s in std):
            raise ValueError(f"std must not contain zero, got {std}")
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self._mean = np.asarray(self.mean, dtype=np.float32)
        self._scale = (1.0 / np.asarray(self.std, dtype=np.float64)).astype(np.float32)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        array = np.asarray(image)
        if array.dtype != np.uint8:
            raise TypeError(f"NormalizeTransform expects a uint8 image, got {array.dtype}")
        scaled = array.astype(np.float32) / np.float32(255.0)
        return np.asarray((scaled - self._mean) * self._scale, dtype=np.float32)

    def __repr__(self) -> str:
        return f"NormalizeTransform(mean={self.mean}, std={self.std})"


class AlbumentationsWrapper(Randomizable, PatchTransform):
    """Calls an albumentations transform as ``transform(image=image)["image"]`` (``None``: the
    identity). albumentations is never imported here. After each reseed (``_rng`` replaced) the
    next call first pushes ``integers(0, 2**32)`` from ``_rng`` through the transform's
    ``set_random_seed`` (albumentations >= 1.4.21), so forked workers do not replay one stream;
    without that method it warns once and the transform keeps its own randomness."""

    def __init__(self, transform: Any = None, seed: SeedLike = None) -> None:
        super().__init__(seed)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self.transform = transform
        self.seed = seed
        self._seeded_from: np.random.Generator | None = None
        self._warned = False

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.transform is None:
            return image
        if self._seeded_from is not self._rng:
            self._push_seed()
        return np.asarray(self.transform(image=image)["image"])

    def _push_seed(self) -> None:
        self._seeded_from = self._rng
        set_random_seed = getattr(self.transform, "set_random_seed", None)
        if set_random_seed is None:
            if not self._warned:
                self._warned = True
                warnings.warn("the wrapped transform has no set_random_seed() (albumentations "
                              "< 1.4.21): its augmentations are not seeded by the pipeline and "
                              "may repeat across forked workers", UserWarning, stacklevel=3)
            return
        set_random_seed(int(self._rng.integers(0, 2**32)))

    def __repr__(self) -> str:
        return f"AlbumentationsWrapper({self.transform!r})"


__all__ = ["AlbumentationsWrapper", "ComposeTransforms", "HEDColorAugmentation",
           "NormalizeTransform", "PatchTransform", "RandomFlipRotate", "ResizeTransform",
           "resample_filter", "resize_rgb"]
