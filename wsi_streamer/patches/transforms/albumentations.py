"""wsistream's ``transforms.albumentations`` path (defined in ``core``)."""

from .core import AlbumentationsWrapper

__all__ = ["AlbumentationsWrapper"]
