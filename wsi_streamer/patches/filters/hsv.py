"""wsistream's ``filters.hsv`` path (defined in ``core``)."""

from .core import HSVPatchFilter

__all__ = ["HSVPatchFilter"]
