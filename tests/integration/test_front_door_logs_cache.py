"""The shipped front door (deploy/nginx + gunicorn), issue 26:

- item 7: a IIIF viewer token in the path (``/iiif/3/vt/{exp}/{token}/{id}``, in any spelling),
  in a referer, or a ``sig``/``vt`` in a query reaches neither nginx's access log nor the
  app's (access and error lines);
- item 9: with auth off, parameters a route ignores (``?max_size=N`` on a tile, ``?junk=N``)
  and other spellings of a path make no nginx cache entry of their own: one tile, one entry.

Skipped without an nginx binary. The slide is ``CMU-1-Small-Region.svs`` or its generated twin
(``slide_of_kind("aperio")``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from flask import Flask

from tests.integration import test_front_door as front_door
from tests.integration.test_deploy import SMALL_SLIDE
from tests.integration.test_front_door import SECRET, TILE, Gunicorn, Nginx, get, wait_until
from wsi_streamer.errors import StorageError
from wsi_streamer.server.auth import signed_url, viewer_token

# test_front_door's fixtures (gunicorn with auth on over the shared slide; nginx as shipped)
slides_dir, start_gunicorn, start_nginx = (
    front_door.slides_dir, front_door.start_gunicorn, front_door.start_nginx)


def _front_door(request: pytest.FixtureRequest, **env: str) -> tuple[Gunicorn, Nginx]:
    app: Gunicorn = request.getfixturevalue("start_gunicorn")(**env)
    nginx: Nginx = request.getfixturevalue("start_nginx")(app.port)
    return app, nginx


@pytest.mark.timeout(90)
def test_viewer_tokens_and_signatures_reach_no_log(request: pytest.FixtureRequest) -> None:
    app, nginx = _front_door(request)
    exp = int(time.time()) + 600
    vt = viewer_token(SECRET, SMALL_SLIDE, exp)
    signed = signed_url(SECRET, TILE, 600)
    sig = signed.split("sig=")[1]
    info = f"/iiif/3/vt/{exp}/{vt}/{SMALL_SLIDE}/info.json"
    referer = {"Referer": f"http://127.0.0.1:{nginx.port}{info}"}
    assert get(nginx.port, info).status == 200  # a path token
    assert get(nginx.port, info.replace("/vt/", "/v%74/")).status in (200, 401, 404)
    assert get(nginx.port, info.replace(f"vt/{exp}/", f"vt%2F{exp}%2F")).status < 500
    assert get(nginx.port, f"/iiif/3/vt/{exp}/{vt}/missing.svs/info.json").status in (401, 404)
    dzi_tile = f"/slides/{SMALL_SLIDE}/dzi_files/8/0_0.jpg?exp={exp}&vt={vt}"
    assert get(nginx.port, dzi_tile, headers=referer).status == 200  # query token + referer
    assert get(nginx.port, signed, headers=referer).status == 200

    wait_until(lambda: nginx.logs().count("/iiif/3/") >= 4, timeout=10,
               what="nginx's access lines")
    wait_until(lambda: app.log.read_text(errors="replace").count("/iiif/3/") >= 3,
               timeout=10, what="the app's access lines")
    for name, text in (("nginx", nginx.logs()), ("app", app.log.read_text(errors="replace"))):
        for secret in (vt, sig):
            assert secret not in text, (name, secret, text[-3000:])
        assert "REDACTED" in text, (name, text[-2000:])
    assert f"/iiif/3/vt/{exp}/REDACTED/{SMALL_SLIDE}/info.json" in app.log.read_text()


def test_error_lines_hold_no_token(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    """A 5xx is logged with the request's path: its viewer token and any ``sig=`` in the
    message are redacted."""
    def boom(rest: str) -> None:
        raise StorageError("read of /iiif/3/vt/1900000000/deadbeef/a.svs?sig=cafe0123 failed")

    app.add_url_rule("/boom/<path:rest>", "boom", boom)
    with caplog.at_level(logging.INFO, logger="wsi_streamer"):
        response = app.test_client().get("/boom/vt/1900000000/deadbeef/a.svs?sig=cafe0123")
    assert response.status_code == 500
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "/boom/vt/1900000000/REDACTED/a.svs" in text, text
    assert "deadbeef" not in text and "cafe0123" not in text, text


def _cache_entries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


@pytest.mark.timeout(90)
def test_ignored_parameters_make_no_cache_entries(request: pytest.FixtureRequest) -> None:
    _, nginx = _front_door(request, WSI_AUTH_ENABLED="false")
    cache = nginx.run_dir / "cache"
    assert get(nginx.port, TILE).headers["x-cache-status"] == "MISS"
    wait_until(lambda: len(_cache_entries(cache)) == 1, timeout=10, what="the entry")
    encoded = TILE.replace(".svs", "%2Esvs")  # another spelling of the same path
    junk = ([f"?max_size={n}" for n in range(64, 84)] + [f"?junk={n}" for n in range(20)]
            + [f"?quality=80&x={n}" for n in range(5)] + [f"?quality=0{n + 10}" for n in range(5)])
    statuses = {}
    for query in junk:
        reply = get(nginx.port, TILE + query)
        assert reply.status in (200, 400), (query, reply.status)
        statuses[query] = reply.headers.get("x-cache-status")
    assert len(junk) == 50 and set(statuses.values()) == {"BYPASS"}, statuses
    assert get(nginx.port, encoded).headers["x-cache-status"] == "HIT"
    assert len(_cache_entries(cache)) == 1, _cache_entries(cache)
    # the parameters the route uses still cache, once per value
    for _ in range(2):
        last = get(nginx.port, TILE + "?quality=50").headers["x-cache-status"]
    assert last == "HIT"
    assert len(_cache_entries(cache)) == 2
