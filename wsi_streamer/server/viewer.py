"""``/view/{id}``: the built-in OpenSeadragon viewer (served from the package, no CDN).

With auth on, the page is reachable only through a signed URL (the auth hook checks it) and
carries a viewer token scoped to its one slide, which its own tile/DZI/metadata requests use."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, render_template, request, url_for

from .auth import viewer_token
from .services import services

bp = Blueprint("viewer", __name__)


def viewer_context(slide_id: str) -> dict[str, Any]:
    """What the page needs: the slide id, the static and API URL prefixes and, with auth on,
    the slide's viewer token (``{"exp", "vt"}``, else ``{}``). The template escapes the id
    (autoescape in HTML, ``|tojson`` in the JSON config); the script URL-encodes it."""
    config = services().config
    auth: dict[str, str] = {}
    if config.auth_enabled and config.auth_secret:
        exp = int(time.time()) + config.signature_ttl
        auth = {"exp": str(exp), "vt": viewer_token(config.auth_secret, slide_id, exp)}
    return {
        "slide_id": slide_id,
        "auth": auth,
        "static": url_for("static", filename=""),
        "root": request.script_root,
    }


@bp.route("/view/<path:slide_id>", methods=["GET"])
def view(slide_id: str) -> Response:
    html = render_template("viewer.html", **viewer_context(slide_id))
    response = Response(html, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self' 'unsafe-inline'; connect-src 'self'")
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
