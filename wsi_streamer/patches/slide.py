"""wsistream's ``slide`` path: ``SlideHandle`` (defined in ``handle``)."""

from .handle import SlideHandle

__all__ = ["SlideHandle"]
