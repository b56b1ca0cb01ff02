"""Multi-view outputs (wsistream's views: DINO-style global and local crops of one patch).

A ``ViewConfig`` names an output; ``apply_views`` turns one primary patch into ``{name: image}``:
``shared_transforms`` once on the primary patch, then for each view and each of its ``count``
copies an independent crop and transform chain. A view with ``mpp_override`` starts from a
re-read of the slide at that resolution (centred on the same level-0 point; the pipeline does the
read through ``read_override``), made once per view whatever its ``count``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .rng import Randomizable, SeedLike, child_seq, reseed
from .transforms import PatchTransform, resample_filter, resize_rgb

# Keys every batch item already has (wsistream's ``_RESERVED_BATCH_KEYS``): the single-view image,
# the coordinate fields and the ``SlideMetadata`` fields. View names must avoid them.
RESERVED_BATCH_KEYS: frozenset[str] = frozenset({
    "image", "x", "y", "level", "patch_size", "slide_path", "mpp", "tissue_fraction",
    "dataset_name", "patient_id", "tissue_type", "cancer_type", "sample_type", "extra",
})

ImageFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class CropParams:
    """A crop window in image pixels: columns ``[x, x + width)``, rows ``[y, y + height)``."""

    x: int
    y: int
    width: int
    height: int


def _check_pair(name: str, value: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a (min, max) pair of numbers, got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return low, high


class RandomResizedCrop(Randomizable, PatchTransform):
    """torchvision's ``RandomResizedCrop`` on numpy RGB: a window of area ``U(scale) * H * W``
    and aspect ratio (w / h) log-uniform in ``ratio``, at a uniform position, up to 10 tries;
    else the centred crop closest to ``ratio``. The window is resized to ``size x size`` with
    Pillow (``resample``, antialiased bilinear by default). ``scale`` has no default (DINO
    global crops use (0.4, 1.0), local (0.05, 0.4); DINOv2 (0.32, 1.0) and (0.05, 0.32))."""

    def __init__(self, size: int, scale: tuple[float, float],
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), seed: SeedLike = None, *,
                 resample: str = "bilinear") -> None:
        super().__init__(seed)
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
            raise TypeError(f"size must be an int, got {size!r}")
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        low, high = _check_pair("scale", scale)
        if not 0 < low <= high <= 1:
            raise ValueError(f"scale must be (a, b) with 0 < a <= b <= 1, got {scale}")
        rlow, rhigh = _check_pair("ratio", ratio)
        if not 0 < rlow <= rhigh:
            raise ValueError(f"ratio must be (a, b) with 0 < a <= b, got {ratio}")
        self.size = int(size)
        self.scale = (low, high)
        self.ratio = (rlow, rhigh)
        self.seed = seed
        self.resample = resample
        self._filter = resample_filter(resample)
        self.__post_init__()

    def __post_init__(self) -> None:
        """Runs last in ``__init__``: wsistream's crop is a dataclass, and its users' subclasses
        add their own state by overriding this (calling ``super().__post_init__()``)."""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.apply_params(image, self.sample_params(image))

    def sample_params(self, image: np.ndarray) -> CropParams:
        """Draw a window for ``image`` (``(H, W, ...)``); raises ``ValueError`` if H or W is 0."""
        height, width = image.shape[:2]
        if height < 1 or width < 1:
            raise ValueError(f"image must have positive spatial dimensions, got {image.shape}")
        area = height * width
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target = float(self._rng.uniform(self.scale[0], self.scale[1])) * area
            aspect = math.exp(float(self._rng.uniform(log_low, log_high)))
            crop_w = int(round(math.sqrt(target * aspect)))
            crop_h = int(round(math.sqrt(target / aspect)))
            if 0 < crop_w <= width and 0 < crop_h <= height:
                x = int(self._rng.integers(0, width - crop_w + 1))
                y = int(self._rng.integers(0, height - crop_h + 1))
                return CropParams(x, y, crop_w, crop_h)
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            crop_w, crop_h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            crop_w, crop_h = int(round(height * self.ratio[1])), height
        else:
            crop_w, crop_h = width, height
        crop_w, crop_h = max(1, min(crop_w, width)), max(1, min(crop_h, height))
        return CropParams((width - crop_w) // 2, (height - crop_h) // 2, crop_w, crop_h)

    def apply_params(self, image: np.ndarray, params: CropParams) -> np.ndarray:
        """The ``params`` window of ``image`` resized to ``size x size`` (RGB uint8)."""
        box = (params.x, params.y, params.x + params.width, params.y + params.height)
        return resize_rgb(image, self.size, self.size, self._filter, box=box)

    def __repr__(self) -> str:
        return f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio})"


@dataclass
class ViewConfig:
    """One named output. ``crop`` runs before ``transforms``; ``count > 1`` makes independent
    outputs ``name_0 .. name_{count-1}``; ``mpp_override`` (microns per pixel, > 0) re-reads the
    slide at that resolution around the same centre (needs slide MPP), reading
    ``patch_size_override`` pixels (default: the primary patch size; needs ``mpp_override``).
    Raises ``ValueError`` / ``TypeError`` naming the bad field; warns when ``count > 1`` with
    neither crop nor transforms (identical copies)."""

    name: str
    transforms: ImageFn | None = None
    crop: ImageFn | None = None
    count: int = 1
    mpp_override: float | None = None
    patch_size_override: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"ViewConfig.name must be a non-empty string, got {self.name!r}")
        for label, value in (("transforms", self.transforms), ("crop", self.crop)):
            if value is not None and not callable(value):
                raise TypeError(f"ViewConfig.{label} must be callable, got {type(value).__name__}")
        if isinstance(self.count, bool) or not isinstance(self.count, (int, np.integer)):
            raise TypeError(f"count must be an int, got {self.count!r}")
        if self.count < 1:
            raise ValueError(f"count must be >= 1, got {self.count}")
        if self.mpp_override is not None and not (
                math.isfinite(float(self.mpp_override)) and self.mpp_override > 0):
            raise ValueError(f"mpp_override must be > 0, got {self.mpp_override}")
        if self.patch_size_override is not None:
            if self.mpp_override is None:
                raise ValueError("patch_size_override requires mpp_override to be set")
            if (isinstance(self.patch_size_override, bool)
                    or not isinstance(self.patch_size_override, (int, np.integer))
                    or self.patch_size_override < 1):
                raise ValueError(
                    f"patch_size_override must be an int >= 1, got {self.patch_size_override}")
        if self.count > 1 and self.crop is None and self.transforms is None:
            warnings.warn(f"ViewConfig(name={self.name!r}, count={self.count}) has no crop or "
                          f"transforms: its {self.count} outputs are identical copies", UserWarning,
                          stacklevel=3)

    def output_names(self) -> list[str]:
        """``[name]`` for ``count == 1``, else ``name_0 .. name_{count-1}``."""
        if self.count == 1:
            return [self.name]
        return [f"{self.name}_{index}" for index in range(self.count)]


def expand_view_names(views: Sequence[ViewConfig]) -> list[str]:
    """Every output name of ``views``, in order, after ``count`` expansion."""
    return [name for view in views for name in view.output_names()]


def validate_views(views: Sequence[ViewConfig] | None, transforms: object | None,
                   shared_transforms: object | None) -> list[str]:
    """Check the pipeline's view arguments; return the expanded output names (empty without
    views). Raises ``ValueError`` for: views and transforms both given, shared_transforms
    without views, an empty view list, duplicate or reserved names after expansion,
    shared_transforms with an ``mpp_override`` view; ``TypeError`` for a non-``ViewConfig``."""
    if views is None:
        if shared_transforms is not None:
            raise ValueError("shared_transforms requires views")
        return []
    if transforms is not None:
        raise ValueError("transforms and views are mutually exclusive")
    views = list(views)
    if not views:
        raise ValueError("views must contain at least one ViewConfig")
    for index, view in enumerate(views):
        if not isinstance(view, ViewConfig):
            raise TypeError(f"views[{index}] must be a ViewConfig, got {type(view).__name__}")
    if shared_transforms is not None and any(v.mpp_override is not None for v in views):
        raise ValueError("shared_transforms cannot be combined with mpp_override views")
    names = expand_view_names(views)
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"view names must be unique after count expansion: {duplicates} "
                         f"repeat in {names}")
    reserved = [name for name in names if name in RESERVED_BATCH_KEYS]
    if reserved:
        raise ValueError(f"view name {reserved[0]!r} conflicts with a reserved batch key; "
                         f"reserved names are {sorted(RESERVED_BATCH_KEYS)}")
    return names


def apply_views(views: Sequence[ViewConfig], primary: np.ndarray,
                shared_transforms: ImageFn | None,
                read_override: Callable[[ViewConfig], np.ndarray]) -> dict[str, np.ndarray]:
    """``{name: image}`` in ``expand_view_names`` order. ``shared_transforms`` runs once on
    ``primary``; a view with ``mpp_override`` calls ``read_override(view)`` once and every count
    copy starts from (a copy of) that image; then crop, then transforms, per copy. Each output
    is its own array. Exceptions from transforms or the read propagate."""
    shared = shared_transforms(primary) if shared_transforms is not None else primary
    outputs: dict[str, np.ndarray] = {}
    for view in views:
        base = read_override(view) if view.mpp_override is not None else shared
        for name in view.output_names():
            image = np.array(base, copy=True)
            if view.crop is not None:
                image = view.crop(image)
            if view.transforms is not None:
                image = view.transforms(image)
            outputs[name] = image
    return outputs


def reseed_views(views: Sequence[ViewConfig] | None, seq: np.random.SeedSequence) -> None:
    """Reseed every view's crop and transforms from ``seq``: view ``i``'s crop from child
    ``(i, 0)``, its transforms from child ``(i, 1)`` (``rng.reseed`` recursion below)."""
    for index, view in enumerate(views or ()):
        reseed(view.crop, child_seq(seq, index, 0))
        reseed(view.transforms, child_seq(seq, index, 1))


__all__ = ["RESERVED_BATCH_KEYS", "CropParams", "RandomResizedCrop", "ViewConfig",
           "apply_views", "expand_view_names", "reseed_views", "validate_views"]
