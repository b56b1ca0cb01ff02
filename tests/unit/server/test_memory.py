"""The malloc settings of the gunicorn workers (``server/memory.py``): applied by the worker
hook of both entry points, and accepted by this C library."""

from __future__ import annotations

import ctypes
import platform
from typing import Any

import pytest

from wsi_streamer.server import gunicorn_settings, memory


def test_the_hook_applies_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(gunicorn_settings, "tune_malloc", lambda: calls.append("malloc"))
    monkeypatch.setattr(gunicorn_settings, "set_nodelay", lambda w: calls.append("nodelay"))
    gunicorn_settings.post_worker_init(object())
    assert calls == ["nodelay", "malloc"]


def test_both_entry_points_use_the_hook() -> None:
    from pathlib import Path

    conf = (Path(__file__).resolve().parents[3] / "gunicorn.conf.py").read_text()
    assert "post_worker_init" in conf
    namespace: dict[str, Any] = {}
    exec(compile(conf, "gunicorn.conf.py", "exec"), namespace)  # noqa: S102 - our own file
    assert namespace["post_worker_init"] is gunicorn_settings.post_worker_init
    import inspect

    from wsi_streamer.server import cli
    assert "post_worker_init" in inspect.getsource(cli.run_gunicorn)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_accepts_every_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, int]] = []
    libc = ctypes.CDLL("libc.so.6")
    real = libc.mallopt

    class Spy:
        def __init__(self, name: str | None) -> None:
            pass

        def mallopt(self, param: int, value: int) -> int:
            seen.append((param, value))
            return int(real(param, value))

    monkeypatch.setattr(memory.ctypes, "CDLL", Spy)
    assert memory.tune_malloc() is True
    assert (memory.M_MMAP_THRESHOLD, memory.MMAP_THRESHOLD) in seen
    assert (memory.M_ARENA_MAX, memory.ARENA_MAX) in seen
