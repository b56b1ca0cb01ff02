"""Prometheus metrics that add up across the workers of a host.

Under gunicorn every worker writes its values to files in ``PROMETHEUS_MULTIPROC_DIR``
(prometheus_client's multiprocess mode; ``gunicorn_settings`` creates a private folder when the
variable is unset, wipes it when the master starts and marks a dead worker's files in
``child_exit``), and a scrape of ``/metrics`` on any worker aggregates all of them: counters and
histograms are summed over every worker that ever ran since the master started (a restarted
worker's counts stay, so totals never go backwards), gauges over the live ones. Without the
variable (``flask run``, tests) the values are this process's own.

The lower layers keep plain per-process counters (``IoStats``, ``TileStats``); ``sync`` turns
their growth since the last call into counter increments, at the end of every request and
before every scrape. Label sets are bounded: ``endpoint`` is the Flask endpoint name (or
``unmatched``), ``status`` the HTTP status code.

Metrics never take the server down (``metricsfiles``): a folder short of room at start, or a
metric file that cannot grow later, turns them off in that process with one warning; requests
are served as before and ``/metrics`` answers 503 ``metrics_off`` with the reason.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

from flask import Flask
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from ..errors import MetricsOff
from ..io.range_reader import listen_in_flight
from . import metricsfiles
from .services import Services, services

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_COUNT_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256)
EXTENSION = "wsi_streamer.metrics"
T = TypeVar("T")


@dataclass(frozen=True)
class Instruments:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    request_storage: Histogram
    in_flight: Gauge
    storage_in_flight: Gauge
    counters: dict[str, Counter]
    open_slides: Gauge
    block_cache_bytes: Gauge
    worker_up: Gauge


# (metric name without _total, help, Services snapshot key): counters fed by ``sync``.
_SYNCED = (
    ("wsi_storage_requests", "storage requests (S3 GETs/HEADs, file reads)", "storage_requests"),
    ("wsi_storage_bytes", "bytes requested from storage", "storage_bytes"),
    ("wsi_block_cache_hits", "block cache lookups served from memory", "block_hits"),
    ("wsi_block_cache_misses", "block cache lookups that went to storage", "block_misses"),
    ("wsi_tiles_rendered", "tiles decoded and encoded", "tiles_rendered"),
    ("wsi_tile_cache_hits", "tile requests served from the host tile cache", "tile_hits"),
    ("wsi_tile_cache_misses", "tile requests not in the host tile cache", "tile_misses"),
)


def instruments() -> Instruments | None:
    """This process's metric objects (one set per process: prometheus_client keeps a value
    per process, in files under ``PROMETHEUS_MULTIPROC_DIR`` when it is set); None when metrics
    are off (``metricsfiles.off_reason``)."""
    if metricsfiles.off_reason() is None:
        folder = multiprocess_dir()
        reason = folder and metricsfiles.short_of_room(folder, workers=1)
        if reason:
            metricsfiles.turn_off(reason)
        else:
            return _guarded(_instruments)
    return None


def _guarded(work: Callable[[], T]) -> T | None:
    """``work()``, or None with metrics turned off when writing a metric file fails."""
    if metricsfiles.off_reason() is not None:
        return None
    try:
        return work()
    except OSError as exc:  # a full folder (ENOSPC from ReservedMmapedDict's reservation)
        metricsfiles.turn_off(metricsfiles.failure(exc))
        return None


@cache
def _instruments() -> Instruments:
    if multiprocess_dir():
        metricsfiles.reserve_files()
    registry = CollectorRegistry(auto_describe=True)
    counters = {name: Counter(name, text, registry=registry) for name, text, _ in _SYNCED}
    worker_up = Gauge("wsi_worker_up", "1 per live worker process (label pid)",
                      registry=registry, multiprocess_mode="liveall")
    worker_up.set(1)
    return Instruments(
        registry=registry,
        requests=Counter("wsi_http_requests", "HTTP requests answered",
                         ("endpoint", "status"), registry=registry),
        latency=Histogram("wsi_http_request_duration_seconds",
                          "time from request start to response, by endpoint", ("endpoint",),
                          buckets=_LATENCY_BUCKETS, registry=registry),
        request_storage=Histogram("wsi_http_request_storage_requests",
                                  "storage requests caused by one HTTP request, by endpoint",
                                  ("endpoint",), buckets=_COUNT_BUCKETS, registry=registry),
        in_flight=Gauge("wsi_http_requests_in_flight", "HTTP requests being served",
                        registry=registry, multiprocess_mode="livesum"),
        storage_in_flight=Gauge("wsi_storage_requests_in_flight",
                                "storage requests (S3, HTTP, file reads) sent and not yet answered",
                                registry=registry, multiprocess_mode="livesum"),
        counters=counters,
        open_slides=Gauge("wsi_open_slides", "slides held open (parsed structure)",
                          registry=registry, multiprocess_mode="livesum"),
        block_cache_bytes=Gauge("wsi_block_cache_bytes", "bytes held by the block caches",
                                registry=registry, multiprocess_mode="livesum"),
        worker_up=worker_up,
    )


@dataclass
class _Synced:
    """The per-process totals already turned into counter increments, per app."""

    last: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _totals(svc: Services) -> dict[str, int]:
    storage = svc.storage.stats.snapshot()
    blocks = svc.blocks.stats.snapshot()
    tiles = svc.tiles.stats
    return {"storage_requests": storage["requests"], "storage_bytes": storage["bytes"],
            "block_hits": blocks["hits"], "block_misses": blocks["misses"],
            "tiles_rendered": tiles.rendered, "tile_hits": tiles.cache_hits,
            "tile_misses": tiles.cache_misses}


def sync(app: Flask) -> None:
    """Add the growth of the services' counters since the last call to the Prometheus
    counters, and set the gauges. Thread-safe; cheap (a few locked reads)."""
    state: _Synced | None = app.extensions.get(EXTENSION)
    if state is None:
        return
    svc = services(app)
    found = instruments()
    if found is None:
        return
    with state.lock:
        totals = _totals(svc)
        last, state.last = state.last, totals

        def update() -> None:
            for name, _, key in _SYNCED:
                grown = totals[key] - last.get(key, 0)
                if grown > 0:
                    found.counters[name].inc(grown)
            found.open_slides.set(len(svc.registry))
            found.block_cache_bytes.set(svc.blocks.cached_bytes)

        _guarded(update)


def observe_request(endpoint: str | None, status: int, seconds: float,
                    storage_requests: int) -> None:
    found = instruments()
    if found is None:
        return
    name = endpoint or "unmatched"

    def observe() -> None:
        found.requests.labels(name, str(status)).inc()
        found.latency.labels(name).observe(seconds)
        found.request_storage.labels(name).observe(storage_requests)

    _guarded(observe)


def _add(gauge: Callable[[Instruments], Gauge], amount: float) -> None:
    found = instruments()
    if found is not None:
        _guarded(lambda: gauge(found).inc(amount))


def request_started() -> None:
    _add(lambda found: found.in_flight, 1)


def request_ended() -> None:
    _add(lambda found: found.in_flight, -1)


def _storage_sent(**_: Any) -> None:
    _add(lambda found: found.storage_in_flight, 1)


def _storage_answered(**_: Any) -> None:
    _add(lambda found: found.storage_in_flight, -1)


def init_metrics(app: Flask) -> None:
    """Start counting for ``app`` (after its services are built): the per-app sync state and
    the requests in flight: for S3 botocore's hooks (``before-send`` / ``response-received``,
    emitted for answers and errors alike, retries included), for the other backends the
    ``io.range_reader.in_flight`` listeners."""
    app.extensions[EXTENSION] = _Synced()
    svc = services(app)
    sync(app)  # the starting totals (e.g. reads made while building) count too
    client = getattr(svc.storage, "client", None)
    events = getattr(getattr(client, "meta", None), "events", None)
    if events is not None:
        events.register("before-send.s3", _storage_sent)
        events.register("response-received.s3", _storage_answered)
    else:
        listen_in_flight(_storage_sent, _storage_answered)


class _WithRatios:
    """A collector adding ``wsi_tile_cache_hit_ratio`` and ``wsi_block_cache_hit_ratio``
    (hits / lookups since the server started) to what ``source`` collects."""

    def __init__(self, source: Any) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        totals: dict[str, float] = {}
        for family in self._source.collect():
            for sample in family.samples:
                if not sample.labels:
                    totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
            yield family
        for cache_name, what in (("tile", "tile requests"), ("block", "block lookups")):
            hits = totals.get(f"wsi_{cache_name}_cache_hits_total", 0.0)
            misses = totals.get(f"wsi_{cache_name}_cache_misses_total", 0.0)
            ratio = GaugeMetricFamily(f"wsi_{cache_name}_cache_hit_ratio",
                                      f"share of {what} that hit, since the server started")
            ratio.add_metric([], hits / (hits + misses) if hits + misses else 0.0)
            yield ratio


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def render(app: Flask) -> bytes:
    """The Prometheus text exposition: every worker's values when in multiprocess mode.
    ``MetricsOff`` (503) when metrics are off in this process."""
    sync(app)
    reason = metricsfiles.off_reason() if instruments() is None else None
    if reason:
        raise MetricsOff(f"metrics are off in this worker: {metricsfiles.SETTING}: {reason}")
    if multiprocess_dir():
        source: Any = CollectorRegistry()
        MultiProcessCollector(source)  # type: ignore[no-untyped-call]
    else:
        source = _instruments().registry
    return generate_latest(_WithRatios(source))
