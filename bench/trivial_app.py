"""The yardstick for cached tiles: a trivial Flask route that returns ``n`` bytes as
``image/jpeg``, served by the same gunicorn configuration (``gunicorn.conf.py``) as our server,
so "cached tiles at >= 80% of a trivial route" is measured, not assumed."""

from __future__ import annotations

from flask import Flask, Response


def create_app() -> Flask:
    app = Flask(__name__)
    bodies: dict[int, bytes] = {}

    @app.get("/bytes/<int:n>")
    def payload(n: int) -> Response:
        body = bodies.setdefault(min(n, 1 << 20), b"\xff" * min(n, 1 << 20))
        return Response(body, mimetype="image/jpeg")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
