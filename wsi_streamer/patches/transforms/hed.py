"""wsistream's ``transforms.hed`` path (defined in ``core``)."""

from .core import HEDColorAugmentation

__all__ = ["HEDColorAugmentation"]
