"""wsistream's ``filters.base`` path (defined in ``core``)."""

from .core import PatchFilter

__all__ = ["PatchFilter"]
