"""wsistream's ``transforms.geometric`` path (defined in ``core``)."""

from .core import RandomFlipRotate

__all__ = ["RandomFlipRotate"]
