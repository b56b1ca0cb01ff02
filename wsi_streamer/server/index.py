"""``/``: an HTML index of the slides (one page of ``/slides``, with the same ``cursor`` and
``search`` parameters), each linking to its viewer (``/view/{id}``). Under auth it needs a
signature as ``/slides`` does, and its links are plain: each viewer needs its own signed URL
(``wsi-streamer sign-url --path /view/ID``), so listing slides grants no more than
``/slides`` does."""

from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, Response, render_template, request

from .params import parse_int
from .services import services
from .viewer import html_page

bp = Blueprint("index", __name__)

PAGE = 200


@bp.route("/", methods=["GET"])
def index() -> Response:
    svc = services()
    limit = max(1, min(PAGE, parse_int(request.args.get("limit"), "limit", PAGE)))
    search = request.args.get("search", "")
    page = svc.storage.list_slides(search=search, cursor=request.args.get("cursor") or None,
                                   limit=limit)
    root = request.script_root
    slides = [(slide_id, f"{root}/view/{quote(slide_id, safe='')}") for slide_id in page.slides]
    more = None
    if page.next_cursor:
        more = f"{root}/?cursor={quote(page.next_cursor, safe='')}&search={quote(search)}"
    html = render_template("index.html", slides=slides, more=more,
                           storage=svc.config.storage_description if not svc.config.auth_enabled
                           else "", auth=svc.config.auth_enabled, root=root)
    return html_page(html)


def viewer_url(base: str, slide_id: str) -> str:
    """The viewer of ``slide_id`` under ``base`` (``http://host:port``)."""
    return f"{base}/view/{quote(slide_id, safe='')}"
