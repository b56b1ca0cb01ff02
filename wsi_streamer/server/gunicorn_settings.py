"""gunicorn settings from the environment, shared by ``gunicorn.conf.py`` and
``wsi-streamer serve``. gthread workers (``gunicorn_worker``: JSON error pages); nothing
network-related is created before fork."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from .memory import tune_malloc


def settings(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    cores = os.cpu_count() or 1
    return {
        "bind": f"{env.get('WSI_HOST', '0.0.0.0')}:{env.get('WSI_PORT', '3000')}",
        "workers": int(env.get("WSI_WORKERS", str(min(4, cores)))),
        "threads": int(env.get("WSI_THREADS", "8")),
        # gthread, with gunicorn's own 400/414/431 pages written as the API's JSON errors.
        "worker_class": "wsi_streamer.server.gunicorn_worker.JsonErrorThreadWorker",
        "keepalive": int(env.get("WSI_KEEPALIVE", "75")),
        "timeout": int(env.get("WSI_WORKER_TIMEOUT", "60")),
        "graceful_timeout": 20,
        "limit_request_line": 8190,  # gunicorn's maximum: long slide ids and signed queries
        "max_requests": int(env.get("WSI_MAX_REQUESTS", "0")),
        "max_requests_jitter": 100,
        "preload_app": False,  # each worker builds its own boto3 client and caches
        "accesslog": None,  # the app logs one line per request itself
        "errorlog": "-",
        "loglevel": env.get("WSI_LOG_LEVEL", "info"),
        "wsgi_app": "wsi_streamer:create_app()",
        # gunicorn >= 23 opens a control socket under $HOME; not wanted with a read-only root.
        "control_socket_disable": env.get("WSI_CONTROL_SOCKET", "false").lower() != "true",
        "forwarded_allow_ips": env.get("WSI_FORWARDED_ALLOW_IPS", "127.0.0.1"),
        # Never take SCRIPT_NAME / PATH_INFO from request headers (gunicorn's default trusts
        # them from forwarded_allow_ips, i.e. any local process): they would re-split a
        # signed path. A prefix deployment sets SCRIPT_NAME in gunicorn's environment.
        "forwarder_headers": "",
    }


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
