"""One access line per request: method, path (never the query, so never ``sig``), status,
latency, tile cache hit, and the storage requests and bytes the request caused.

Request text is logged escaped (``escape``): a decoded path may hold CR/LF (a forged line), NUL
(a binary log) or terminal escapes. The handler ``configure_logging`` installs escapes every
message of the package's loggers as well, and the control characters of tracebacks."""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

from flask import Flask, Response, g, request

from ..io.range_reader import track_request

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
        text = super().formatException(ei)
        return "\n".join(escape_controls(line) for line in text.split("\n"))


def _start() -> None:
    g.started = time.perf_counter()
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
        access_logger.handle(access_logger.makeRecord(
            access_logger.name, logging.INFO, __file__, 0,
            "%s %s %d %.1fms cache_hit=%s storage_requests=%d storage_bytes=%d pid=%d",
            (escape(request.method), escape(request.path), response.status_code, elapsed_ms,
             "-" if hit is None else str(hit).lower(), stats.requests, stats.bytes,
             os.getpid()), None))
    response.headers.add("Server-Timing", f"app;dur={elapsed_ms:.1f}")
    return response


def _teardown(exc: BaseException | None) -> None:
    cm = g.pop("io_cm", None)
    if cm is not None:
        cm.__exit__(None, None, None)


def init_access_log(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_finish)
    app.teardown_request(_teardown)


def configure_logging(level: int = logging.INFO) -> None:
    """Give ``wsi_streamer`` loggers a handler unless something (gunicorn, tests) did."""
    package = logging.getLogger("wsi_streamer")
    if package.handlers or logging.getLogger().handlers:
        package.setLevel(min(package.level or level, level))
        return
    handler = logging.StreamHandler()
    handler.setFormatter(EscapingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package.addHandler(handler)
    package.setLevel(level)
