"""``/health`` (liveness: the worker answers; never touches storage), ``/health/ready``
(readiness: storage reachable, checked at most every ``READINESS_TTL_S`` and awaited at most
``READINESS_CHECK_S``: ``server.readiness``), neither needing auth, and ``/metrics``
(Prometheus text exposition, every worker of the host aggregated under gunicorn:
``metrics``; needs a signature when auth is on)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from .. import __version__
from ..limits import RETRY_AFTER_S
from . import metrics as prometheus
from .services import services

bp = Blueprint("health", __name__)


@bp.route("/health", methods=["GET"])
def health() -> Response:
    return jsonify({"status": "healthy", "version": __version__})


@bp.route("/health/ready", methods=["GET"])
def ready() -> Response:
    """200 ``{"status": "ready"}`` when storage answered its check; else 503 in the error
    shape (``storage_unready``; the reason is in the server log, not in this public answer)."""
    is_ready, _ = services().readiness.state()
    if is_ready:
        response = jsonify({"status": "ready", "version": __version__})
    else:
        response = jsonify({"error": "storage_unready", "status": 503,
                            "message": "storage is not reachable (the server log says why)"})
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/metrics", methods=["GET"])
def metrics() -> Response:
    body = prometheus.render(current_app._get_current_object())  # type: ignore[attr-defined]
    return Response(body, mimetype=None, content_type=prometheus.CONTENT_TYPE,
                    headers={"Cache-Control": "no-store"})
