"""gunicorn -c gunicorn.conf.py: gthread workers serving ``wsi_streamer:create_app()``.

Environment: WSI_HOST, WSI_PORT, WSI_WORKERS (default min(4, cores)), WSI_THREADS (8),
WSI_WORKER_TIMEOUT (60 s), WSI_KEEPALIVE (75 s), WSI_LOG_LEVEL, plus the app's WSI_*."""

from wsi_streamer.server.gunicorn_settings import post_worker_init, settings

globals().update(settings())
__all__ = ["post_worker_init"]  # the hook: TCP_NODELAY and malloc settings per worker
