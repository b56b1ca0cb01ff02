"""wsi_streamer: a tile server for whole slide images in S3-compatible object storage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from flask import Flask


def create_app(config: Any = None) -> Flask:
    """Build the Flask app (see ``wsi_streamer.server.app.create_app``)."""
    from .server.app import create_app as _create_app

    return _create_app(config)


__all__ = ["__version__", "create_app"]
