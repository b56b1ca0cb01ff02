"""wsistream's ``datasets.base`` path (defined in ``adapters``)."""

from .adapters import DatasetAdapter

__all__ = ["DatasetAdapter"]
