"""Attacks on the HTTP layer replayed against the real gunicorn (``gunicorn.conf.py``, auth on,
a local folder), over raw sockets so the request line and headers are exactly what an attacker
sends. Each test names the issue item it pins; the ones that never worked (``..``, ``%2F``,
``//``, case and Unicode spellings, malformed or repeated ``sig``/``exp``/``vt``, token scope,
traversal, script in ids) stay here as regression tests."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import socket
import subprocess
import time
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from tests.fixtures.slides import make_svs
from tests.integration.conftest_faults import BIN, REPO_ROOT, Gunicorn, assert_json_error

SECRET = "security-test-secret"
TTL = 3600


# --- signing, written again from API.md (not imported from the package) --------------------


def sig_of(path: str, params: Sequence[tuple[str, str]]) -> str:
    pairs = sorted((k, v) for k, v in params if k != "sig")
    message = path + ("?" + "&".join(f"{k}={v}" for k, v in pairs) if pairs else "")
    return hmac.new(SECRET.encode(), message.encode(), hashlib.sha256).hexdigest()


def viewer_token(slide_id: str, exp: int) -> str:
    return hmac.new(SECRET.encode(), f"viewer:{slide_id}:{exp}".encode(),
                    hashlib.sha256).hexdigest()


def signed(path: str, ttl: int = 600, params: Sequence[tuple[str, str]] = ()) -> str:
    """``path`` (sent as written, it is the raw request path) with ``exp`` and ``sig``."""
    query = [*params, ("exp", str(int(time.time()) + ttl))]
    return f"{path}?{urlencode([*query, ('sig', sig_of(path, query))])}"


def exp_sig(path: str, params: Sequence[tuple[str, str]] = (), ttl: int = 600) -> tuple[str, str]:
    exp = str(int(time.time()) + ttl)
    return exp, sig_of(path, [*params, ("exp", exp)])


# --- raw HTTP ----------------------------------------------------------------------------


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def error(self, status: int, code: str | None = None) -> dict[str, Any]:
        assert self.headers.get("content-type", "").startswith("application/json"), self.headers
        return assert_json_error(self.status, self.body, status, code)

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def raw_request(port: int, target: str | bytes, headers: Sequence[tuple[str, str]] = (),
                method: str = "GET") -> Reply:
    """One request on a fresh connection, ``target`` sent byte for byte."""
    line = target if isinstance(target, bytes) else target.encode("latin-1")
    head = method.encode() + b" " + line + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    head += b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers)
    head += b"Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    header_blob, _, body = data.partition(b"\r\n\r\n")
    lines = header_blob.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    parsed: dict[str, str] = {}
    for item in lines[1:]:
        name, _, value = item.partition(":")
        parsed.setdefault(name.strip().lower(), value.strip())
    return Reply(status, parsed, body)


# --- the server ----------------------------------------------------------------------------

SLIDES = ("a.svs", "A.svs", "a/b.svs", "a%2Fb.svs", "case1/view/A.svs", "caf\u00e9.svs",
          ".hidden/x.svs", "dir/.x.svs", "dir/ok.svs")


@pytest.fixture(scope="module")
def slides_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("security-slides")
    slide = make_svs(600, 400, levels=2, tile=256, associated=False)
    for name in SLIDES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        slide.write(root, name)
    (root / "notes.txt").write_text("not a slide\n")
    (root / "readme.md").write_text("# not a slide\n")
    return root


def server_env(slides_dir: Path, tmp: Path, **extra: str) -> dict[str, str]:
    return {"WSI_SLIDES_DIR": str(slides_dir), "WSI_TILE_CACHE_DIR": str(tmp / "tc"),
            "WSI_AUTH_ENABLED": "true", "WSI_AUTH_SECRET": SECRET,
            "WSI_SIGNATURE_TTL": str(TTL), **extra}


@pytest.fixture(scope="module")
def server(slides_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    tmp = tmp_path_factory.mktemp("security-server")
    with Gunicorn(server_env(slides_dir, tmp), tmp / "gunicorn.log") as running:
        yield running


def get(server: Gunicorn, target: str | bytes, headers: Sequence[tuple[str, str]] = (),
        method: str = "GET") -> Reply:
    return raw_request(server.port, target, headers, method)


def page_config(reply: Reply) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="viewer-config">(.*?)</script>',
                      reply.text(), re.S)
    assert match, reply.text()[:500]
    config: dict[str, Any] = json.loads(match.group(1))
    return config


TILE = "/tiles/a.svs/0/0/0.jpg"


def test_signed_tile_is_served(server: Gunicorn) -> None:
    reply = get(server, signed(TILE))
    assert reply.status == 200 and reply.headers["content-type"] == "image/jpeg"
    get(server, TILE).error(401, "missing_signature")


# --- 11.6: the signed query string is canonical ------------------------------------------


def test_query_separators_inside_values_are_refused(server: Gunicorn) -> None:
    params = [("prefix", "dir"), ("search", "ok")]
    exp, sig = exp_sig("/slides", params)
    plain = get(server, f"/slides?prefix=dir&search=ok&exp={exp}&sig={sig}")
    assert plain.status == 200, plain.body
    assert json.loads(plain.body)["slides"] == ["dir/ok.svs"]
    # The same signed message, with "&" and "=" moved inside a value: another request.
    get(server, f"/slides?prefix=dir%26search%3Dok&exp={exp}&sig={sig}").error(
        400, "invalid_request")
    # A name holding "=" and a value holding "&": refused even when signed as decoded.
    for name, value in (("a=b", "1"), ("a", "1&b=2")):
        exp2, sig2 = exp_sig("/slides", [(name, value)])
        target = f"/slides?{quote(name)}={quote(value)}&exp={exp2}&sig={sig2}"
        get(server, target).error(400, "invalid_request")


def test_question_mark_in_the_decoded_path_is_refused(server: Gunicorn) -> None:
    # "/slides/x%3Fa=1" decodes to "/slides/x?a=1": it must not sign like path + query.
    exp, sig = exp_sig("/slides/x", [("a", "1")])
    get(server, f"/slides/x%3Fa=1?exp={exp}&sig={sig}").error(400, "invalid_request")
    exp, sig = exp_sig("/slides/x%3Fa=1")
    get(server, f"/slides/x%3Fa=1?exp={exp}&sig={sig}").error(400, "invalid_request")


# --- 15.2: the signature binds exactly the routed path -------------------------------------


def test_client_script_name_cannot_split_a_signed_path(server: Gunicorn) -> None:
    url = signed("/view/case1/view/A.svs")
    honest = get(server, url)
    assert honest.status == 200 and page_config(honest)["slideId"] == "case1/view/A.svs"
    for header in ("SCRIPT_NAME", "PATH_INFO"):
        reply = get(server, url, headers=[(header, "/view/case1")])
        assert reply.status == 200, reply.body[:300]
        config = page_config(reply)
        assert config["slideId"] == "case1/view/A.svs", config
        assert config["root"] == "", config
        auth = config["auth"]
        tile = f"/tiles/A.svs/0/0/0.jpg?exp={auth['exp']}&vt={auth['vt']}"
        get(server, tile).error(401, "invalid_signature")


def test_percent_2f_signature_does_not_open_a_literal_percent_name(server: Gunicorn) -> None:
    path = "/tiles/a%2Fb.svs/0/0/0.jpg"  # slide "a/b.svs", signed as sent
    exp, sig = exp_sig(path)
    assert get(server, f"{path}?exp={exp}&sig={sig}").status == 200
    # "%252F" decodes to the literal "a%2Fb.svs": another file, not covered by that signature.
    get(server, f"/tiles/a%252Fb.svs/0/0/0.jpg?exp={exp}&sig={sig}").error(
        401, "invalid_signature")
    # The literal file is reachable only with a signature over its own spelling.
    assert get(server, signed("/tiles/a%252Fb.svs/0/0/0.jpg")).status == 200


@pytest.mark.parametrize(("signed_path", "sent_path"), [
    ("/tiles/a/b.svs/0/0/0.jpg", "/tiles/a%2Fb.svs/0/0/0.jpg"),  # decoded signed, encoded sent
    ("/tiles/a%2Fb.svs/0/0/0.jpg", "/tiles/a%2fb.svs/0/0/0.jpg"),  # escape case
    ("/tiles/a.svs/0/0/0.jpg", "//tiles/a.svs/0/0/0.jpg"),
    ("/tiles/a.svs/0/0/0.jpg", "/tiles//a.svs/0/0/0.jpg"),
    ("/tiles/a.svs/0/0/0.jpg", "/tiles/x/../a.svs/0/0/0.jpg"),
    ("/tiles/a.svs/0/0/0.jpg", "/tiles/./a.svs/0/0/0.jpg"),
    ("/tiles/a.svs/0/0/0.jpg", "/tiles/%61.svs/0/0/0.jpg"),
    ("/tiles/a.svs/0/0/0.jpg", "/tiles/A.svs/0/0/0.jpg"),
    ("/tiles/a.svs/0/0/0.jpg", "/tiles/a.svs/0/0/0"),
    ("/tiles/a.svs/0/0/0.jpg", "/tiles/a.svs/00/0/0.jpg"),
    ("/tiles/caf%C3%A9.svs/0/0/0.jpg", "/tiles/cafe%CC%81.svs/0/0/0.jpg"),  # NFC vs NFD
])
def test_signature_binds_one_spelling(server: Gunicorn, signed_path: str,
                                      sent_path: str) -> None:
    exp, sig = exp_sig(signed_path)
    reply = get(server, f"{sent_path}?exp={exp}&sig={sig}")
    assert reply.status in (401, 404), (reply.status, reply.body[:200])
    reply.error(reply.status)


def test_unicode_ids_sign_as_sent(server: Gunicorn) -> None:
    nfc = quote(unicodedata.normalize("NFC", "caf\u00e9.svs"))
    assert get(server, signed(f"/tiles/{nfc}/0/0/0.jpg")).status == 200
    raw_utf8 = "/tiles/caf\u00e9.svs/0/0/0.jpg"  # raw UTF-8 bytes on the wire: gunicorn's 400
    exp, sig = exp_sig(raw_utf8)
    target = raw_utf8.encode() + f"?exp={exp}&sig={sig}".encode()
    get(server, target).error(400, "bad_request")


def test_cli_signed_urls_with_special_characters(slides_dir: Path, server: Gunicorn) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSI_")}
    env["WSI_AUTH_SECRET"] = SECRET
    for path in ("/tiles/caf\u00e9.svs/0/0/0.jpg", "/tiles/a%2Fb.svs/0/0/0.jpg",
                 "/slides/case1/view/A.svs"):
        result = subprocess.run([str(BIN / "wsi-streamer"), "sign-url", "--path", path],
                                cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        url = result.stdout.strip()
        assert get(server, url).status == 200, (path, url)


# --- malformed and repeated sig / exp / vt -------------------------------------------------


def test_repeated_auth_parameters_are_refused(server: Gunicorn) -> None:
    exp, sig = exp_sig(TILE)
    get(server, f"{TILE}?exp={exp}&sig={sig}&sig={sig}").error(400, "invalid_signature_format")
    get(server, f"{TILE}?exp={exp}&sig={sig}&sig=00").error(400, "invalid_signature_format")
    exp2 = str(int(exp) + 1)
    both = sig_of(TILE, [("exp", exp), ("exp", exp2)])
    get(server, f"{TILE}?exp={exp}&exp={exp2}&sig={both}").error(400, "invalid_expiry_format")
    vt = viewer_token("a.svs", int(exp))
    get(server, f"{TILE}?exp={exp}&vt={vt}&vt={vt}").error(400, "invalid_signature_format")
    get(server, f"{TILE}?exp={exp}&vt={vt}&sig={sig}").error(400, "invalid_signature_format")


@pytest.mark.parametrize(("query", "code"), [
    ("exp={exp}&sig={upper}", "invalid_signature_format"),
    ("exp={exp}&sig=zz", "invalid_signature_format"),
    ("exp={exp}&sig=", "invalid_signature_format"),
    ("exp={exp}&sig={long}", "invalid_signature_format"),
    ("exp={exp}&vt=xyz", "invalid_signature_format"),
    ("exp=1e9&sig={sig}", "invalid_expiry_format"),
    ("exp=%20{exp}&sig={sig}", "invalid_expiry_format"),
    ("exp=%2B{exp}&sig={sig}", "invalid_expiry_format"),
    ("exp=-1&sig={sig}", "invalid_expiry_format"),
    ("exp=%E2%91%A0&sig={sig}", "invalid_expiry_format"),
    ("exp=%C2%B2&sig={sig}", "invalid_expiry_format"),
    ("exp=%D9%A3&sig={sig}", "invalid_expiry_format"),
    ("exp=1_900_000_000&sig={sig}", "invalid_expiry_format"),
    ("exp=99999999999999999999&sig={sig}", "invalid_expiry_format"),
])
def test_malformed_auth_parameters(server: Gunicorn, query: str, code: str) -> None:
    exp, sig = exp_sig(TILE)
    target = f"{TILE}?" + query.format(exp=exp, sig=sig, upper=sig.upper(), long=sig * 3)
    get(server, target).error(400, code)


# --- token scope (15.4 part, 15.8) ---------------------------------------------------------


def test_viewer_token_scope(server: Gunicorn) -> None:
    exp = int(time.time()) + 600
    vt = f"exp={exp}&vt={viewer_token('a.svs', exp)}"
    for path in (TILE, "/slides/a.svs", "/slides/a.svs/dzi", "/slides/a.svs/dzi_files/0/0_0.jpg"):
        assert get(server, f"{path}?{vt}").status == 200, path
    for path in ("/tiles/A.svs/0/0/0.jpg", "/tiles/dir/ok.svs/0/0/0.jpg", "/slides/a.svs/x",
                 "/tiles/a.svs/../a.svs/0/0/0.jpg"):
        reply = get(server, f"{path}?{vt}")
        assert reply.status in (401, 404), (path, reply.status)
    for path in ("/slides", "/view/a.svs", "/slides/a.svs/thumbnail", "/metrics"):
        get(server, f"{path}?{vt}").error(401)
    forged = f"exp={exp + 1}&vt={viewer_token('a.svs', exp)}"
    get(server, f"{TILE}?{forged}").error(401, "invalid_signature")


def test_viewer_token_authorises_no_other_parameter(server: Gunicorn) -> None:
    exp = int(time.time()) + 600
    vt = f"exp={exp}&vt={viewer_token('a.svs', exp)}"
    for junk in ("junk=1", "quality=50", "cb=123", "exp2=1", "VT=1"):
        get(server, f"{TILE}?{vt}&{junk}").error(400, "invalid_parameter")
    get(server, f"/slides/a.svs/dzi?{vt}&x=1").error(400, "invalid_parameter")


def test_viewer_token_expires_with_its_page(server: Gunicorn) -> None:
    exp, sig = exp_sig("/view/a.svs", ttl=30)
    reply = get(server, f"/view/a.svs?exp={exp}&sig={sig}")
    assert reply.status == 200
    page_exp = int(exp)
    token_exp = int(page_config(reply)["auth"]["exp"])
    assert token_exp <= page_exp, (token_exp, page_exp)
    long_page = get(server, signed("/view/a.svs", ttl=10 * TTL))
    now = time.time()
    assert int(page_config(long_page)["auth"]["exp"]) <= now + TTL + 1


# --- traversal and local-folder confinement (15.10) ----------------------------------------


@pytest.mark.parametrize("path", [
    "/tiles/..%2F..%2Fetc%2Fpasswd/0/0/0.jpg", "/tiles/%2E%2E/%2E%2E/etc/passwd/0/0/0.jpg",
    "/slides/..%2Fsecurity-slides", "/slides/%2Fetc%2Fpasswd", "/slides/a.svs%00.txt",
    "/slides/..%5C..%5Cwin.ini", "/slides/dir/..%2F..%2F..%2Fetc%2Fhostname",
])
def test_traversal_is_not_found(server: Gunicorn, path: str) -> None:
    get(server, signed(path)).error(404, "not_found")


@pytest.mark.parametrize("path", ["/slides/notes.txt", "/slides/readme.md",
                                  "/slides/.hidden/x.svs", "/slides/dir/.x.svs",
                                  "/tiles/.hidden/x.svs/0/0/0.jpg", "/slides/.hidden%2Fx.svs"])
def test_local_folder_opens_only_listed_slides(server: Gunicorn, path: str) -> None:
    get(server, signed(path)).error(404, "not_found")


def test_listing_hides_dot_paths(server: Gunicorn) -> None:
    reply = get(server, signed("/slides"))
    slides = json.loads(reply.body)["slides"]
    assert "dir/ok.svs" in slides
    assert not [s for s in slides if any(part.startswith(".") for part in s.split("/"))]


# --- script in ids, CSP and headers (15.9 app part) -----------------------------------------


def test_script_in_ids_is_inert(server: Gunicorn) -> None:
    slide_id = '</script><script>alert(1)</script><img src=x onerror=alert(2)>.svs'
    reply = get(server, signed("/view/" + quote(slide_id, safe="")))
    assert reply.status == 200
    page = reply.text()
    assert "<script>alert" not in page and "<img src=x" not in page
    assert page_config(reply)["slideId"] == slide_id
    csp = reply.headers["content-security-policy"]
    script_src = re.search(r"script-src ([^;]*)", csp)
    assert script_src and "'unsafe-inline'" not in script_src.group(1), csp
    assert "frame-ancestors 'none'" in csp
    assert reply.headers["x-frame-options"] == "DENY"
    assert reply.headers["x-content-type-options"] == "nosniff"


def test_nosniff_on_every_response(server: Gunicorn) -> None:
    for target in ("/health", signed(TILE), TILE, "/no/such/route", "/static/viewer.js",
                   signed("/slides/a.svs")):
        reply = get(server, target)
        assert reply.headers.get("x-content-type-options") == "nosniff", (target, reply.status)


# --- 15.5: Unicode digits --------------------------------------------------------------------


@pytest.mark.parametrize(("path", "params", "code"), [
    ("/tiles/a.svs/%C2%B2/0/0.jpg", (), "invalid_level"),
    ("/tiles/a.svs/0/%C2%B2/0.jpg", (), "tile_out_of_bounds"),
    ("/tiles/a.svs/0/0/%E2%91%A0.jpg", (), "tile_out_of_bounds"),
    ("/tiles/a.svs/%D9%A0/0/0.jpg", (), "invalid_level"),
    ("/slides/a.svs/dzi_files/%C2%B9/0_0.jpg", (), "invalid_level"),
    (TILE, (("quality", "\u00b2"),), "invalid_quality"),
    (TILE, (("quality", "\u0665\u0660"),), "invalid_quality"),
    ("/slides/a.svs/thumbnail", (("max_size", "\u00b2"),), "invalid_parameter"),
    ("/slides", (("limit", "\u2460"),), "invalid_parameter"),
])
def test_unicode_digits_are_a_400(server: Gunicorn, path: str,
                                  params: tuple[tuple[str, str], ...], code: str) -> None:
    get(server, signed(path, params=params)).error(400, code)
    unsigned = path + ("?" + urlencode(params) if params else "")
    get(server, unsigned).error(401, "missing_signature")


def test_unicode_digits_leave_no_traceback(server: Gunicorn) -> None:
    get(server, "/tiles/a.svs/%C2%B2/0/0.jpg?exp=%E2%91%A0&sig=00").error(400)
    get(server, "/tiles/a.svs/%C2%B2/0/0.jpg").error(401)
    time.sleep(0.2)
    assert "Traceback" not in server.log()


# --- 15.6: log forging ---------------------------------------------------------------------


def test_control_characters_are_escaped_in_the_log(server: Gunicorn) -> None:
    forged = "wsi_streamer.access: GET /forged 200 1.0ms"
    target = ("/tiles/a.svs%0D%0A" + quote(forged) + "%00%1B[31m/0/0/0.jpg").encode()
    reply = get(server, target)
    reply.error(reply.status)  # 404: werkzeug's path converter stops at the line break
    get(server, signed("/slides/x%0Dy%00.svs")).error(404)
    time.sleep(0.2)
    raw = server.log_path.read_bytes()
    assert b"\x00" not in raw and b"\x1b" not in raw
    lines = raw.decode("utf-8", "replace").splitlines()
    assert not [line for line in lines if line.startswith(forged) or line.startswith("y")]
    assert [line for line in lines if "/tiles/a.svs\\r\\n" in line and forged in line]


# --- 15.7: /metrics ------------------------------------------------------------------------


def test_metrics_need_a_signature(server: Gunicorn) -> None:
    get(server, "/metrics").error(401, "missing_signature")
    reply = get(server, signed("/metrics"))
    assert reply.status == 200 and b"wsi_storage_requests_total" in reply.body
    assert get(server, "/health").status == 200


# --- 11.8 / 15.9: gunicorn's own errors are JSON -------------------------------------------


def test_long_request_line_is_json_414(server: Gunicorn) -> None:
    reply = get(server, "/tiles/" + "a" * 9000 + ".svs/0/0/0.jpg")
    reply.error(414, "uri_too_long")
    assert reply.headers["x-content-type-options"] == "nosniff"


def test_large_headers_are_json_431(server: Gunicorn) -> None:
    get(server, "/health", headers=[("X-Big", "b" * 9000)]).error(431, "headers_too_large")
    get(server, "/health", headers=[(f"X-H{i}", "1") for i in range(150)]).error(431)


def test_malformed_request_line_is_json_400(server: Gunicorn) -> None:
    get(server, b"/health HTTP/1.1 extra").error(400)
    assert get(server, "/health").status == 200  # the worker still serves


def test_cli_config_error_is_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSI_")}
    env["WSI_CACHE_BLOCKS"] = "lots"
    for cmd in ([str(BIN / "flask"), "--app", "wsi_streamer", "check"],
                [str(BIN / "wsi-streamer"), "check"]):
        result = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode != 0
        out = (result.stderr + result.stdout).strip()
        assert "Traceback" not in out, out[-1500:]
        assert "WSI_CACHE_BLOCKS" in out and len(out.splitlines()) == 1, out


# --- a prefix deployment: SCRIPT_NAME from gunicorn's environment, never from a client -----


def test_prefix_deployment(slides_dir: Path, tmp_path: Path) -> None:
    env = server_env(slides_dir, tmp_path, SCRIPT_NAME="/wsi")
    running = Gunicorn(env, tmp_path / "prefix.log")
    try:
        running.proc.poll()
        deadline = time.monotonic() + 30
        while True:  # /health lives under the prefix here
            try:
                if raw_request(running.port, "/wsi/health").status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and running.proc.poll() is None, running.log()
            time.sleep(0.1)
        port = running.port
        assert raw_request(port, signed("/wsi/tiles/a.svs/0/0/0.jpg")).status == 200
        exp, sig = exp_sig(TILE)  # signed without the prefix the client sees
        raw_request(port, f"/wsi/tiles/a.svs/0/0/0.jpg?exp={exp}&sig={sig}").error(
            401, "invalid_signature")
        view = raw_request(port, signed("/wsi/view/a.svs"))
        assert view.status == 200 and page_config(view)["root"] == "/wsi"
        raw_request(port, "/elsewhere/health").error(404)
    finally:
        running.stop()
