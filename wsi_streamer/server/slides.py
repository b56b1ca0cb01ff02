"""``/slides`` listing and ``/slides/{id}[/dzi|/thumbnail|/dzi_files/...|/associated[/...]]``.

Associated images (label, macro, thumbnail) are served only with ``WSI_ASSOCIATED_IMAGES``:
labels can carry patient identifiers. While it is off they are 404 and not listed."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from ..errors import AssociatedImageNotFound
from ..slide.reader import SlideReader
from ..tile.service import clamp_thumbnail_size
from .params import parse_int, parse_quality
from .paths import parse_slide_path
from .responses import if_none_match, image_response
from .services import services

bp = Blueprint("slides", __name__)

MAX_LIMIT = 1000


@bp.route("/slides", methods=["GET"])
def list_slides() -> Response:
    limit = max(1, min(MAX_LIMIT, parse_int(request.args.get("limit"), "limit", 100)))
    page = services().storage.list_slides(
        prefix=request.args.get("prefix", ""), search=request.args.get("search", ""),
        cursor=request.args.get("cursor") or None, limit=limit)
    return jsonify({"slides": list(page.slides), "next_cursor": page.next_cursor})


@bp.route("/slides/<path:rest>", methods=["GET"])
def slide(rest: str) -> Response:
    route = parse_slide_path(rest)
    svc = services()
    if route.kind == "dzi":
        return Response(svc.tiles.dzi_descriptor(route.slide_id),
                        mimetype="application/xml")
    if route.kind == "thumbnail":
        return thumbnail(route.slide_id)
    if route.kind in ("associated", "associated_image"):
        return associated(route.slide_id, route.name, route.format)
    if route.kind == "dzi_tile":
        assert route.tile is not None
        quality = parse_quality(request.args.get("quality"), svc.config.jpeg_quality)
        t = route.tile
        return image_response(svc.tiles.dzi_tile(t.slide_id, t.level, t.x, t.y, quality,
                                                 if_none_match()))
    return jsonify(metadata(route.slide_id, svc.tiles.slide(route.slide_id)))


def thumbnail(slide_id: str) -> Response:
    svc = services()
    requested = parse_int(request.args.get("max_size"), "max_size", 512)
    size = clamp_thumbnail_size(requested)
    quality = parse_quality(request.args.get("quality"), svc.config.jpeg_quality)
    extra = {}
    if size != requested:
        extra = {"X-Thumbnail-Size-Clamped": "true",
                 "X-Thumbnail-Requested-Size": str(requested),
                 "X-Thumbnail-Actual-Size": str(size)}
    return image_response(svc.tiles.thumbnail(slide_id, size, quality, if_none_match()), extra)


def associated(slide_id: str, name: str, fmt: str) -> Response:
    svc = services()
    if not svc.config.associated_images:
        raise AssociatedImageNotFound(slide_id, name or "(list)")
    if not name:
        slide = svc.tiles.slide(slide_id)
        return jsonify({"slide_id": slide_id, "associated": list(slide.info.associated)})
    quality = parse_quality(request.args.get("quality"), svc.config.jpeg_quality)
    return image_response(svc.tiles.associated(slide_id, name, fmt, quality, if_none_match()))


def metadata(slide_id: str, slide: SlideReader) -> dict[str, Any]:
    width, height = slide.dimensions
    structure = slide.info
    body: dict[str, Any] = {
        "slide_id": slide_id,
        "format": slide.format_name,
        "width": width,
        "height": height,
        "level_count": slide.level_count,
        "levels": [{"level": lv.level, "width": lv.width, "height": lv.height,
                    "tile_width": lv.tile_width, "tile_height": lv.tile_height,
                    "tiles_x": lv.tiles_x, "tiles_y": lv.tiles_y,
                    "downsample": round(lv.downsample, 6)} for lv in slide.levels],
        "vendor": structure.vendor,
        "icc_profile": structure.has_icc_profile,
    }
    if structure.selection:  # several images of one field (``format.info.SlideInfo``)
        body.update(focal_planes=list(structure.focal_planes),
                    optical_paths=list(structure.optical_paths), selection=structure.selection)
    if services().config.associated_images:
        body["associated_images"] = list(structure.associated)
    for key, value in (("mpp_x", structure.mpp_x), ("mpp_y", structure.mpp_y),
                       ("magnification", structure.magnification)):
        if value is not None:
            body[key] = value
    return body
