"""IIIF Image API 3.0, level 2: ``/iiif/3/{identifier}`` (a slide id, ``/`` sent as ``%2F``)
redirects (303) to ``/iiif/3/{identifier}/info.json``; image requests are
``/iiif/3/{identifier}/{region}/{size}/{rotation}/{quality}.{format}`` (``tile.iiif``).

Auth as for tiles: a signature, or the slide's viewer token in the query or in the path
(``/iiif/3/vt/{exp}/{token}/{identifier}/...``). ``info.json``'s ``id`` carries that path
token whenever the request was authorised, so the tile URLs a IIIF client (OpenSeadragon,
Mirador) derives from it need no query string. A viewer token reaches only what info.json
advertises (``require_viewer_scope``); any other region or size needs a signature."""

from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, Response, jsonify, request

from ..errors import MissingSignature
from ..tile import iiif
from ..tile.request import ImageRequest
from .auth import viewer_token
from .paths import IiifPath, parse_iiif_path
from .responses import if_none_match, image_response
from .services import services

bp = Blueprint("iiif", __name__)

PREFIX = "/iiif/3/"
PROFILE_LINK = '<http://iiif.io/api/image/3/level2.json>;rel="profile"'
LD_JSON = f'application/ld+json;profile="{iiif.CONTEXT}"'


@bp.route(PREFIX + "<path:rest>", methods=["GET"])
def image(rest: str) -> Response:
    route = parse_iiif_path(rest)
    if route.kind == "base":
        target = request.base_url.rstrip("/") + "/info.json"
        if request.query_string:
            target += "?" + request.query_string.decode("latin-1")
        response = Response(status=303)
        response.headers["Location"] = target
        return response
    if route.kind == "info":
        return info_json(route)
    image_request, (width, height), _ = resolve(route)
    result = services().tiles.image(route.slide_id, image_request, if_none_match())
    response = image_response(result, exp=route.token[0] if route.token else None)
    canonical = base_id(route) + "/" + iiif.canonical_path(image_request, width, height)
    response.headers["Link"] = f'<{canonical}>;rel="canonical", {PROFILE_LINK}'
    return response


def resolve(route: IiifPath) -> tuple[ImageRequest, tuple[int, int], tuple[int, int]]:
    """The image request of ``route`` (kind "image"), the slide's size and its level-0 tile
    size. Syntax errors (400/501) come before the slide is looked up (404)."""
    assert route.image is not None
    params = iiif.parse_parameters(*route.image)
    svc = services()
    slide = svc.tiles.slide(route.slide_id)
    level0 = slide.level(0)
    return (iiif.image_request(params, *slide.dimensions, svc.config.jpeg_quality),
            slide.dimensions, (level0.tile_width, level0.tile_height))


def require_viewer_scope(rest: str) -> None:
    """For a request the slide's viewer token has authorised (``rest``: the path after
    ``/iiif/3/``): ``MissingSignature`` (401) unless it is the base URI, ``info.json``, a tile
    of the grid info.json advertises or the full image at one of its sizes
    (``iiif.advertised``), so a token cannot mint a render per region and size."""
    route = parse_iiif_path(rest)
    if route.kind != "image":
        return
    image_request, (width, height), (tile_width, tile_height) = resolve(route)
    if not iiif.advertised(image_request, width, height, tile_width, tile_height):
        raise MissingSignature("a viewer token covers info.json, its tiles and its sizes; "
                               "other IIIF regions and sizes need a signed URL (exp and sig)")


def info_json(route: IiifPath) -> Response:
    svc = services()
    slide = svc.tiles.slide(route.slide_id)
    width, height = slide.dimensions
    level0 = slide.level(0)
    body = iiif.info(base_id(route), width, height, level0.tile_width, level0.tile_height)
    response = jsonify(body)
    if "application/ld+json" in request.headers.get("Accept", ""):
        response.headers["Content-Type"] = LD_JSON
    response.headers["Link"] = PROFILE_LINK
    response.headers["Cache-Control"] = "no-store" if svc.config.auth_enabled else (
        f"public, max-age={svc.config.cache_max_age}")
    return response


def base_id(route: IiifPath) -> str:
    """The image's base URI: this server's ``/iiif/3/``, then, when auth is on and the
    request was authorised, ``vt/{exp}/{token}/`` (the slide's viewer token, expiring with
    the request's own ``exp``), then the identifier with ``/`` as ``%2F``."""
    config = services().config
    token = ""
    if config.auth_enabled and config.auth_secret:
        exp = route.token[0] if route.token else request.args.get("exp")
        if exp is not None and exp.isdigit():  # the auth hook has accepted this exp
            token = f"vt/{exp}/{viewer_token(config.auth_secret, route.slide_id, int(exp))}/"
    root = request.host_url.rstrip("/") + request.script_root
    return root + PREFIX + token + quote(route.slide_id, safe="")
