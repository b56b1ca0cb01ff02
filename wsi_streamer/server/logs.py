"""One access line per request: method, path (never the query, so never ``sig``), status,
latency, tile cache hit, and the storage requests and bytes the request caused."""

from __future__ import annotations

import logging
import os
import time

from flask import Flask, Response, g, request

from ..io.range_reader import track_request

access_logger = logging.getLogger("wsi_streamer.access")


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
            (request.method, request.path, response.status_code, elapsed_ms,
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
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package.addHandler(handler)
    package.setLevel(level)
