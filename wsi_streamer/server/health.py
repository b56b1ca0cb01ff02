"""``/health`` (never needs auth) and ``/metrics`` (Prometheus text, counters only)."""

from __future__ import annotations

import os

from flask import Blueprint, Response, jsonify

from .. import __version__
from .services import services

bp = Blueprint("health", __name__)


@bp.route("/health", methods=["GET"])
def health() -> Response:
    return jsonify({"status": "healthy", "version": __version__})


@bp.route("/metrics", methods=["GET"])
def metrics() -> Response:
    svc = services()
    store = svc.store.stats.snapshot()
    storage = svc.storage.stats.snapshot()
    tiles = svc.tiles.stats
    lines = []
    values = {
        "wsi_storage_requests_total": storage["requests"],
        "wsi_storage_bytes_total": storage["bytes"],
        "wsi_block_cache_hits_total": store["hits"],
        "wsi_block_cache_misses_total": store["misses"],
        "wsi_block_cache_bytes": svc.store.cached_bytes,
        "wsi_tiles_rendered_total": tiles.rendered,
        "wsi_tile_cache_hits_total": tiles.cache_hits,
        "wsi_tile_cache_misses_total": tiles.cache_misses,
    }
    pid = os.getpid()
    for name, value in values.items():
        lines.append(f'{name}{{pid="{pid}"}} {value}')
    return Response("\n".join(lines) + "\n", mimetype="text/plain; version=0.0.4")
