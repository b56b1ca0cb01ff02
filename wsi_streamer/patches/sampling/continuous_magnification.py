"""wsistream's ``sampling.continuous_magnification`` path (defined in ``continuous``)."""

from .continuous import ContinuousMagnificationSampler

__all__ = ["ContinuousMagnificationSampler"]
