"""Signed URLs and viewer tokens (API.md "Signed URLs"): the Flask app with auth on, the real
``sign-url`` CLI (both entry points) and a real gunicorn server accepting what it prints."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from tests.integration.conftest_faults import BIN, REPO_ROOT, Gunicorn, assert_json_error
from wsi_streamer.config import Config

SECRET = "s3cr3t-for-tests"
TILE = "/tiles/a.svs/0/0/0.jpg"


def independent_sig(secret: str, path: str, params: dict[str, str]) -> str:
    """The scheme of API.md, written again from the text (not imported from the package)."""
    items = sorted((k, v) for k, v in params.items() if k != "sig")
    message = path + ("?" + "&".join(f"{k}={v}" for k, v in items) if items else "")
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def signed(path: str, secret: str = SECRET, ttl: int = 600, **params: str) -> str:
    query = dict(params, exp=str(int(time.time()) + ttl))
    query["sig"] = independent_sig(secret, path, query)
    return f"{path}?{urlencode(query)}"


@pytest.fixture(scope="module")
def slides_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.fixtures.slides import make_svs

    root = tmp_path_factory.mktemp("auth-slides")
    slide = make_svs(600, 400, levels=2, tile=256, associated=False)
    slide.write(root, "a.svs")
    (root / "dir").mkdir()
    slide.write(root / "dir", "b.svs")
    return root


@pytest.fixture
def app_config(slides_dir: Path, tmp_path: Path) -> Config:
    """The shared ``client`` fixture's app: ``slides_dir`` with signed URLs required."""
    return Config(slides_dir=str(slides_dir), tile_cache_dir=str(tmp_path / "tc"),
                  auth_enabled=True, auth_secret=SECRET)


def _error(response: Any, status: int, code: str) -> None:
    assert_json_error(response.status_code, response.data, status, code)


def test_health_needs_no_signature(client: Any) -> None:
    assert client.get("/health").status_code == 200


def test_unsigned_is_missing_signature(client: Any) -> None:
    _error(client.get(TILE), 401, "missing_signature")
    _error(client.get("/slides"), 401, "missing_signature")


def test_valid_signature_and_independent_implementation(client: Any) -> None:
    response = client.get(signed(TILE, quality="90"))
    assert response.status_code == 200, response.data[:200]
    assert response.headers["Content-Type"] == "image/jpeg"
    assert client.get(signed("/slides")).status_code == 200


def test_expired(client: Any) -> None:
    _error(client.get(signed(TILE, ttl=-10)), 401, "signature_expired")


def test_tampering(client: Any) -> None:
    url = signed(TILE, quality="90")
    _error(client.get(url.replace("/0/0/0.jpg", "/0/1/0.jpg")), 401, "invalid_signature")
    _error(client.get(url.replace("quality=90", "quality=91")), 401, "invalid_signature")
    _error(client.get(url + "&quality=50"), 401, "invalid_signature")
    _error(client.get(url + "&extra=1"), 401, "invalid_signature")
    _error(client.get(signed(TILE, secret="other-secret")), 401, "invalid_signature")
    exp = re.search(r"exp=(\d+)", url)
    assert exp is not None
    later = str(int(exp.group(1)) + 1)
    _error(client.get(url.replace(f"exp={exp.group(1)}", f"exp={later}")), 401,
           "invalid_signature")


def test_malformed(client: Any) -> None:
    exp = str(int(time.time()) + 600)
    _error(client.get(TILE, query_string={"exp": exp, "sig": "zz" * 32}), 400,
           "invalid_signature_format")
    _error(client.get(TILE, query_string={"exp": exp, "sig": "AB" * 32}), 400,
           "invalid_signature_format")
    sig = independent_sig(SECRET, TILE, {"exp": "soon"})
    _error(client.get(TILE, query_string={"exp": "soon", "sig": sig}), 400,
           "invalid_expiry_format")
    _error(client.get(TILE, query_string={"exp": "1.5e9", "sig": sig}), 400,
           "invalid_expiry_format")
    _error(client.get(TILE, query_string={"sig": independent_sig(SECRET, TILE, {})}), 401,
           "missing_expiry")


def _viewer_token(slide_id: str, exp: int) -> str:
    return hmac.new(SECRET.encode(), f"viewer:{slide_id}:{exp}".encode(),
                    hashlib.sha256).hexdigest()


def test_viewer_token_is_scoped_to_its_slide(client: Any) -> None:
    exp = int(time.time()) + 600
    vt = {"exp": str(exp), "vt": _viewer_token("a.svs", exp)}
    for path in (TILE, "/slides/a.svs", "/slides/a.svs/dzi",
                 "/slides/a.svs/dzi_files/0/0_0.jpg"):
        response = client.get(path, query_string=vt)
        assert response.status_code == 200, (path, response.data[:200])
    _error(client.get("/tiles/dir/b.svs/0/0/0.jpg", query_string=vt), 401, "invalid_signature")
    _error(client.get("/slides/dir%2Fb.svs", query_string=vt), 401, "invalid_signature")
    assert client.get("/slides", query_string=vt).status_code == 401
    assert client.get("/view/dir/b.svs", query_string=vt).status_code == 401
    expired = {"exp": str(exp - 1200), "vt": _viewer_token("a.svs", exp - 1200)}
    _error(client.get(TILE, query_string=expired), 401, "signature_expired")


def test_view_page_hands_out_tokens_only_when_signed(client: Any) -> None:
    _error(client.get("/view/a.svs"), 401, "missing_signature")
    response = client.get(signed("/view/a.svs"))
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    match = re.search(r'"vt"\s*:\s*"([0-9a-f]{64})"', page) or re.search(
        r"\b([0-9a-f]{64})\b", page)
    assert match, "viewer page carries no viewer token"
    exp_match = re.search(r'"exp"\s*:\s*"?(\d{9,})', page) or re.search(r"\b(\d{10})\b", page)
    assert exp_match
    vt, exp = match.group(1), int(exp_match.group(1))
    assert vt == _viewer_token("a.svs", exp)
    assert client.get(TILE, query_string={"exp": str(exp), "vt": vt}).status_code == 200


# --- the real CLI and a real server --------------------------------------------------------


def run_cli(args: list[str], entry: str = "flask", secret: str | None = SECRET
            ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSI_")}
    if secret is not None:
        env["WSI_AUTH_SECRET"] = secret
    cmd = ([str(BIN / "flask"), "--app", "wsi_streamer"] if entry == "flask"
           else [str(BIN / "wsi-streamer")])
    return subprocess.run(cmd + args, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def test_sign_url_refuses_without_secret() -> None:
    for entry in ("flask", "wsi-streamer"):
        result = run_cli(["sign-url", "--path", TILE], entry=entry, secret=None)
        assert result.returncode != 0
        assert "secret" in (result.stderr + result.stdout).lower()
        assert "Traceback" not in result.stderr


def test_sign_url_json_and_params() -> None:
    before = int(time.time())
    result = run_cli(["sign-url", "--path", TILE, "--ttl", "120", "--param", "quality=70",
                      "--format", "json"])
    after = int(time.time())
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["path"] == TILE and out["params"] == {"quality": "70"}
    assert before + 120 <= out["exp"] <= after + 120  # now + ttl, however long the run took
    assert out["sig"] == independent_sig(SECRET, TILE,
                                         {"quality": "70", "exp": str(out["exp"])})
    query = dict(p.split("=", 1) for p in urlsplit(out["url"]).query.split("&"))
    assert query == {"quality": "70", "exp": str(out["exp"]), "sig": out["sig"]}


def test_cli_urls_are_accepted_by_gunicorn(slides_dir: Path, tmp_path: Path) -> None:
    paths = [TILE, "/tiles/dir%2Fb.svs/0/0/0.jpg", "/tiles/dir/b.svs/1/0/0.jpg",
             "/slides/dir%2Fb.svs", "/view/a.svs"]
    urls = []
    for index, path in enumerate(paths):
        entry = "flask" if index % 2 == 0 else "wsi-streamer"
        result = run_cli(["sign-url", "--path", path, "--param", "quality=85"], entry=entry)
        assert result.returncode == 0, result.stderr
        urls.append(result.stdout.strip())
    sigs = [re.search(r"sig=([0-9a-f]{64})", u).group(1) for u in urls]  # type: ignore[union-attr]
    env = {"WSI_SLIDES_DIR": str(slides_dir), "WSI_TILE_CACHE_DIR": str(tmp_path / "tc"),
           "WSI_AUTH_ENABLED": "true", "WSI_AUTH_SECRET": SECRET}
    with Gunicorn(env, tmp_path / "gunicorn.log") as server:
        for path, url in zip(paths, urls, strict=True):
            assert url.startswith("/"), url
            status, _, body = server.get(url)
            assert status == 200, (path, body[:300])
        tampered = urls[0].replace("quality=85", "quality=86")
        status, _, body = server.get(tampered)
        assert_json_error(status, body, 401, "invalid_signature")
        status, _, body = server.get(TILE)
        assert_json_error(status, body, 401, "missing_signature")
        time.sleep(0.3)
        log = server.log()
    assert "/tiles/a.svs/0/0/0.jpg" in log, "access log lines expected in gunicorn output"
    for sig in sigs:
        assert sig not in log, "a signature was written to the log"
