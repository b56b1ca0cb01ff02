"""wsistream's ``transforms.normalize`` path (defined in ``core``)."""

from .core import NormalizeTransform

__all__ = ["NormalizeTransform"]
