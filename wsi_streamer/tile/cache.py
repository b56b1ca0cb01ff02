"""Encoded tiles in the host cache shared by every gunicorn worker (``slide.hostcache``)."""

from __future__ import annotations

from ..slide.hostcache import HostCache


class TileCache(HostCache):
    """Encoded tiles and parsed structures, keyed by tile key and slide identity."""
