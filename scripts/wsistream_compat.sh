#!/usr/bin/env bash
# wsistream 0.1.6's unit tests against wsi_streamer.patches (issue 22), in a venv of their own
# so that wsistream's test-only dependencies (albumentations, opencv-python-headless,
# matplotlib) stay out of the project's environments. Arguments go to wsistream_compat.py.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${WSISTREAM_COMPAT_VENV:-.venv-wsistream}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
"$VENV/bin/python" -m pip install -q -e ".[patches,openslide,torch]" torch==2.13.0 \
  pytest pytest-timeout albumentations opencv-python-headless matplotlib
exec "$VENV/bin/python" scripts/wsistream_compat.py "$@"
