"""``/tiles/{id}/{level}/{x}/{y}.jpg``: native tiles of a pyramid level."""

from __future__ import annotations

from flask import Blueprint, Response, request

from .params import parse_quality
from .paths import parse_tile_path
from .responses import if_none_match, image_response
from .services import services

bp = Blueprint("tiles", __name__)


@bp.route("/tiles/<path:rest>", methods=["GET"])
def tile(rest: str) -> Response:
    address = parse_tile_path(rest)
    svc = services()
    quality = parse_quality(request.args.get("quality"), svc.config.jpeg_quality)
    result = svc.tiles.tile(address.slide_id, address.level, address.x, address.y, quality,
                            if_none_match())
    return image_response(result)
