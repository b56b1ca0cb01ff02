"""The ``/view`` page and the DZI endpoint in a real browser: gunicorn on loopback, headless
Debian Chromium (``/usr/bin/chromium``; skipped when absent), screenshots checked for tissue.

Tissue detection: H&E stains are pink (eosin) and purple (haematoxylin); both have red and blue
well above green, which the dark page, the white slide background, grey controls and the dark-red
error box (blue close to green) do not. A screenshot "shows tissue" when at least
``MIN_TISSUE`` of its pixels are such colours (CMU-1-Small-Region fitted to 1280x800: ~8 %).

Chromium cannot reach beyond loopback: its resolver maps every host (names and IP literals)
but 127.0.0.1 to "not found", and background networking, sync and updates are off."""

from __future__ import annotations

import functools
import http.server
import io
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image

from tests.integration.conftest_faults import Gunicorn
from tests.servers import free_port
from wsi_streamer import create_app
from wsi_streamer.config import Config
from wsi_streamer.server.auth import signed_url

CHROMIUM = Path("/usr/bin/chromium")
SLIDE = "CMU-1-Small-Region.svs"
BROKEN = "openslide-unreadable.svs"  # metadata parses, every tile is a 500 decode_error
SECRET = "viewer-test-secret"
MIN_TISSUE = 0.03
ACCESS = re.compile(r"wsi_streamer\.access: (?:GET|HEAD) (\S+) (\d{3}) ")


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def slides_dir(shared_slides: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = shared_slides / SLIDE
    if not source.is_file():
        pytest.skip(f"{source} not found")
    folder = tmp_path_factory.mktemp("viewer-slides")
    shutil.copy(source, folder / SLIDE)
    if (shared_slides / BROKEN).is_file():
        shutil.copy(shared_slides / BROKEN, folder / BROKEN)
    return folder


def _server(slides_dir: Path, tmp: Path, **extra: str) -> Gunicorn:
    env = {"WSI_SLIDES_DIR": str(slides_dir), "WSI_TILE_CACHE_DIR": str(tmp / "tiles"),
           "WSI_CORS_ORIGINS": "*", "WSI_LOG_LEVEL": "info", **extra}
    return Gunicorn(env, tmp / "gunicorn.log")


@pytest.fixture(scope="module")
def server(slides_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    with _server(slides_dir, tmp_path_factory.mktemp("open")) as running:
        yield running


@pytest.fixture(scope="module")
def auth_server(slides_dir: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    with _server(slides_dir, tmp_path_factory.mktemp("auth"), WSI_AUTH_ENABLED="true",
                 WSI_AUTH_SECRET=SECRET) as running:
        yield running


def browse(chromium: Path, url: str, tmp: Path) -> tuple[str, np.ndarray]:
    """Load ``url`` headless for 15 s of virtual time; (final DOM, RGB screenshot)."""
    shot = tmp / "shot.png"
    cmd = [str(chromium), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--disable-default-apps",
           "--disable-extensions", "--disable-domain-reliability", "--hide-scrollbars",
           # Every host name and IP literal but 127.0.0.1 fails to resolve: loopback only.
           "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
           f"--user-data-dir={tmp / 'profile'}", "--window-size=1280,800",
           "--virtual-time-budget=15000", f"--screenshot={shot}", "--dump-dom", url]
    done = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    with Image.open(io.BytesIO(shot.read_bytes())) as img:
        pixels = np.asarray(img.convert("RGB"))
    return done.stdout.decode(errors="replace"), pixels


def tissue_fraction(pixels: np.ndarray) -> float:
    """Share of pixels with H&E colours: red and blue both clearly above green."""
    r, g, b = (pixels[..., i].astype(np.int16) for i in range(3))
    return float(((r - g > 40) & (b - g > 15) & (r > 80)).mean())


def statuses(server: Gunicorn, prefix: str) -> list[tuple[str, int]]:
    return [(path, int(code)) for path, code in ACCESS.findall(server.log())
            if path.startswith(prefix)]


def test_viewer_shows_tissue(chromium: Path, server: Gunicorn, tmp_path: Path) -> None:
    dom, pixels = browse(chromium, f"{server.url}/view/{SLIDE}", tmp_path)
    assert tissue_fraction(pixels) >= MIN_TISSUE, "no H&E tissue visible in the viewer"
    assert pixels.std() > 20, "blank page"
    assert 'data-state="ready"' in dom, dom[-1500:]
    assert "2,220 × 2,967 px" in dom and "0.499" in dom and "20×" in dom, "metadata panel"
    assert re.search(r'id="scalebar"(?! hidden)[^>]*>', dom), "scale bar (MPP is known)"
    assert re.search(r'id="viewer-error"[^>]* hidden', dom), "no error shown"
    requests = statuses(server, f"/slides/{SLIDE}")
    assert any("/dzi_files/" in path for path, _ in requests), requests
    assert all(code == 200 for _, code in requests), requests


def test_stock_openseadragon_shows_tissue(chromium: Path, server: Gunicorn,
                                          tmp_path: Path) -> None:
    """A plain OpenSeadragon page on another origin given only the DZI URL."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(f"""<!doctype html><html><body style="margin:0">
<div id="osd" style="width:100vw;height:100vh;background:#000"></div>
<script src="{server.url}/static/openseadragon/openseadragon.min.js"></script>
<script>OpenSeadragon({{id: "osd", prefixUrl: "{server.url}/static/openseadragon/images/",
  tileSources: "{server.url}/slides/{SLIDE}/dzi"}});</script></body></html>""")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        _, pixels = browse(chromium, f"http://127.0.0.1:{httpd.server_port}/index.html",
                           tmp_path)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert tissue_fraction(pixels) >= MIN_TISSUE, "stock OpenSeadragon shows no tissue"
    requests = statuses(server, f"/slides/{SLIDE}/dzi_files/")
    assert requests and all(code == 200 for _, code in requests), requests


def test_missing_slide_shows_error(chromium: Path, server: Gunicorn, tmp_path: Path) -> None:
    dom, pixels = browse(chromium, f"{server.url}/view/missing.svs", tmp_path)
    assert 'data-state="error"' in dom, dom[-1500:]
    assert "Error 404 · not_found" in dom
    assert "slide not found" in dom
    assert tissue_fraction(pixels) < 0.005


def test_tile_failures_show_banner(chromium: Path, server: Gunicorn, slides_dir: Path,
                                   tmp_path: Path) -> None:
    if not (slides_dir / BROKEN).is_file():
        pytest.skip(f"{BROKEN} not in the shared slides")
    dom, _ = browse(chromium, f"{server.url}/view/{BROKEN}", tmp_path)
    assert '<div id="viewer-error" role="alert" class="banner">' in dom, dom[-1500:]
    assert "tiles failed to load: Error 500 · decode_error" in dom


def test_signed_viewer_passes_token_to_every_request(chromium: Path, auth_server: Gunicorn,
                                                     tmp_path: Path) -> None:
    url = signed_url(SECRET, f"/view/{SLIDE}", 600, base_url=auth_server.url)
    dom, pixels = browse(chromium, url, tmp_path)
    assert tissue_fraction(pixels) >= MIN_TISSUE, dom[-1500:]
    requests = statuses(auth_server, "/slides/")
    assert any(path.endswith("/dzi") for path, _ in requests), requests
    assert any("/dzi_files/" in path for path, _ in requests), requests
    assert all(code == 200 for _, code in requests), requests
    # Unsigned, the page itself is refused, so no public page hands out tokens.
    assert auth_server.get(f"/view/{SLIDE}")[0] == 401


HOSTILE = "x\"'><script>alert(1)</script><img src=x onerror=alert(2)>&amp;/ü.svs"


def test_hostile_slide_id_is_escaped(tmp_path: Path) -> None:
    app = create_app(Config(slides_dir=str(tmp_path), tile_cache_dir=str(tmp_path / "tc")))
    response = app.test_client().get("/view/" + quote(HOSTILE, safe="/"))
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<script>alert" not in html and "<img src=x" not in html
    assert html.count("<script") == 3, "only the config block and the two script files"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # title, heading, aria-label
    block = re.search(r'<script type="application/json" id="viewer-config">(.*?)</script>',
                      html, re.S)
    assert block is not None
    config = json.loads(block.group(1))
    assert config["slideId"] == HOSTILE and config["auth"] == {}
    assert config["static"] == "/static/"
