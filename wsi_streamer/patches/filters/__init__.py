"""Patch filters (wsistream's ``filters`` package; the code is in ``core``)."""

from .core import HSVPatchFilter, PatchFilter

__all__ = ["PatchFilter", "HSVPatchFilter"]
