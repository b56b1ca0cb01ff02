"""``/health`` (never needs auth) and ``/metrics`` (Prometheus text exposition, every worker of
the host aggregated under gunicorn: ``metrics``; needs a signature when auth is on)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from .. import __version__
from . import metrics as prometheus

bp = Blueprint("health", __name__)


@bp.route("/health", methods=["GET"])
def health() -> Response:
    return jsonify({"status": "healthy", "version": __version__})


@bp.route("/metrics", methods=["GET"])
def metrics() -> Response:
    body = prometheus.render(current_app._get_current_object())  # type: ignore[attr-defined]
    return Response(body, mimetype=None, content_type=prometheus.CONTENT_TYPE,
                    headers={"Cache-Control": "no-store"})
