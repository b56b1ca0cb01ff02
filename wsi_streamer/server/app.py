"""The app factory: configuration, services, blueprints, hooks (access log, auth, CORS) and
error handlers, in one place."""

from __future__ import annotations

import logging

from flask import Flask, Response, request

from ..config import Config
from ..errors import WsiError
from .auth import verify
from .errors import register_error_handlers
from .logs import configure_logging, init_access_log
from .routes import parse_slide_path, parse_tile_path
from .services import build_services, services

logger = logging.getLogger(__name__)

# Endpoints that never need a signature.
PUBLIC_ENDPOINTS = frozenset({"health.health", "health.metrics", "static"})
CORS_EXPOSED = ("ETag, X-Tile-Cache-Hit, X-Tile-Quality, X-Thumbnail-Size-Clamped, "
                "X-Thumbnail-Requested-Size, X-Thumbnail-Actual-Size, Server-Timing")


def create_app(config: Config | None = None) -> Flask:
    """Build the app; ``config`` defaults to ``Config.from_env()`` (``ConfigError`` names a
    bad variable). Services (storage client, caches) are created here, per process."""
    config = config or Config.from_env()
    configure_logging()
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.url_map.strict_slashes = False
    app.url_map.merge_slashes = False  # ids may hold "//"; never an HTML redirect
    app.extensions["wsi_streamer"] = build_services(config)

    from . import health, slides, tiles, viewer
    for module in (health, slides, tiles, viewer):
        app.register_blueprint(module.bp)

    init_access_log(app)
    if config.auth_enabled:
        app.before_request(_require_signature)
    app.after_request(_cors)
    register_error_handlers(app)

    from .cli import register_commands
    register_commands(app)
    logger.info("wsi_streamer serving %s (auth %s)", config.storage_description,
                "on" if config.auth_enabled else "off")
    return app


def _viewer_slide() -> str | None:
    """The slide id when this route accepts viewer tokens (tiles, DZI, metadata), else None."""
    rest = (request.view_args or {}).get("rest")
    if not isinstance(rest, str):
        return None
    try:
        if request.endpoint == "tiles.tile":
            return parse_tile_path(rest).slide_id
        if request.endpoint == "slides.slide":
            route = parse_slide_path(rest)
            return route.slide_id if route.kind in ("metadata", "dzi", "dzi_tile") else None
    except WsiError:
        return None  # malformed URL: only a full signature can authorise it
    return None


def _require_signature() -> None:
    if request.method == "OPTIONS" or request.endpoint in PUBLIC_ENDPOINTS:
        return
    if request.endpoint is None:
        return  # unknown route: let it 404
    config = services().config
    assert config.auth_secret is not None
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or ""
    paths = [p for p in (raw.split("?", 1)[0], request.path) if p]
    verify(config.auth_secret, paths, request.args.to_dict(flat=True),
           request.args.items(multi=True), _viewer_slide())


_CORS_HEADERS = {"Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
                 "Access-Control-Allow-Headers": "If-None-Match, Content-Type",
                 "Access-Control-Expose-Headers": CORS_EXPOSED,
                 "Access-Control-Max-Age": "86400"}


def _cors(response: Response) -> Response:
    origins = services().config.cors_origins
    origin = request.headers.get("Origin")
    if "*" in origins:
        allowed = "*"
    elif origin and origin in origins:
        allowed = origin
        response.vary.add("Origin")
    else:
        return response
    response.headers.extend(_CORS_HEADERS)
    response.headers.set("Access-Control-Allow-Origin", allowed)
    return response
