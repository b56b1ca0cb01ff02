"""wsistream's ``transforms.resize`` path (defined in ``core``)."""

from .core import ResizeTransform

__all__ = ["ResizeTransform"]
