"""gunicorn -c gunicorn.conf.py: gthread workers serving ``wsi_streamer:create_app()``.

Every setting comes from ``Config.from_env`` (``wsi_streamer.config.SETTINGS``: WSI_HOST,
WSI_PORT, WSI_WORKERS, WSI_THREADS, WSI_KEEPALIVE, WSI_WORKER_TIMEOUT, WSI_MAX_REQUESTS,
WSI_LOG_LEVEL, WSI_LOG_FORMAT, WSI_FORWARDED_ALLOW_IPS, PROMETHEUS_MULTIPROC_DIR, plus the
app's); a bad value stops the master with one line naming the variable."""

import sys

from wsi_streamer.errors import ConfigError
from wsi_streamer.server.gunicorn_settings import (  # the hooks gunicorn calls by name
    child_exit,
    on_exit,
    on_starting,
    post_worker_init,
    settings,
)

try:
    globals().update(settings())
except ConfigError as exc:
    sys.exit(f"wsi_streamer: {exc}")
# Metrics folder wiped at start, dead workers marked, TCP_NODELAY and malloc settings.
__all__ = ["child_exit", "on_exit", "on_starting", "post_worker_init"]
