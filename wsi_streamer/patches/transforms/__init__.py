"""Patch transforms (wsistream's ``transforms`` package; the code is in ``core``)."""

from .core import (
    AlbumentationsWrapper,
    ComposeTransforms,
    HEDColorAugmentation,
    NormalizeTransform,
    PatchTransform,
    RandomFlipRotate,
    ResizeTransform,
    resample_filter,
    resize_rgb,
)

__all__ = [
    "PatchTransform",
    "ComposeTransforms",
    "HEDColorAugmentation",
    "RandomFlipRotate",
    "ResizeTransform",
    "NormalizeTransform",
    "AlbumentationsWrapper",
    "resample_filter",
    "resize_rgb",
]
