"""The ``/view`` page and the DZI endpoint in a real browser: gunicorn on loopback, headless
Debian Chromium (``/usr/bin/chromium``; skipped when absent) driven over the DevTools protocol
on a pipe (tests/integration/cdp.py). Each test waits for a condition in the page (the
viewer's ``data-state``, OpenSeadragon's "fully loaded", the error text), with a real-time
deadline, then checks the DOM and a screenshot.

Tissue detection: H&E stains are pink (eosin) and purple (haematoxylin); both have red and blue
well above green, which the dark page, the white slide background, grey controls and the dark-red
error box (blue close to green) do not. A screenshot "shows tissue" when at least
``MIN_TISSUE`` of its pixels are such colours (CMU-1-Small-Region fitted to 1280x800: ~8 %).

Chromium cannot reach beyond loopback: its resolver maps every host (names and IP literals)
but 127.0.0.1 to "not found", background networking, sync and updates are off, and the
protocol runs over a pipe, not a port."""

from __future__ import annotations

import functools
import http.server
import io
import json
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import tifffile

from tests.integration.cdp import BrowserError, Chromium, Page
from tests.integration.conftest_faults import Gunicorn
from tests.servers import free_port
from wsi_streamer.format.demo import demo_slide_bytes
from wsi_streamer.server.auth import signed_url

CHROMIUM = Path("/usr/bin/chromium")
DEMO = "demo-slide.tif"
SLIDE = "CMU-1-Small-Region.svs"
BROKEN = "broken.svs"  # generated: metadata parses, every tile is a 500 decode_error
SECRET = "viewer-test-secret"
MIN_TISSUE = 0.03
ACCESS = re.compile(r"wsi_streamer\.access: (?:GET|HEAD) (\S+) (\d{3}) ")
LOAD_TIMEOUT = 30.0  # seconds for a page to reach its condition (a loaded 2-core machine)

# OpenSeadragon (our viewer's ``window.wsiViewer`` or the stock page's ``window.osd``) has the
# one image open and every tile the current view needs drawn.
FULLY_LOADED = ("(v => !!v && v.world.getItemCount() === 1 && "
                "v.world.getItemAt(0).getFullyLoaded())({viewer})")


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    with Chromium(CHROMIUM, tmp_path_factory.mktemp("chromium")) as browser:
        yield browser


def broken_svs() -> bytes:
    """An SVS whose every tile is zeros: it opens, and every tile fails to decode."""
    from tests.fixtures.slides import make_svs

    data = bytearray(make_svs(1200, 900, levels=2, tile=256, associated=False).data)
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        for page in tif.pages:
            for offset, count in zip(page.dataoffsets, page.databytecounts,  # type: ignore
                                     strict=True):
                data[offset : offset + count] = bytes(count)
    return bytes(data)


@pytest.fixture(scope="module")
def slides_dir(slide_of_kind: Callable[[str], Path],
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("viewer-slides")
    (folder / BROKEN).write_bytes(broken_svs())
    (folder / DEMO).write_bytes(demo_slide_bytes())
    shutil.copy(slide_of_kind("aperio"), folder / SLIDE)  # the real file or its twin
    return folder


@pytest.fixture(scope="module")
def cmu(slides_dir: Path) -> str:
    return SLIDE


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


def tissue_fraction(pixels: np.ndarray) -> float:
    """Share of pixels with H&E colours: red and blue both clearly above green."""
    r, g, b = (pixels[..., i].astype(np.int16) for i in range(3))
    return float(((r - g > 40) & (b - g > 15) & (r > 80)).mean())


def shows_tissue(page: Page, timeout: float = 15.0) -> np.ndarray:
    """A screenshot with tissue in it, taken once the page has drawn it (the viewer may be
    fully loaded a frame before the pixels are on screen); fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        pixels = page.screenshot()
        if tissue_fraction(pixels) >= MIN_TISSUE or time.monotonic() > deadline:
            return pixels
        time.sleep(0.1)


def statuses(server: Gunicorn, prefix: str) -> list[tuple[str, int]]:
    return [(path, int(code)) for path, code in ACCESS.findall(server.log())
            if path.startswith(prefix)]


def test_viewer_shows_tissue(chromium: Chromium, server: Gunicorn, cmu: str) -> None:
    with chromium.page() as page:
        page.goto(f"{server.url}/view/{cmu}")
        page.wait_for("document.body.dataset.state === 'ready' && "
                      "!document.getElementById('scalebar').hidden && "
                      + FULLY_LOADED.format(viewer="window.wsiViewer"), LOAD_TIMEOUT)
        pixels = shows_tissue(page)
        dom = page.dom()
    assert tissue_fraction(pixels) >= MIN_TISSUE, "no H&E tissue visible in the viewer"
    assert pixels.std() > 20, "blank page"
    assert 'data-state="ready"' in dom, dom[-1500:]
    assert "2,220 × 2,967 px" in dom and "0.499" in dom and "20×" in dom, "metadata panel"
    assert re.search(r'id="scalebar"(?! hidden)[^>]*>', dom), "scale bar (MPP is known)"
    assert re.search(r'id="viewer-error"[^>]* hidden', dom), "no error shown"
    requests = statuses(server, f"/slides/{cmu}")
    assert any("/dzi_files/" in path for path, _ in requests), requests
    assert all(code == 200 for _, code in requests), requests


def test_stock_openseadragon_shows_tissue(chromium: Chromium, server: Gunicorn, cmu: str,
                                          tmp_path: Path) -> None:
    """A plain OpenSeadragon page on another origin given only the DZI URL."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(f"""<!doctype html><html><body style="margin:0">
<div id="osd" style="width:100vw;height:100vh;background:#000"></div>
<script src="{server.url}/static/openseadragon/openseadragon.min.js"></script>
<script>window.osd = OpenSeadragon({{id: "osd",
  prefixUrl: "{server.url}/static/openseadragon/images/",
  tileSources: "{server.url}/slides/{cmu}/dzi"}});</script></body></html>""")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with chromium.page() as page:
            page.goto(f"http://127.0.0.1:{httpd.server_port}/index.html")
            page.wait_for(FULLY_LOADED.format(viewer="window.osd"), LOAD_TIMEOUT)
            pixels = shows_tissue(page)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
    assert tissue_fraction(pixels) >= MIN_TISSUE, "stock OpenSeadragon shows no tissue"
    requests = statuses(server, f"/slides/{cmu}/dzi_files/")
    assert requests and all(code == 200 for _, code in requests), requests


def stock_page(tmp_path: Path, server_url: str, source: str) -> str:
    """A plain OpenSeadragon page (the vendored copy, nothing of ours) with one tile source;
    ``window.openFailed`` turns true when OpenSeadragon cannot open it."""
    site = tmp_path / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "index.html").write_text(f"""<!doctype html><html><body style="margin:0">
<div id="osd" style="width:100vw;height:100vh;background:#000"></div>
<script src="{server_url}/static/openseadragon/openseadragon.min.js"></script>
<script>window.osd = OpenSeadragon({{id: "osd",
  prefixUrl: "{server_url}/static/openseadragon/images/",
  tileSources: {json.dumps(source)}}});
window.osd.addHandler("open-failed", function () {{ window.openFailed = true; }});
</script></body></html>""")
    return str(site)


@contextmanager
def serve_folder(folder: str) -> Iterator[str]:
    """``folder`` over HTTP on another loopback origin; yields the base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=folder)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_stock_openseadragon_iiif_shows_tissue(chromium: Chromium, server: Gunicorn,
                                               cmu: str, tmp_path: Path) -> None:
    """Stock OpenSeadragon's IIIF tile source given only the info.json URL; the tiles it asks
    for at its scale factors are native tiles or renders, all 200."""
    site = stock_page(tmp_path, server.url, f"{server.url}/iiif/3/{quote(cmu, safe='')}"
                      "/info.json")
    with serve_folder(site) as origin, chromium.page() as page:
        page.goto(f"{origin}/index.html")
        page.wait_for(FULLY_LOADED.format(viewer="window.osd"), LOAD_TIMEOUT)
        pixels = shows_tissue(page)
    assert tissue_fraction(pixels) >= MIN_TISSUE, "stock OpenSeadragon (IIIF) shows no tissue"
    requests = statuses(server, f"/iiif/3/{cmu}/")
    assert any(path.endswith("/info.json") for path, _ in requests), requests
    images = [path for path, _ in requests if path.endswith("/default.jpg")]
    assert images and all(code == 200 for _, code in requests), requests


def test_stock_openseadragon_iiif_signed_and_unsigned(chromium: Chromium,
                                                      auth_server: Gunicorn, cmu: str,
                                                      tmp_path: Path) -> None:
    """With auth on, a signed info.json URL is enough (its id carries the slide's viewer token
    in the path, so every tile URL OpenSeadragon derives is authorised); unsigned is refused."""
    path = f"/iiif/3/{quote(cmu, safe='')}/info.json"
    signed = signed_url(SECRET, path, 600, base_url=auth_server.url)
    site = stock_page(tmp_path / "signed", auth_server.url, signed)
    with serve_folder(site) as origin, chromium.page() as page:
        page.goto(f"{origin}/index.html")
        page.wait_for(FULLY_LOADED.format(viewer="window.osd"), LOAD_TIMEOUT)
        pixels = shows_tissue(page)
    assert tissue_fraction(pixels) >= MIN_TISSUE, "signed IIIF source shows no tissue"
    requests = statuses(auth_server, "/iiif/3/")
    assert any("/iiif/3/vt/" in p and p.endswith("/default.jpg") for p, _ in requests), requests
    assert requests and all(code == 200 for _, code in requests), requests

    unsigned = stock_page(tmp_path / "unsigned", auth_server.url, auth_server.url + path)
    with serve_folder(unsigned) as origin, chromium.page() as page:
        page.goto(f"{origin}/index.html")
        page.wait_for("window.openFailed === true", LOAD_TIMEOUT)
        pixels = page.screenshot()
    assert tissue_fraction(pixels) < 0.005
    assert (f"/iiif/3/{cmu}/info.json", 401) in statuses(auth_server, "/iiif/3/")


def test_stock_openseadragon_iiif_on_the_demo_slide_stays_on_the_grid(
        chromium: Chromium, auth_server: Gunicorn, tmp_path: Path) -> None:
    """The demo slide (49152 x 36864, 256 px tiles): OpenSeadragon reads info.json's ``sizes``
    as its level sizes when there are as many as its levels, and asked for tiles off the
    advertised grid, which a viewer token refuses (401). Every request must be on the grid."""
    path = f"/iiif/3/{DEMO}/info.json"
    site = stock_page(tmp_path, auth_server.url, signed_url(SECRET, path, 600,
                                                            base_url=auth_server.url))
    with serve_folder(site) as origin, chromium.page() as page:
        page.goto(f"{origin}/index.html")
        page.wait_for(FULLY_LOADED.format(viewer="window.osd"), LOAD_TIMEOUT)
        pixels = shows_tissue(page)
    assert tissue_fraction(pixels) >= MIN_TISSUE, "the demo slide through IIIF shows no tissue"
    requests = [r for r in statuses(auth_server, "/iiif/3/") if DEMO in r[0]]
    images = [p for p, _ in requests if p.endswith("/default.jpg")]
    assert images and all(code == 200 for _, code in requests), requests


def test_viewer_loads_through_iiif(chromium: Chromium, server: Gunicorn, cmu: str) -> None:
    with chromium.page() as page:
        page.goto(f"{server.url}/view/{cmu}?protocol=iiif")
        page.wait_for("document.body.dataset.state === 'ready' && "
                      + FULLY_LOADED.format(viewer="window.wsiViewer"), LOAD_TIMEOUT)
        pixels = shows_tissue(page)
    assert tissue_fraction(pixels) >= MIN_TISSUE, "no tissue in the viewer through IIIF"
    requests = statuses(server, f"/iiif/3/{cmu}/")
    assert any(path.endswith("/default.jpg") for path, _ in requests), requests
    assert all(code == 200 for _, code in requests), requests


def test_missing_slide_shows_error(chromium: Chromium, server: Gunicorn) -> None:
    with chromium.page() as page:
        page.goto(f"{server.url}/view/missing.svs")
        page.wait_for("document.body.dataset.state === 'error'", LOAD_TIMEOUT)
        dom, pixels = page.dom(), page.screenshot()
    assert "Error 404 · not_found" in dom, dom[-1500:]
    assert "slide not found" in dom
    assert tissue_fraction(pixels) < 0.005


def test_tile_failures_show_banner(chromium: Chromium, server: Gunicorn) -> None:
    """The banner first counts failed tiles, then (after asking once more for the JSON body)
    names the error: wait for the second."""
    with chromium.page() as page:
        page.goto(f"{server.url}/view/{BROKEN}")
        try:
            page.wait_for("(box => !box.hidden && box.classList.contains('banner') && "
                          "box.textContent.includes('decode_error'))"
                          "(document.getElementById('viewer-error'))", LOAD_TIMEOUT)
        finally:
            dom = page.dom()
    assert '<div id="viewer-error" role="alert" class="banner">' in dom, dom[-1500:]
    assert re.search(r"\d+ tiles? failed to load: Error 500 · decode_error", dom), dom[-1500:]
    assert 'data-state="error"' not in dom  # tile failures are not fatal
    requests = statuses(server, f"/slides/{BROKEN}/dzi_files/")
    assert requests and all(code == 500 for _, code in requests), requests


def test_signed_viewer_passes_token_to_every_request(chromium: Chromium,
                                                     auth_server: Gunicorn, cmu: str) -> None:
    url = signed_url(SECRET, f"/view/{cmu}", 600, base_url=auth_server.url)
    with chromium.page() as page:
        page.goto(url)
        try:
            page.wait_for("document.body.dataset.state === 'ready' && "
                          + FULLY_LOADED.format(viewer="window.wsiViewer"), LOAD_TIMEOUT)
        except BrowserError as exc:
            raise AssertionError(f"{exc}\n{auth_server.log()[-2000:]}") from None
        pixels = shows_tissue(page)
    assert tissue_fraction(pixels) >= MIN_TISSUE
    requests = statuses(auth_server, "/slides/")
    assert any(path.endswith("/dzi") for path, _ in requests), requests
    assert any("/dzi_files/" in path for path, _ in requests), requests
    assert all(code == 200 for _, code in requests), requests
    # Unsigned, the page itself is refused, so no public page hands out tokens.
    assert auth_server.get(f"/view/{cmu}")[0] == 401


HOSTILE = "x\"'><script>alert(1)</script><img src=x onerror=alert(2)>&amp;/ü.svs"


def test_hostile_slide_id_is_escaped(client: Any) -> None:
    """The shared ``client`` (an empty slides folder): the page is rendered whatever the id."""
    response = client.get("/view/" + quote(HOSTILE, safe="/"))
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
