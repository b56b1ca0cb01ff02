"""The app factory: configuration, services, blueprints, hooks (access log, auth, CORS) and
error handlers, in one place."""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import unquote_to_bytes

import click
from flask import Flask, Response, g, request

from ..config import Config
from ..errors import ConfigError, InvalidRequest, InvalidSignature, WsiError
from .auth import verify
from .deadline import init_deadlines
from .errors import register_error_handlers
from .iiif import require_viewer_scope
from .logs import configure_logging, init_access_log
from .paths import (
    iiif_viewer_slide,
    parse_iiif_path,
    slide_viewer_slide,
    tile_viewer_slide,
)
from .services import build_services, services

logger = logging.getLogger(__name__)

PUBLIC, SIGNED = "public", "signed"
ViewerScope = Callable[[str], "str | None"]
# Every endpoint's auth, in one table (``create_app`` refuses an endpoint missing here):
# PUBLIC never needs a signature; SIGNED needs ``exp`` + ``sig``; a function accepts, besides
# a signature, the viewer token of the slide it returns for the route's ``rest`` (None: only a
# signature; a IIIF image so authorised must also be one info.json advertises:
# ``iiif.require_viewer_scope``). /metrics needs auth (API.md).
ENDPOINT_AUTH: dict[str, str | ViewerScope] = {
    "health.health": PUBLIC,
    "health.ready": PUBLIC,
    "index.index": SIGNED,
    "static": PUBLIC,
    "health.metrics": SIGNED,
    "slides.list_slides": SIGNED,
    "slides.slide": slide_viewer_slide,
    "tiles.tile": tile_viewer_slide,
    "iiif.image": iiif_viewer_slide,
    "viewer.view": SIGNED,
}
PUBLIC_ENDPOINTS = frozenset(k for k, v in ENDPOINT_AUTH.items() if v == PUBLIC)
CORS_EXPOSED = ("ETag, X-Tile-Cache-Hit, X-Tile-Quality, X-Thumbnail-Size-Clamped, "
                "X-Thumbnail-Requested-Size, X-Thumbnail-Actual-Size, Server-Timing, "
                "X-Request-Id")


def create_app(config: Config | None = None) -> Flask:
    """Build the app; ``config`` defaults to ``Config.from_env()`` (``ConfigError`` names a
    bad variable). Services (storage client, caches) are created here, per process."""
    config = config or _config_from_env()
    configure_logging()
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.url_map.strict_slashes = False
    app.url_map.merge_slashes = False  # ids may hold "//"; never an HTML redirect
    app.extensions["wsi_streamer"] = build_services(config)

    from . import health, iiif, index, slides, tiles, viewer
    for module in (health, index, slides, tiles, iiif, viewer):
        app.register_blueprint(module.bp)
    unlisted = {rule.endpoint for rule in app.url_map.iter_rules()} - ENDPOINT_AUTH.keys()
    if unlisted:
        raise RuntimeError(f"endpoints without an auth entry in ENDPOINT_AUTH: {unlisted}")

    init_access_log(app)
    init_deadlines(app)
    app.before_request(_bind_storage_slot)
    app.teardown_request(_release_storage_slot)
    if config.auth_enabled:
        app.before_request(_require_signature)
    app.after_request(_cors)
    app.after_request(_security_headers)
    register_error_handlers(app)

    from .cli import register_commands
    register_commands(app)
    logger.info("wsi_streamer serving %s (auth %s)", config.storage_description,
                "on" if config.auth_enabled else "off")
    return app


class CommandLineConfigError(ConfigError, click.ClickException):
    """A ``ConfigError`` that click prints as one ``Error: ...`` line (no traceback) when the
    app is built by a command (``flask --app wsi_streamer check``)."""

    def __init__(self, message: str) -> None:
        click.ClickException.__init__(self, message)


def _config_from_env() -> Config:
    try:
        return Config.from_env()
    except ConfigError as exc:
        if click.get_current_context(silent=True) is None:
            raise
        raise CommandLineConfigError(str(exc)) from None


def _viewer_slide() -> str | None:
    """The slide id whose viewer token may authorise this request (ENDPOINT_AUTH), else
    None."""
    scope = ENDPOINT_AUTH.get(request.endpoint or "")
    rest = (request.view_args or {}).get("rest")
    if not callable(scope) or not isinstance(rest, str):
        return None
    try:
        return scope(rest)
    except WsiError:
        return None  # malformed URL: only a full signature can authorise it


def _require_signature() -> None:
    if request.method == "OPTIONS" or request.endpoint is None:
        return  # preflight, or an unknown route: let it 404
    scope = ENDPOINT_AUTH[request.endpoint]
    if scope == PUBLIC:
        return
    config = services().config
    assert config.auth_secret is not None
    params = list(request.args.items(multi=True))
    rest = (request.view_args or {}).get("rest")
    if request.endpoint == "iiif.image" and isinstance(rest, str):
        token = parse_iiif_path(rest).token
        if token is not None:  # a viewer token in the path: as if it were in the query
            params = [("exp", token[0]), ("vt", token[1]), *params]
    verify(config.auth_secret, params, path=_signed_path,
           viewer_slide=_viewer_slide() if callable(scope) else None)
    if request.endpoint == "iiif.image" and isinstance(rest, str) and not any(
            name == "sig" for name, _ in params):  # authorised by the slide's viewer token
        require_viewer_scope(rest)


def _signed_path() -> str:
    """The path a signature must cover: the request path exactly as sent (``RAW_URI``),
    provided it decodes to exactly the path that is routed (``SCRIPT_NAME`` + ``PATH_INFO``),
    so no spelling (``//``, ``%252F``, a server-side prefix split) can route one signed URL to
    another resource. A decoded ``?`` is refused: ``/x%3Fa=1`` would sign like ``/x?a=1``."""
    routed = request.root_path + request.path
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if raw is None:  # a server that keeps no raw URI: the decoded path is all there is
        path = routed
    else:
        try:  # WSGI strings are latin-1 decoded bytes; the signed text is their UTF-8
            path = raw.split("?", 1)[0].encode("latin-1").decode("utf-8")
        except UnicodeError:
            raise InvalidSignature("the request path is not UTF-8") from None
        decoded = unquote_to_bytes(path.encode()).decode("utf-8", "replace")
        if not path.startswith("/") or decoded != routed:
            raise InvalidSignature("signed URLs need a plain path that decodes to the "
                                   "routed path")
    if "?" in routed:
        raise InvalidRequest("a signed path cannot contain '?' (%3F)")
    return path


def _bind_storage_slot() -> None:
    """The request's ticket to its worker's storage slots (``io.slots``): taken only when the
    request first needs storage, so ``/health`` and cached tiles always find a thread."""
    g.storage_slot = services().slots.bound()
    g.storage_slot.__enter__()


def _release_storage_slot(exc: BaseException | None) -> None:
    cm = g.pop("storage_slot", None)
    if cm is not None:
        cm.__exit__(None, None, None)


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


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
