"""gunicorn settings from ``Config`` (the one validated reader of the environment: a bad
value stops the master with a message naming the variable), shared by ``gunicorn.conf.py``
and ``wsi-streamer serve``. gthread workers (``gunicorn_worker``: JSON error pages); nothing
network-related is created before fork.

Metrics (``metrics``): prometheus_client's multiprocess mode needs ``PROMETHEUS_MULTIPROC_DIR``
set before a worker imports it. ``settings`` sets it, to ``Config.metrics_dir`` or a new
private folder (``wsi_streamer-metrics-*`` in the temp dir, removed at exit); a given folder
must be private to this user (``slide.cachedir.ensure_private_dir``). ``on_starting`` deletes
prometheus_client's files there, and only those (a fresh master starts from zero: Prometheus
sees a counter reset); ``child_exit`` marks a dead worker (its live gauges go, its counters
stay, so host totals never go backwards when a worker is replaced)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from typing import Any

from gunicorn.glogging import Logger as _GunicornLogger

from ..config import Config
from ..errors import ConfigError
from ..slide.cachedir import ensure_private_dir
from .memory import tune_malloc

_PRIVATE_METRICS: list[str] = []  # folders settings() created, removed by on_exit
METRICS_SETTING = "PROMETHEUS_MULTIPROC_DIR"
METRIC_FILE = re.compile(r"(?:counter|histogram|summary|gauge_[a-z]+)_[0-9]+\.db")


def settings(config: Config | None = None) -> dict[str, Any]:
    """gunicorn's settings for ``config`` (default ``Config.from_env()``, which raises
    ``ConfigError`` naming a bad variable)."""
    config = config or Config.from_env()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir(config)
    return {
        "bind": f"{config.host}:{config.port}",
        "workers": config.resolved_workers,
        "threads": config.threads,
        # gthread, with gunicorn's own 400/414/431 pages written as the API's JSON errors.
        "worker_class": "wsi_streamer.server.gunicorn_worker.JsonErrorThreadWorker",
        "keepalive": config.keepalive,
        "timeout": config.worker_timeout,
        "graceful_timeout": 20,
        "limit_request_line": 8190,  # gunicorn's maximum: long slide ids and signed queries
        "max_requests": config.max_requests,
        "max_requests_jitter": 100 if config.max_requests else 0,
        "preload_app": False,  # each worker builds its own boto3 client and caches
        "accesslog": None,  # the app logs one line per request itself
        "errorlog": "-",
        "loglevel": config.log_level,
        "logger_class": ("wsi_streamer.server.gunicorn_settings.JsonLogger"
                         if config.log_format == "json" else "gunicorn.glogging.Logger"),
        "wsgi_app": "wsi_streamer:create_app()",
        # gunicorn >= 23 opens a control socket under $HOME; not wanted with a read-only root.
        "control_socket_disable": not config.control_socket,
        "forwarded_allow_ips": config.forwarded_allow_ips,
        # Never take SCRIPT_NAME / PATH_INFO from request headers (gunicorn's default trusts
        # them from forwarded_allow_ips, i.e. any local process): they would re-split a
        # signed path. A prefix deployment sets SCRIPT_NAME in gunicorn's environment.
        "forwarder_headers": "",
    }


def metrics_dir(config: Config) -> str:
    """``config.metrics_dir`` (created 0700 if missing; its real path, checked up to ``/`` by
    ``ensure_private_dir``), else the folder already chosen for
    this process (a config reload keeps it), else a new private one. ``ConfigError`` naming
    ``PROMETHEUS_MULTIPROC_DIR`` when the given folder is not private to this user (another
    user could plant or swap metric files, and ``on_starting`` deletes files there), cannot
    be created, or holds a ``*.db`` that is not a metric file (a diskcache ``cache.db``:
    prometheus_client reads every ``*.db`` there, so ``/metrics`` would fail)."""
    folder = config.metrics_dir
    if folder:
        try:
            folder = ensure_private_dir(folder, setting=METRICS_SETTING, what="metrics folder")
            foreign = sorted(name for name in os.listdir(folder)
                             if name.endswith(".db") and not is_metric_file(name))
        except OSError as exc:
            raise ConfigError(f"{METRICS_SETTING}: cannot use {folder}: "
                              f"{exc.strerror or exc}") from None
        if foreign:
            raise ConfigError(f"{METRICS_SETTING}: {folder} holds {', '.join(foreign[:3])}, "
                              "not prometheus_client's files (it reads every *.db there): "
                              "give the metrics a folder of their own")
        return folder
    if not _PRIVATE_METRICS:
        _PRIVATE_METRICS.append(tempfile.mkdtemp(prefix="wsi_streamer-metrics-"))
    return _PRIVATE_METRICS[0]


def is_metric_file(name: str) -> bool:
    """Whether ``name`` is one of prometheus_client's multiprocess files: ``<type>_<pid>.db``
    with type ``counter``, ``histogram``, ``summary`` or ``gauge_<mode>`` (its
    ``values.MultiProcessValue``). Anything else in the folder (a ``cache.db``) is not."""
    return METRIC_FILE.fullmatch(name) is not None


def on_starting(server: Any) -> None:
    """gunicorn hook, in the master before the first fork: no metric file of an earlier run
    is left (they would be summed with this run's); other files in the folder are kept. A
    folder without room for every worker's files turns metrics off (``metricsfiles``)."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        for entry in os.scandir(folder):
            if is_metric_file(entry.name) and entry.is_file(follow_symlinks=False):
                os.remove(entry.path)
        # Imported here, after settings() set the variable: prometheus_client picks its
        # multiprocess mode when first imported, and the workers inherit the master's choice.
        from . import metricsfiles

        workers = getattr(getattr(server, "cfg", None), "workers", 1)
        reason = metricsfiles.short_of_room(folder, workers)
        if reason:  # one warning here; the workers forked from now on inherit "off"
            metricsfiles.turn_off(reason)


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook, in the master when a worker exits: drop its live gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    """gunicorn hook, in the master at shutdown: remove the private metrics folder."""
    for folder in _PRIVATE_METRICS:
        shutil.rmtree(folder, ignore_errors=True)


def set_nodelay(worker: Any) -> None:
    """gunicorn ``post_worker_init`` hook: TCP_NODELAY on listening sockets, inherited by the
    accepted ones, so small responses are not held back by Nagle + delayed ACK."""
    for listener in getattr(worker, "sockets", []):
        sock = getattr(listener, "sock", None)
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def post_worker_init(worker: Any) -> None:
    """gunicorn ``post_worker_init`` hook: TCP_NODELAY (``set_nodelay``) and the malloc
    settings that keep a worker's RSS flat under image traffic (``memory.tune_malloc``)."""
    set_nodelay(worker)
    tune_malloc()


HOOKS = {"on_starting": on_starting, "child_exit": child_exit, "on_exit": on_exit,
         "post_worker_init": post_worker_init}

class JsonLogger(_GunicornLogger):  # type: ignore[misc]
    """gunicorn's logger with its error log (master and worker lines) as JSON objects
    (``logs.JsonFormatter``), for ``WSI_LOG_FORMAT=json``."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        from .logs import JsonFormatter

        for handler in self.error_log.handlers:
            handler.setFormatter(JsonFormatter())
