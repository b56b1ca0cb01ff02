"""Helpers for the auth, CLI, hostile-input and storage-fault tests (imported, not a conftest):

- ``free_port()``: a currently free loopback TCP port.
- ``Gunicorn``: the real server (``gunicorn -c gunicorn.conf.py``) in a subprocess on loopback,
  one worker, its stderr (gunicorn + app logs) captured to a file.
- ``assert_json_error(response, status=None)``: the API's error shape, no traceback text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.servers import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TRACE_MARKERS = ("Traceback", 'File "', "site-packages", "<html", "<!doctype")


def http_get(url: str, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """GET ``url``; ``(status, headers, body)`` for 2xx-5xx alike."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def assert_json_error(status: int, body: bytes, expected: int | None = None,
                      code: str | None = None) -> dict[str, Any]:
    text = body.decode("utf-8", "replace")
    for marker in TRACE_MARKERS:
        assert marker.lower() not in text.lower(), f"trace/HTML in error body: {text[:300]}"
    payload = json.loads(text)
    assert set(payload) == {"error", "message", "status"}, payload
    assert payload["status"] == status, payload
    assert 400 <= status < 600, payload
    if expected is not None:
        assert status == expected, payload
    if code is not None:
        assert payload["error"] == code, payload
    return dict(payload)


class Gunicorn:
    """``gunicorn -c gunicorn.conf.py`` on 127.0.0.1:<free port> with ``env`` (WSI_* values)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full = dict(os.environ)
        full.update({"WSI_HOST": "127.0.0.1", "WSI_PORT": str(self.port), "WSI_WORKERS": "1",
                     "WSI_THREADS": "4", "WSI_LOG_LEVEL": "debug", "PYTHONUNBUFFERED": "1"})
        full.update(env)
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py"], cwd=REPO_ROOT, env=full,
            stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log()[-2000:]}")
            try:
                if http_get(self.url + "/health", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn not ready: {self.log()[-2000:]}")

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        return http_get(self.url + path, timeout)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> Gunicorn:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
