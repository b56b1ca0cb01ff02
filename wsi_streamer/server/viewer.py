"""``/view/{id}``: the built-in OpenSeadragon viewer (served from the package, no CDN).

With auth on, the page is reachable only through a signed URL (the auth hook checks it) and
carries a viewer token scoped to its one slide, which its own tile/DZI/metadata requests use.
``?protocol=iiif`` loads the slide through IIIF (``info.json``) instead of Deep Zoom."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, render_template, request, url_for

from .auth import MAX_EXP_DIGITS, viewer_token
from .params import ascii_int
from .services import services

bp = Blueprint("viewer", __name__)

# Scripts only from the package's own files (the page's config is a non-executed JSON
# <script>); OpenSeadragon sets element styles, hence 'unsafe-inline' for styles only. No
# framing (clickjacking), no plugins, no <base> or form targets.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")


def viewer_context(slide_id: str) -> dict[str, Any]:
    """What the page needs: the slide id, the protocol (``dzi`` or ``iiif``), the static and
    API URL prefixes and, with auth on,
    the slide's viewer token (``{"exp", "vt"}``, else ``{}``), expiring with the page's own
    signed URL or after ``signature_ttl``, whichever is first. The template escapes the id
    (autoescape in HTML, ``|tojson`` in the JSON config); the script URL-encodes it."""
    config = services().config
    auth: dict[str, str] = {}
    if config.auth_enabled and config.auth_secret:
        exp = int(time.time()) + config.signature_ttl
        # The auth hook accepted this page's own exp: the token must not outlive the link.
        page_exp = ascii_int(request.args.get("exp", ""), max_digits=MAX_EXP_DIGITS,
                             signed=False)
        if page_exp is not None:
            exp = min(exp, page_exp)
        auth = {"exp": str(exp), "vt": viewer_token(config.auth_secret, slide_id, exp)}
    return {
        "slide_id": slide_id,
        "auth": auth,
        "static": url_for("static", filename=""),
        "root": request.script_root,
        "protocol": "iiif" if request.args.get("protocol") == "iiif" else "dzi",
    }


@bp.route("/view/<path:slide_id>", methods=["GET"])
def view(slide_id: str) -> Response:
    return html_page(render_template("viewer.html", **viewer_context(slide_id)))


def html_page(html: str) -> Response:
    """A page of ours: never cached (it may carry a signed token), scripts and styles only
    from this server (``CSP``), never framed, no Referer to other sites."""
    response = Response(html, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
