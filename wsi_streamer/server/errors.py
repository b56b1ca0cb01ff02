"""The only mapping from exceptions to HTTP errors: JSON ``{"error", "message", "status"}``,
never an HTML page or a trace. 5xx are logged once here, with the traceback, except the
expected ones (one warning line each):

- ``Overloaded``: 503 ``overloaded`` with Retry-After.
- ``DeadlineExceeded`` (the request's budget, ``WSI_REQUEST_DEADLINE``, or an overview
  build's, ran out): 503 ``deadline_exceeded`` with Retry-After, not 504: this server is the
  origin, not a gateway that waited on one, and the cause is the same as ``Overloaded``'s
  (busy CPU, slow storage, a costly slide). A retry usually finds the bytes fetched and the
  overview built by then (block and tile caches), and Retry-After spaces it.
- ``WorkAbandoned`` (the client went away mid-render): 499 (nginx's "client closed request")
  with ``Connection: close``. Nobody reads it; it makes the access line and the metrics say
  what happened, with one info line instead of a trace."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from ..errors import (
    AuthError,
    ConfigError,
    DeadlineExceeded,
    DecodeError,
    EncodeError,
    InvalidLevel,
    InvalidParameter,
    InvalidQuality,
    InvalidRequest,
    MetricsOff,
    NotImplementedFeature,
    Overloaded,
    RedirectRefused,
    SlideNotFound,
    StorageConnectionError,
    StorageError,
    StorageTimeout,
    TileOutOfBounds,
    UnsupportedFormat,
    WorkAbandoned,
    WsiError,
)
from ..limits import RETRY_AFTER_S
from .logs import escape, log_path, redact

logger = logging.getLogger(__name__)

CLIENT_GONE = 499  # nginx's status for "client closed request"

ERRORS: dict[type[BaseException], tuple[int, str]] = {
    InvalidLevel: (400, "invalid_level"),
    TileOutOfBounds: (400, "tile_out_of_bounds"),
    InvalidQuality: (400, "invalid_quality"),
    InvalidParameter: (400, "invalid_parameter"),
    NotImplementedFeature: (501, "not_implemented"),
    InvalidRequest: (400, "invalid_request"),
    SlideNotFound: (404, "not_found"),
    UnsupportedFormat: (415, "unsupported_format"),
    DecodeError: (500, "decode_error"),
    EncodeError: (500, "encode_error"),
    StorageTimeout: (504, "storage_timeout"),
    RedirectRefused: (502, "redirect_refused"),
    StorageConnectionError: (502, "connection_error"),
    Overloaded: (503, "overloaded"),
    MetricsOff: (503, "metrics_off"),
    DeadlineExceeded: (503, "deadline_exceeded"),
    WorkAbandoned: (CLIENT_GONE, "client_gone"),
    StorageError: (500, "storage_error"),
    ConfigError: (500, "io_error"),
    WsiError: (500, "io_error"),
}
_AUTH_STATUS = {"invalid_signature_format": 400, "invalid_expiry_format": 400}
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request",
               413: "request_too_large", 414: "uri_too_long"}


def error_response(status: int, code: str, message: str) -> Response:
    response = jsonify({"error": code, "message": message, "status": status})
    response.status_code = status
    return response


def classify(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, AuthError):
        return _AUTH_STATUS.get(exc.code, 401), exc.code
    for cls in type(exc).__mro__:
        if cls in ERRORS:
            return ERRORS[cls]
    return 500, "io_error"


def handle_wsi_error(exc: WsiError) -> Response:
    status, code = classify(exc)
    if isinstance(exc, WorkAbandoned):  # nobody is listening: no traceback, no warning
        logger.info("%s %s: %s", escape(request.method), log_path(), escape(redact(str(exc))))
        response = error_response(status, code, str(exc))
        response.headers["Connection"] = "close"
        return response
    if isinstance(exc, Overloaded | DeadlineExceeded):  # expected under load: no traceback
        logger.warning("%s %s: %s", escape(request.method), log_path(),
                       escape(redact(str(exc))))
        response = error_response(status, code, str(exc))
        response.headers["Retry-After"] = str(
            exc.retry_after if isinstance(exc, Overloaded) else RETRY_AFTER_S)
        return response
    if status >= 500 and not isinstance(exc, MetricsOff):  # MetricsOff: warned when it began
        logger.error("%s %s failed: %s", escape(request.method), log_path(),
                     escape(redact(str(exc))), exc_info=exc)
    return error_response(status, code, str(exc) + _fallback_advice(exc))


def _fallback_advice(exc: WsiError) -> str:
    """For a format the native drivers refuse (NDPI, MRXS, Deflate tiles...; not a limit),
    while the OpenSlide fallback is off: the setting that serves it."""
    from .services import services

    if type(exc) is not UnsupportedFormat or services().config.openslide_fallback:
        return ""
    return ("; OpenSlide can serve it from a local folder: --openslide-fallback "
            "(WSI_OPENSLIDE_FALLBACK=true, the [openslide] extra)")


def handle_http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    code = _HTTP_CODES.get(status, "http_error")
    message = "no such route" if status == 404 else (exc.description or exc.name)
    response = error_response(status, code, message)
    if status == 405 and exc.response is None:
        allowed = getattr(exc, "valid_methods", None)
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
    return response


def handle_unexpected(exc: Exception) -> Response:
    logger.error("%s %s failed unexpectedly", escape(request.method), log_path(),
                 exc_info=exc)
    return error_response(500, "io_error", "internal error")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(WsiError, handle_wsi_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
