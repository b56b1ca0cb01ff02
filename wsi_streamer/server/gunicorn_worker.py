"""gunicorn's gthread worker, with the errors gunicorn answers itself (before the app runs: a
request line over ``limit_request_line`` (414), headers over ``limit_request_field_size`` or
``limit_request_fields`` (431), a malformed request (400), ...) written as the API's JSON
error (``{"error", "message", "status"}``, ``X-Content-Type-Options: nosniff``) instead of
gunicorn's HTML page. The message never echoes the request; the log line is escaped."""

from __future__ import annotations

import json
import ssl
from typing import Any

from gunicorn import util
from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import ThreadWorker

from .logs import escape, redact


def _classes(*names: str) -> tuple[type[BaseException], ...]:
    """The named gunicorn exception classes this gunicorn version has."""
    return tuple(cls for cls in (getattr(http_errors, n, None) for n in names)
                 if isinstance(cls, type))


# (classes, status, reason, code, message); the first match wins, ParseException last.
_RULES: tuple[tuple[tuple[type[BaseException], ...], int, str, str, str], ...] = (
    (_classes("InvalidResponseHeader", "InvalidResponseHeaderName"), 500,
     "Internal Server Error", "io_error", "internal error"),
    (_classes("LimitRequestLine"), 414, "URI Too Long", "uri_too_long",
     "the request line is too long"),
    (_classes("LimitRequestHeaders"), 431, "Request Header Fields Too Large",
     "headers_too_large", "the request headers are too large or too many"),
    (_classes("UnsupportedTransferCoding"), 501, "Not Implemented", "not_implemented",
     "unsupported transfer coding"),
    (_classes("ExpectationFailed"), 417, "Expectation Failed", "expectation_failed",
     "unsupported Expect header"),
    (_classes("ForbiddenProxyRequest") + (ssl.SSLError,), 403, "Forbidden", "forbidden",
     "request forbidden"),
    # Raised only when the path is outside the SCRIPT_NAME prefix of a prefix deployment.
    (_classes("ConfigurationProblem"), 404, "Not Found", "not_found", "no such route"),
    (_classes("ParseException"), 400, "Bad Request", "bad_request", "malformed HTTP request"),
)


def error_for(exc: BaseException) -> tuple[int, str, str, str] | None:
    """``(status, reason, code, message)`` for an exception gunicorn answers itself; None for
    anything else (a 500)."""
    for classes, status, reason, code, message in _RULES:
        if classes and isinstance(exc, classes):
            return status, reason, code, message
    return None


def json_error_bytes(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": code, "message": message, "status": status}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "X-Content-Type-Options: nosniff\r\n\r\n")
    return head.encode("latin-1") + body


class JsonErrorThreadWorker(ThreadWorker):  # type: ignore[misc]
    """``worker_class`` of ``gunicorn_settings``: a ``ThreadWorker`` whose own error pages
    are JSON. Everything else is gunicorn's."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        found = error_for(exc)
        peer = addr[0] if isinstance(addr, tuple) and addr else "unix"
        if found is None or found[0] >= 500:
            self.log.exception("Error handling request (%s)", escape(type(exc).__name__))
            status, reason, code, message = found or (
                500, "Internal Server Error", "io_error", "internal error")
        else:
            status, reason, code, message = found
            self.log.warning("Invalid request from ip=%s: %d %s", escape(str(peer)), status,
                             escape(redact(str(exc)))[:300])
        try:
            util.write_nonblock(client, json_error_bytes(status, reason, code, message))
        except Exception:  # noqa: BLE001 - the client may be gone; nothing more to do
            self.log.debug("Failed to send error message.")
