"""Slide URLs parsed from the right, so slide ids may contain ``/`` (sent as ``%2F`` or plain;
WSGI decodes both to ``/``): ``{id}/{level}/{x}/{y}[.jpg]`` for tiles and
``{id}[/dzi|/thumbnail|/dzi_files/{level}/{col}_{row}.jpg]`` for slides, IIIF paths
(``parse_iiif_path``), and per endpoint the slide a viewer token may authorise."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidLevel, InvalidParameter, TileOutOfBounds
from .params import path_int

_TILE = re.compile(r"^(?P<id>.+)/(?P<level>[^/]+)/(?P<x>[^/]+)/(?P<y>[^/]+?)(?:\.jpe?g)?$")
_ASSOCIATED = re.compile(
    r"^(?P<id>.+)/associated/(?P<name>[a-z][a-z0-9_-]{0,31})(?:\.(?P<ext>jpe?g|png))?$",
    re.IGNORECASE)
_DZI_TILE = re.compile(
    r"^(?P<id>.+)/dzi_files/(?P<level>[^/]+)/(?P<x>[^/_]+)_(?P<y>[^/.]+)\.(?:jpe?g)$")


@dataclass(frozen=True, slots=True)
class TileAddress:
    slide_id: str
    level: int
    x: int
    y: int


@dataclass(frozen=True, slots=True)
class SlideRoute:
    kind: str  # "metadata", "dzi", "thumbnail", "dzi_tile", "associated", "associated_image"
    slide_id: str
    tile: TileAddress | None = None
    name: str = ""  # associated_image: "label", "macro"...
    format: str = "jpg"  # associated_image: "jpg" or "png"


def _address(match: re.Match[str]) -> TileAddress:
    level_raw = match["level"]
    try:
        level = path_int(level_raw, "level")
    except InvalidParameter:
        raise _invalid_level(level_raw) from None
    try:
        x, y = path_int(match["x"], "x"), path_int(match["y"], "y")
    except InvalidParameter as exc:
        raise _bad_tile(level, str(exc)) from None
    return TileAddress(match["id"], level, x, y)


class _BadLevel(InvalidLevel):
    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)


class _BadTile(TileOutOfBounds):
    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)


def _invalid_level(raw: str) -> InvalidLevel:
    return _BadLevel(f"level must be a non-negative integer, got {raw[:32]!r}")


def _bad_tile(level: int, message: str) -> TileOutOfBounds:
    return _BadTile(f"level {level}: {message}")


def parse_tile_path(rest: str) -> TileAddress:
    match = _TILE.match(rest)
    if match is None:
        raise InvalidParameter("tile URLs are /tiles/{slide_id}/{level}/{x}/{y}.jpg")
    return _address(match)


def parse_slide_path(rest: str) -> SlideRoute:
    match = _DZI_TILE.match(rest)
    if match is not None:
        tile = _address(match)
        return SlideRoute("dzi_tile", tile.slide_id, tile)
    image = _ASSOCIATED.match(rest)
    if image is not None:
        fmt = {"png": "png"}.get((image["ext"] or "jpg").lower(), "jpg")
        return SlideRoute("associated_image", image["id"], name=image["name"], format=fmt)
    for suffix in ("dzi", "thumbnail", "associated"):
        if rest.endswith("/" + suffix):
            return SlideRoute(suffix, rest[: -len(suffix) - 1])
    return SlideRoute("metadata", rest)


# --- IIIF: /iiif/3/[vt/{exp}/{token}/]{identifier}
#     [/info.json | /{region}/{size}/{rotation}/{quality}.{format}]

_IIIF_TOKEN = re.compile(r"^vt/(?P<exp>[0-9]{1,12})/(?P<vt>[0-9a-f]{1,128})/(?P<rest>.+)$")
_IIIF_IMAGE = re.compile(r"^(?P<id>.+)/(?P<region>[^/]+)/(?P<size>[^/]+)/(?P<rotation>[^/]+)/"
                         r"(?P<quality>[^/.]+)\.(?P<format>[^/.]+)$")


@dataclass(frozen=True, slots=True)
class IiifPath:
    """``kind``: "base" (redirect to info.json), "info" or "image" (``image`` holds region,
    size, rotation, quality and format as sent). ``token``: ``(exp, vt)`` when the path
    carries a viewer token (``vt/{exp}/{token}/`` before the identifier, so tile URLs that
    IIIF clients derive from ``info.json``'s ``id`` stay authorised), else None."""

    kind: str
    slide_id: str
    token: tuple[str, str] | None = None
    image: tuple[str, str, str, str, str] | None = None


def parse_iiif_path(rest: str) -> IiifPath:
    """``rest``: the path after ``/iiif/3/`` (decoded, so ``%2F`` in ids is ``/``)."""
    token = None
    match = _IIIF_TOKEN.match(rest)
    if match is not None:
        token, rest = (match["exp"], match["vt"]), match["rest"]
    if rest.endswith("/info.json") and len(rest) > len("/info.json"):
        return IiifPath("info", rest[: -len("/info.json")], token)
    image = _IIIF_IMAGE.match(rest)
    if image is not None:
        return IiifPath("image", image["id"], token, (image["region"], image["size"],
                                                      image["rotation"], image["quality"],
                                                      image["format"]))
    return IiifPath("base", rest, token)


# --- the slide a viewer token may authorise, per endpoint (None: a full signature only)

def tile_viewer_slide(rest: str) -> str | None:
    return parse_tile_path(rest).slide_id


def slide_viewer_slide(rest: str) -> str | None:
    route = parse_slide_path(rest)
    return route.slide_id if route.kind in ("metadata", "dzi", "dzi_tile") else None


def iiif_viewer_slide(rest: str) -> str | None:
    return parse_iiif_path(rest).slide_id
