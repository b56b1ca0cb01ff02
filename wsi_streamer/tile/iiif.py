"""IIIF Image API 3.0 (https://iiif.io/api/image/3.0/), compliance level 2: the image
request parameters parsed into an ``ImageRequest`` and the image information document.

Parsing is in two steps, so errors come in IIIF's order: ``parse_parameters`` checks the
syntax of ``{region}/{size}/{rotation}/{quality}.{format}`` without the slide (400 bad syntax,
501 a valid feature this server does not implement), ``resolve`` applies it to the slide's
size (400 for a region outside the image, an upscale without ``^``, or a size beyond
``MAX_WIDTH``/``MAX_HEIGHT``/``MAX_AREA``, the message naming the limit).

Regions are level-0 pixels, rounded to integers (``pct:`` too) and clipped to the image."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidParameter, NotImplementedFeature
from ..limits import OVERVIEW_SIZE, SERVICE_CANVAS_PIXELS
from .request import MEDIA_TYPES, QUALITIES, ImageRequest

CONTEXT = "http://iiif.io/api/image/3/context.json"
PROTOCOL = "http://iiif.io/api/image"
MAX_AREA = SERVICE_CANVAS_PIXELS // 4
"""Output pixels of one IIIF image: a render's canvas is under twice the output per side
(DCT scaling reduces the rest), so this keeps it within ``SERVICE_CANVAS_PIXELS``."""
MAX_WIDTH = MAX_HEIGHT = 2 * OVERVIEW_SIZE
"""Output pixels per side of one IIIF image."""
EXTRA_FORMATS = ("webp",)
EXTRA_QUALITIES = ("color", "gray", "bitonal")
EXTRA_FEATURES = ("mirroring", "sizeUpscaling")
KNOWN_FORMATS = frozenset({"tif", "gif", "jp2", "pdf"})  # IIIF formats not written here

_INT = r"[0-9]{1,9}"
_NUM = r"(?:[0-9]{1,9}(?:\.[0-9]{1,9})?|\.[0-9]{1,9})"
_REGION_PX = re.compile(rf"({_INT}),({_INT}),({_INT}),({_INT})")
_REGION_PCT = re.compile(rf"pct:({_NUM}),({_NUM}),({_NUM}),({_NUM})")
_SIZE_W = re.compile(rf"({_INT}),")
_SIZE_H = re.compile(rf",({_INT})")
_SIZE_WH = re.compile(rf"(!?)({_INT}),({_INT})")
_SIZE_PCT = re.compile(rf"pct:({_NUM})")
_ROTATION = re.compile(rf"(!?)({_NUM})")


class OverLimit(InvalidParameter):
    """A requested size beyond this server's ``maxWidth``/``maxHeight``/``maxArea`` (400)."""


@dataclass(frozen=True, slots=True)
class Parameters:
    """The syntax of an image request: ``region`` and ``size`` as sent, the rest parsed."""

    region: str
    size: str
    mirror: bool
    rotation: int
    quality: str
    format: str


def parse_parameters(region: str, size: str, rotation: str, quality: str, fmt: str
                     ) -> Parameters:
    """``InvalidParameter`` (400) for bad syntax, ``NotImplementedFeature`` (501) for a
    rotation other than multiples of 90 or a known IIIF format this server does not write."""
    if not (region in ("full", "square") or _REGION_PX.fullmatch(region)
            or _REGION_PCT.fullmatch(region)):
        raise InvalidParameter(f"IIIF region must be full, square, x,y,w,h or pct:x,y,w,h; "
                               f"got {region[:40]!r}")
    body = size.removeprefix("^")
    if not (body == "max" or _SIZE_W.fullmatch(body) or _SIZE_H.fullmatch(body)
            or _SIZE_WH.fullmatch(body) or _SIZE_PCT.fullmatch(body)):
        raise InvalidParameter(f"IIIF size must be max, w, ,h, w,h, !w,h or pct:n (each "
                               f"optionally after ^); got {size[:40]!r}")
    match = _ROTATION.fullmatch(rotation)
    if match is None:
        raise InvalidParameter(f"IIIF rotation must be a number from 0 to 360, optionally "
                               f"after !; got {rotation[:40]!r}")
    degrees = float(match[2])
    if degrees > 360:
        raise InvalidParameter(f"IIIF rotation must be from 0 to 360, got {rotation[:40]!r}")
    if degrees % 90:
        raise NotImplementedFeature(f"rotation by {rotation[:40]} degrees: only multiples "
                                    "of 90 are implemented")
    if quality not in QUALITIES:
        raise InvalidParameter(f"IIIF quality must be one of {', '.join(QUALITIES)}; got "
                               f"{quality[:40]!r}")
    if fmt not in MEDIA_TYPES:
        if fmt in KNOWN_FORMATS:
            raise NotImplementedFeature(f"format {fmt}: only {', '.join(MEDIA_TYPES)} are "
                                        "implemented")
        raise InvalidParameter(f"IIIF format must be one of {', '.join(MEDIA_TYPES)}; got "
                               f"{fmt[:40]!r}")
    return Parameters(region, size, bool(match[1]), int(degrees) % 360, quality, fmt)


def resolve_region(region: str, width: int, height: int) -> tuple[int, int, int, int]:
    """``(x, y, w, h)`` in level-0 pixels, clipped to the image; ``InvalidParameter`` when
    empty or entirely outside it."""
    if region == "full":
        return 0, 0, width, height
    if region == "square":
        side = min(width, height)
        return (width - side) // 2, (height - side) // 2, side, side
    px = _REGION_PX.fullmatch(region)
    if px is not None:
        x, y, w, h = (int(v) for v in px.groups())
    else:
        pct = _REGION_PCT.fullmatch(region)
        assert pct is not None
        px_, py_, pw_, ph_ = (float(v) for v in pct.groups())
        x, y = round(px_ * width / 100), round(py_ * height / 100)
        w = round((px_ + pw_) * width / 100) - x
        h = round((py_ + ph_) * height / 100) - y
    if w <= 0 or h <= 0:
        raise InvalidParameter(f"IIIF region {region[:40]} is empty")
    if x >= width or y >= height:
        raise InvalidParameter(f"IIIF region {region[:40]} is outside the {width}x{height} "
                               "image")
    return x, y, min(w, width - x), min(h, height - y)


def resolve_size(size: str, rw: int, rh: int) -> tuple[int, int]:
    """The output ``(w, h)`` for a region of ``rw x rh``: ``InvalidParameter`` for an
    upscale without ``^`` or an empty result, ``OverLimit`` beyond the maxima."""
    upscale = size.startswith("^")
    body = size.removeprefix("^")
    if body == "max":
        scale = min(1.0, MAX_WIDTH / rw, MAX_HEIGHT / rh, math.sqrt(MAX_AREA / (rw * rh)))
        return max(1, math.floor(rw * scale)), max(1, math.floor(rh * scale))
    if (m := _SIZE_W.fullmatch(body)) is not None:
        w = int(m[1])
        out = (w, max(1, round(rh * w / rw)))
    elif (m := _SIZE_H.fullmatch(body)) is not None:
        h = int(m[1])
        out = (max(1, round(rw * h / rh)), h)
    elif (m := _SIZE_PCT.fullmatch(body)) is not None:
        n = float(m[1])
        out = (round(rw * n / 100), round(rh * n / 100))
    else:
        m = _SIZE_WH.fullmatch(body)
        assert m is not None
        w, h = int(m[2]), int(m[3])
        if w == 0 or h == 0:
            raise InvalidParameter(f"IIIF size {size[:40]} is empty")
        if m[1]:  # !w,h: the largest that fits (in the limits too), keeping the aspect
            scale = min(w / rw, h / rh, MAX_WIDTH / rw, MAX_HEIGHT / rh,
                        math.sqrt(MAX_AREA / (rw * rh)))
            out = (max(1, round(rw * scale)), max(1, round(rh * scale)))
            if out[0] > min(w, MAX_WIDTH) or out[1] > min(h, MAX_HEIGHT) or (
                    out[0] * out[1] > MAX_AREA):  # rounded up past a bound
                out = (max(1, math.floor(rw * scale)), max(1, math.floor(rh * scale)))
        else:
            out = (w, h)
    if out[0] <= 0 or out[1] <= 0:
        raise InvalidParameter(f"IIIF size {size[:40]} of a {rw}x{rh} region is empty")
    if not upscale and (out[0] > rw or out[1] > rh):
        raise InvalidParameter(f"IIIF size {size[:40]} is larger than the {rw}x{rh} region: "
                               "upscaling needs ^")
    if out[0] > MAX_WIDTH or out[1] > MAX_HEIGHT:
        raise OverLimit(f"IIIF size {out[0]}x{out[1]} exceeds maxWidth/maxHeight "
                        f"{MAX_WIDTH} (limit MAX_WIDTH)")
    if out[0] * out[1] > MAX_AREA:
        raise OverLimit(f"IIIF size {out[0]}x{out[1]} exceeds maxArea {MAX_AREA} "
                        "(limit MAX_AREA)")
    return out


def image_request(params: Parameters, width: int, height: int, jpeg_quality: int
                  ) -> ImageRequest:
    """The ``ImageRequest`` of ``params`` on a ``width x height`` image."""
    x, y, w, h = resolve_region(params.region, width, height)
    size = resolve_size(params.size, w, h)
    return ImageRequest((x, y, w, h), size, jpeg_quality, rotation=params.rotation,
                        mirror=params.mirror, quality=params.quality, format=params.format,
                        what="IIIF image")


def canonical_path(request: ImageRequest, width: int, height: int) -> str:
    """``{region}/{size}/{rotation}/{quality}.{format}`` in IIIF's canonical form (section
    4.7 of 3.0): ``full`` or ``x,y,w,h``; ``max`` when the output is the whole region within
    the limits, else ``w,h`` (``^w,h`` when larger than the region)."""
    x, y, w, h = (int(v) for v in request.region)
    region = "full" if (x, y, w, h) == (0, 0, width, height) else f"{x},{y},{w},{h}"
    ow, oh = request.size
    if (ow, oh) == resolve_size("max", w, h):
        size = "max"
    else:
        size = ("^" if ow > w or oh > h else "") + f"{ow},{oh}"
    rotation = ("!" if request.mirror else "") + str(request.rotation)
    return f"{region}/{size}/{rotation}/{request.quality}.{request.format}"


def scale_factors(width: int, height: int, tile: int) -> list[int]:
    """1, 2, 4, ... until the whole image fits in one tile."""
    factors = [1]
    while math.ceil(max(width, height) / factors[-1]) > tile:
        factors.append(factors[-1] * 2)
    return factors


def sizes(width: int, height: int, tile: int) -> list[tuple[int, int]]:
    """``info.json``'s ``sizes``, smallest first: the image halved (rounding up) from the
    first size within ``OVERVIEW_SIZE`` down to 64 px (or 1 px), at most 8 of them.

    OpenSeadragon takes ``sizes`` for the sizes of its zoom levels when there are as many as
    its levels (``log2`` of the largest scale factor) or one fewer: they are not (the large
    levels are left out), so its tiles came out distorted (slides of about 4k-16k px with
    256 px tiles). The smallest sizes are dropped until the count differs."""
    levels = round(math.log2(scale_factors(width, height, tile)[-1]))
    found = _halvings(width, height)
    while found and len(found) in (levels, levels + 1):
        found.pop(0)
    return found


def _halvings(width: int, height: int) -> list[tuple[int, int]]:
    found = []
    factor = 1
    while True:
        w, h = math.ceil(width / factor), math.ceil(height / factor)
        if max(w, h) <= OVERVIEW_SIZE:
            found.append((w, h))
        if w <= 64 and h <= 64 or w == 1 and h == 1:
            break
        factor *= 2
    found.reverse()
    return found[:8]


def advertised(request: ImageRequest, width: int, height: int, tile_width: int,
               tile_height: int) -> bool:
    """Whether ``request`` (resolved, on a ``width x height`` image whose level 0 has
    ``tile_width x tile_height`` tiles) is one that ``info.json`` leads a viewer to: a tile of
    the advertised grid at one of its ``scaleFactors`` ``s`` (region ``col*tw*s, row*th*s,
    tw*s, th*s`` clipped to the image, size that region over ``s`` rounded up, as in section 3
    of the implementation notes and as OpenSeadragon and Mirador ask), or the full image at
    one of ``sizes``; unrotated and unmirrored, any quality and format. A bounded set: each
    is one cache entry per quality and format."""
    if request.rotation or request.mirror:
        return False
    x, y, w, h = request.region
    if (x, y, w, h) == (0, 0, width, height) and request.size in sizes(
            width, height, max(tile_width, tile_height)):
        return True
    for s in scale_factors(width, height, max(tile_width, tile_height)):
        box_w, box_h = tile_width * s, tile_height * s
        if (x % box_w == 0 and y % box_h == 0 and x < width and y < height
                and w == min(box_w, width - x) and h == min(box_h, height - y)
                and request.size == (math.ceil(w / s), math.ceil(h / s))):
            return True
    return False


def info(base_id: str, width: int, height: int, tile_width: int, tile_height: int
         ) -> dict[str, Any]:
    """The image information document (``info.json``) of a ``width x height`` slide whose
    level 0 has ``tile_width x tile_height`` tiles; ``base_id`` is the image's base URI."""
    return {
        "@context": CONTEXT,
        "id": base_id,
        "type": "ImageService3",
        "protocol": PROTOCOL,
        "profile": "level2",
        "width": width,
        "height": height,
        "maxWidth": MAX_WIDTH,
        "maxHeight": MAX_HEIGHT,
        "maxArea": MAX_AREA,
        "sizes": [{"width": w, "height": h}
                  for w, h in sizes(width, height, max(tile_width, tile_height))],
        "tiles": [{"width": tile_width, "height": tile_height,
                   "scaleFactors": scale_factors(width, height, max(tile_width, tile_height))}],
        "extraFormats": list(EXTRA_FORMATS),
        "extraQualities": list(EXTRA_QUALITIES),
        "extraFeatures": list(EXTRA_FEATURES),
    }
