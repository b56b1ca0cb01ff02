"""wsistream's ``sampling.multi_magnification`` path (defined in ``multi``)."""

from .multi import MultiMagnificationSampler

__all__ = ["MultiMagnificationSampler"]
