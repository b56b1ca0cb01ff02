# syntax=docker/dockerfile:1
#
# wsi_streamer image: gunicorn (gthread workers) serving wsi_streamer:create_app().
#
#   docker build -t wsi_streamer .
#   docker run --rm -p 127.0.0.1:3000:3000 -v "$PWD/slides:/data/slides:ro" wsi_streamer
#
# That is for trying it on this machine. In a deployment gunicorn must never face clients
# directly (its threads read request headers with no deadline): put nginx with
# deploy/nginx/wsi_streamer.conf in front, as docker-compose.yml and deploy/kubernetes do
# (deploy/README.md, threat model).
#
# Two stages: the builder turns the project and every runtime dependency into wheels; the
# runtime stage installs only those wheels (no compiler, no build tools, no test extras).
# tests/integration/test_deploy.py parses this file and runs the same pip commands.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml setup.cfg README.md* ./
COPY wsi_streamer/ ./wsi_streamer/
RUN pip wheel --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    WSI_HOST=0.0.0.0 \
    WSI_PORT=3000 \
    WSI_SLIDES_DIR=/data/slides \
    WSI_TILE_CACHE_DIR=/var/cache/wsi_streamer/tiles

# HOME=/tmp: the user has no home; gunicorn puts its control socket under $HOME/.gunicorn and
# /tmp is the one writable path besides the tile cache (an emptyDir under Kubernetes).
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 wsi \
    && useradd --system --uid 10001 --gid wsi --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin wsi \
    && mkdir -p /data/slides /var/cache/wsi_streamer/tiles \
    && chown -R 10001:10001 /data /var/cache/wsi_streamer

# Wheels are bind-mounted from the builder, so they never become a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels wsi_streamer

WORKDIR /app
COPY gunicorn.conf.py ./gunicorn.conf.py

USER 10001:10001
EXPOSE 3000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('WSI_PORT', '3000'), timeout=4)"

CMD ["gunicorn", "-c", "gunicorn.conf.py"]
