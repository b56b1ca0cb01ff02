"""Issue 23: ``/health`` is liveness (no storage), ``/health/ready`` is readiness (storage
checked, bounded, cached: counted checks), and ``/`` is an index of the slides linking to
their viewers, under the same auth as ``/slides``."""

from __future__ import annotations

import threading
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from wsi_streamer import create_app
from wsi_streamer.config import Config
from wsi_streamer.server.auth import signed_url
from wsi_streamer.server.readiness import Readiness
from wsi_streamer.server.services import services


class Counting:
    """A storage check that counts its calls and, while ``gate`` is clear, blocks."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail = False
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self) -> str:
        self.calls += 1
        assert self.gate.wait(30), "hang guard"
        if self.fail:
            raise OSError("bucket gone")
        return "storage"


def test_readiness_is_cached_for_its_ttl() -> None:
    now = [0.0]
    check = Counting()
    ready = Readiness(check, wait_s=30, ttl_s=5, clock=lambda: now[0])
    assert [ready.state()[0] for _ in range(10)] == [True] * 10
    assert check.calls == 1  # ten probes, one storage request
    check.fail = True
    now[0] = 4.9
    assert ready.state()[0] is True and check.calls == 1
    now[0] = 5.0
    state = ready.state()
    assert state[0] is False and "bucket gone" in state[1] and check.calls == 2


def test_a_stuck_check_is_bounded_and_never_started_twice() -> None:
    check = Counting()
    check.gate.clear()  # storage never answers until released
    ready = Readiness(check, wait_s=0.05, ttl_s=5)
    results: list[tuple[bool, str]] = []
    threads = [threading.Thread(target=lambda: results.append(ready.state()))
               for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 16 and not any(ok for ok, _ in results)
    assert all("did not answer" in detail for _, detail in results)
    assert check.calls == 1  # 16 probes, one check in flight
    check.gate.set()
    for _ in range(300):  # hang guard: the check ends and its result is kept
        if ready.checks == 1:
            break
        threading.Event().wait(0.01)
    assert ready.state() == (True, "storage") and check.calls == 1


def test_health_never_touches_storage_ready_does(client: FlaskClient, app: Flask) -> None:
    svc = services(app)
    check = Counting()
    svc.readiness = Readiness(check, wait_s=30, ttl_s=60)
    for _ in range(5):
        assert client.get("/health").status_code == 200
    assert check.calls == 0
    answers = [client.get("/health/ready") for _ in range(5)]
    assert [a.status_code for a in answers] == [200] * 5 and check.calls == 1
    assert answers[0].json == {"status": "ready", "version": answers[0].json["version"]}
    check.fail = True
    svc.readiness = Readiness(check, wait_s=30, ttl_s=60)
    failed = client.get("/health/ready")
    assert failed.status_code == 503 and failed.json["error"] == "storage_unready"
    assert "bucket gone" not in failed.get_data(as_text=True)  # the reason stays in the log
    assert failed.headers["Retry-After"]
    assert client.get("/health").status_code == 200  # still alive


def test_ready_fails_when_the_folder_is_gone(tmp_path: Path) -> None:
    config = Config(slides_dir=str(tmp_path / "gone"), tile_cache_dir=str(tmp_path / "tc"))
    client = create_app(config).test_client()
    assert client.get("/health").status_code == 200
    assert client.get("/health/ready").status_code == 503


def _app_with_slides(tmp_path: Path, svs: bytes, **config: object) -> Flask:
    slides = tmp_path / "slides"
    (slides / "a b").mkdir(parents=True)
    (slides / "a b" / "x#1.svs").write_bytes(svs)
    (slides / "z.svs").write_bytes(svs)
    (slides / "notes.txt").write_text("not a slide")
    return create_app(Config(slides_dir=str(slides), tile_cache_dir=str(tmp_path / "tc"),
                             **config))  # type: ignore[arg-type]


def test_index_lists_slides_with_viewer_links(tmp_path: Path, svs4: object) -> None:
    client = _app_with_slides(tmp_path, svs4.data).test_client()  # type: ignore[attr-defined]
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert 'href="/view/a%20b%2Fx%231.svs"' in html and "a b/x#1.svs" in html
    assert 'href="/view/z.svs"' in html and "notes.txt" not in html
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    first = client.get("/?limit=1").get_data(as_text=True)
    assert "z.svs" not in first and 'id="more"' in first


def test_index_needs_a_signature_under_auth(tmp_path: Path, svs4: object) -> None:
    app = _app_with_slides(tmp_path, svs4.data,  # type: ignore[attr-defined]
                           auth_enabled=True, auth_secret="s3cret-0123456789")
    client = app.test_client()
    assert client.get("/").status_code == 401
    assert client.get("/slides").status_code == 401  # the same rule
    signed = client.get(signed_url("s3cret-0123456789", "/", 60))
    assert signed.status_code == 200 and "z.svs" in signed.get_data(as_text=True)
    assert "sign-url" in signed.get_data(as_text=True)
    assert client.get("/health/ready").status_code == 200  # probes need no signature
