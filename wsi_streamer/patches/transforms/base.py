"""wsistream's ``transforms.base`` path (defined in ``core``)."""

from .core import ComposeTransforms, PatchTransform

__all__ = ["ComposeTransforms", "PatchTransform"]
