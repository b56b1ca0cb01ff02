"""One access line per request: method, path (never the query, so never ``sig``), status,
latency, tile cache hit, and the storage requests and bytes the request caused; the request's
id (a sane incoming ``X-Request-Id``, else a new one) is returned as ``X-Request-Id``, and the
request is counted in the Prometheus metrics (``metrics``).

``WSI_LOG_FORMAT=json`` (``JsonFormatter``): one JSON object per line, access lines with the
same fields as keys plus ``request_id``, and every other record (warnings, errors with their
traceback) with ``request_id`` when it happened in a request.

Credentials never reach a line: the query is never logged, and ``redact`` replaces the viewer
token of a IIIF path (``vt/{exp}/{token}/`` -> ``vt/{exp}/REDACTED/``) and any ``sig=``/``vt=``
value in the access line and in the error lines of ``server.errors``.

Request text is logged escaped (``escape``): a decoded path may hold CR/LF (a forged line), NUL
(a binary log) or terminal escapes. The handler ``configure_logging`` installs escapes every
message of the package's loggers as well, and the control characters of tracebacks."""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from typing import Any

from flask import Flask, Response, current_app, g, has_request_context, request

from ..io.range_reader import track_request
from . import metrics
from .services import services

access_logger = logging.getLogger("wsi_streamer.access")

# C0 and C1 controls, DEL and the Unicode line/paragraph separators; ``escape`` adds the
# backslash itself, so an escaped "\\n" in a field cannot be mistaken for a literal one.
_CONTROL = re.compile("[\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]")
_UNSAFE = re.compile("[\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\\\]")


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\\":
        return "\\\\"
    code = ord(char)
    return {10: "\\n", 13: "\\r", 9: "\\t"}.get(code) or (
        f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


# A viewer token in a path (IIIF: /iiif/3/vt/{exp}/{token}/{id}), and credentials in a query.
_PATH_TOKEN = re.compile(r"((?:^|/)vt/[^/]*/)[^/]+", re.IGNORECASE)
_QUERY_TOKEN = re.compile(r"((?:^|[?&;])(?:sig|vt)=)[^&;#\s]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` (a path, a URL, a message naming one) without its credentials: the token of
    a ``vt/{exp}/{token}`` path and the values of ``sig=`` and ``vt=`` become ``REDACTED``."""
    return _QUERY_TOKEN.sub(r"\1REDACTED", _PATH_TOKEN.sub(r"\1REDACTED", text))


def log_path() -> str:
    """The request's path as logged: ``redact``ed and ``escape``d."""
    return escape(redact(request.path))


def escape(text: str) -> str:
    """``text`` with control characters and backslashes written as Python-style escapes:
    one log record stays one printable line."""
    return _UNSAFE.sub(_escape_char, text)


def escape_controls(text: str) -> str:
    """``text`` with its control characters escaped (backslashes left as they are)."""
    return _CONTROL.sub(_escape_char, text)


class EscapingFormatter(logging.Formatter):
    """Escapes the control characters of every message (fields are already ``escape``d where
    they come from a request); tracebacks keep their line breaks and nothing else."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        text = redact(super().formatException(ei))
        return "\n".join(escape_controls(line) for line in text.split("\n"))


# An incoming id is kept when it is short and plain (no spaces, quotes or controls); anything
# else is replaced, so a client cannot forge log content through it.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
ACCESS_FORMAT = "%s %s %d %.1fms cache_hit=%s storage_requests=%d storage_bytes=%d pid=%d"


def request_id() -> str:
    """The id of the request being served (``X-Request-Id``)."""
    found: str = g.request_id
    return found


def _start() -> None:
    g.started = time.perf_counter()
    incoming = request.headers.get("X-Request-Id", "")
    g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
    metrics.request_started()
    g.in_flight = True
    g.cache_hit = None
    g.io_cm = track_request()
    g.io_stats = g.io_cm.__enter__()


def _finish(response: Response) -> Response:
    started = getattr(g, "started", None)
    stats = getattr(g, "io_stats", None)
    if started is None or stats is None:
        return response
    elapsed_ms = (time.perf_counter() - started) * 1000
    hit = g.get("cache_hit")
    if access_logger.isEnabledFor(logging.INFO):
        # makeRecord + handle: the same record as .info() without the caller lookup, which
        # is a third of the logging cost of a cached tile.
        path = log_path()
        access = {"method": request.method, "path": redact(request.path),
                  "status": response.status_code, "ms": round(elapsed_ms, 1),
                  "cache_hit": hit, "storage_requests": stats.requests,
                  "storage_bytes": stats.bytes, "pid": os.getpid(),
                  "request_id": g.request_id}
        access_logger.handle(access_logger.makeRecord(
            access_logger.name, logging.INFO, __file__, 0, ACCESS_FORMAT,
            (escape(request.method), path, response.status_code, elapsed_ms,
             "-" if hit is None else str(hit).lower(), stats.requests, stats.bytes,
             os.getpid()), None, extra={"access": access}))
    metrics.observe_request(request.endpoint, response.status_code, elapsed_ms / 1000,
                            stats.requests)
    response.headers.add("Server-Timing", f"app;dur={elapsed_ms:.1f}")
    response.headers["X-Request-Id"] = g.request_id
    return response


def _teardown(exc: BaseException | None) -> None:
    cm = g.pop("io_cm", None)
    if cm is not None:
        cm.__exit__(None, None, None)
    if g.pop("in_flight", False):
        metrics.request_ended()
    metrics.sync(current_app)


def init_access_log(app: Flask) -> None:
    """Install the per-request hooks (access line, request id, metrics) on ``app``, whose
    services are built; switch the package's handler to JSON when ``log_format`` says so."""
    app.before_request(_start)
    app.after_request(_finish)
    app.teardown_request(_teardown)
    metrics.init_metrics(app)
    if services(app).config.log_format == "json":
        use_json_logs()


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (``json.dumps`` escapes every control
    character): ``time`` (ISO 8601, UTC), ``level``, ``logger``, then an access record's
    fields or ``message``; ``request_id`` inside a request; ``exc_info`` as text."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name}
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            out.update(access)
        else:
            out["message"] = record.getMessage()
            if has_request_context() and "request_id" in g:
                out["request_id"] = g.request_id
        if record.exc_info:
            out["exc_info"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


def use_json_logs() -> None:
    """The package's own handler (``configure_logging``) writes ``JsonFormatter`` lines."""
    for handler in logging.getLogger("wsi_streamer").handlers:
        if getattr(handler, "wsi_streamer", False):
            handler.setFormatter(JsonFormatter())


def configure_logging(level: int = logging.INFO) -> None:
    """Give ``wsi_streamer`` loggers a handler unless something (gunicorn, tests) did."""
    package = logging.getLogger("wsi_streamer")
    if package.handlers or logging.getLogger().handlers:
        package.setLevel(min(package.level or level, level))
        return
    handler = logging.StreamHandler()
    handler.wsi_streamer = True  # type: ignore[attr-defined]
    handler.setFormatter(EscapingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package.addHandler(handler)
    package.setLevel(level)
