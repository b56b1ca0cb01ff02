"""Image responses: the encoded body (with its media type) or 304, with the cache headers
of the API contract."""

from __future__ import annotations

import time

from flask import Response, g, request

from ..tile.service import ImageResult
from .services import services


def image_response(result: ImageResult, extra: dict[str, str] | None = None,
                   exp: str | None = None) -> Response:
    """``exp``: the expiry that authorised the request when it is not the query's (an IIIF
    path token)."""
    config = services().config
    max_age = config.cache_max_age
    exp = request.args.get("exp", "") if exp is None else exp
    if config.auth_enabled and exp.isdigit():
        # A shared cache must not keep serving an image after its signed URL has expired.
        max_age = max(0, min(max_age, int(exp) - int(time.time())))
    if result.data is None:
        response = Response(status=304)
    else:
        response = Response(result.data, mimetype=result.media_type)
    # extend (append) rather than item assignment (which first searches for the name).
    response.headers.extend({"Cache-Control": f"public, max-age={max_age}",
                             "ETag": f'"{result.etag}"',
                             "X-Tile-Cache-Hit": "true" if result.cache_hit else "false",
                             "X-Tile-Quality": str(result.quality), **(extra or {})})
    g.cache_hit = result.cache_hit
    return response


def if_none_match() -> str | None:
    return request.headers.get("If-None-Match")
