"""Helpers for the auth, CLI, hostile-input and storage-fault tests (imported, not a conftest):

- ``Gunicorn``: the real server (started with tests/servers.py) as an object with
  ``get``/``log``/``stop``: one worker, debug logs captured to a file.
- ``assert_json_error(response, status=None)``: the API's error shape, no traceback text.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.servers import start_gunicorn, stop_process, wait_healthy

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
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc, self.url = start_gunicorn(
            {"WSI_WORKERS": "1", "WSI_THREADS": "4", "WSI_LOG_LEVEL": "debug",
             "PYTHONUNBUFFERED": "1", **env}, self._log)
        self.port = int(self.url.rsplit(":", 1)[1])

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_healthy(self.proc, self.url, self.log, timeout)

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        return http_get(self.url + path, timeout)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)
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
