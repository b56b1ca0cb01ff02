"""Every endpoint and error code of API.md against a real gunicorn, serving the same slides
from a local folder and from S3 (moto over HTTP on loopback).

Two corpora run the same tests: ``generated`` (written here with tifffile, so it always runs)
and ``real`` (the scanner files of ``../shared/slides``, skipped with the reason when absent).
Each corpus names its slides and their geometry in a ``Corpus``; the tests read only that."""

from __future__ import annotations

import io
import math
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
import tifffile
from PIL import Image

from tests.fixtures.images import downsample2
from tests.fixtures.slides import make_simple, make_svs
from tests.servers import Server, gunicorn
from wsi_streamer.format.tiff.writer import synthetic_tissue, write_pyramid


@dataclass(frozen=True)
class Corpus:
    """The slides of one corpus by role, with what the API must say about them."""

    main: str  # Aperio SVS most tests use, 20x at 0.499 um/px
    size: tuple[int, int]  # level 0 (width, height)
    tile: int  # native tile side of every level
    levels: int
    search: str  # a case-insensitive substring of ``main`` alone
    small: str  # a 16x16 SVS in one tile
    unreadable: str  # tile (0, 0) of level 0 cannot be decoded
    deflate: str  # tiled, Deflate-compressed TIFF
    stripped: str  # stripped TIFF
    ndpi: str  # Hamamatsu NDPI (tag 65420)

    @property
    def tiles(self) -> tuple[int, int]:
        return -(-self.size[0] // self.tile), -(-self.size[1] // self.tile)

    @property
    def dzi_top(self) -> int:
        """The Deep Zoom level of the full resolution: ceil(log2(longest side))."""
        return math.ceil(math.log2(max(self.size)))

    def fill(self, template: str) -> str:
        tx, ty = self.tiles
        return template.format(main=self.main, unreadable=self.unreadable, ndpi=self.ndpi,
                               deflate=self.deflate, stripped=self.stripped,
                               levels=self.levels, last_level=self.levels - 1, tiles_x=tx,
                               tiles_y=ty, last_x=tx - 1, last_y=ty - 1, top=self.dzi_top)


REAL = Corpus(main="CMU-1-Small-Region.svs", size=(2220, 2967), tile=240, levels=1,
              search="cmu-1", small="openslide-small.svs",
              unreadable="openslide-unreadable.svs", deflate="openslide-boxes-deflate.tiff",
              stripped="ome-4D-series-bigendian-stripped.ome.tiff",
              ndpi="hamamatsu-test3-DAPI.ndpi")
GENERATED = Corpus(main="generated.svs", size=(2300, 1700), tile=256, levels=3,
                   search="GENERATED", small="small.svs", unreadable="unreadable.svs",
                   deflate="deflate.tiff", stripped="stripped.tiff", ndpi="hamamatsu.ndpi")


def _ndpi_like() -> bytes:
    """A tiled JPEG TIFF carrying Hamamatsu's NDPI format flag (tag 65420)."""
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tif:
        tif.write(np.asarray(synthetic_tissue(256, 192, seed=4)), tile=(64, 64),
                  compression="jpeg", photometric="rgb", metadata=None, software=False,
                  extratags=[(65420, "I", 1, 1, True)])
    return buf.getvalue()


def _unreadable_svs() -> bytes:
    """An SVS whose level-0 tile (0, 0) keeps its SOI marker but is garbage after it."""
    data = bytearray(make_svs(600, 400, levels=1, tile=256, associated=False, seed=5).data)
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    data[offset + 2:offset + count] = bytes(i % 251 for i in range(count - 2))
    return bytes(data)


def write_generated(folder: Path) -> None:
    """The generated corpus: ``GENERATED``'s slides, written in about a second."""
    base = np.asarray(synthetic_tissue(*GENERATED.size, seed=11))
    images = [base]
    while len(images) < GENERATED.levels:
        images.append(downsample2(images[-1]))
    make_svs(images=images, tile=GENERATED.tile).write(folder, GENERATED.main)
    make_svs(16, 16, levels=1, tile=256, associated=False).write(folder, GENERATED.small)
    (folder / GENERATED.unreadable).write_bytes(_unreadable_svs())
    make_simple(300, 200, tile=64, compression="zlib").write(folder, GENERATED.deflate)
    make_simple(300, 200, tile=None, compression="jpeg").write(folder, GENERATED.stripped)
    (folder / GENERATED.ndpi).write_bytes(_ndpi_like())


@pytest.fixture(scope="module", params=["generated", "real"])
def corpus(request: pytest.FixtureRequest) -> Corpus:
    return GENERATED if request.param == "generated" else REAL


@pytest.fixture(scope="module")
def slide_files(corpus: Corpus, request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus plus the same extras for both: a copy of ``main`` in a folder, a copy of
    ``small`` with an upper-case name, a text file and a generic pyramid."""
    folder = tmp_path_factory.mktemp("slides")
    if corpus is REAL:
        shared: Path = request.getfixturevalue("shared_slides")
        for name in (REAL.main, REAL.small, REAL.unreadable, REAL.deflate, REAL.stripped,
                     REAL.ndpi):
            shutil.copy(shared / name, folder / name)
    else:
        write_generated(folder)
    (folder / "folder").mkdir()
    shutil.copy(folder / corpus.main, folder / "folder" / "slide.svs")
    shutil.copy(folder / corpus.small, folder / "UPPER.SVS")
    (folder / "notes.txt").write_text("not a slide")
    (folder / "pyramid.tif").write_bytes(
        write_pyramid(synthetic_tissue(2048, 1536), tile=256, min_side=256))
    return folder


@pytest.fixture(scope="module", params=["local", "s3"])
def server(request: pytest.FixtureRequest, slide_files: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(f"server-{request.param}")
    env = {"WSI_TILE_CACHE_DIR": str(tmp / "tiles"), "WSI_SLIDE_REVALIDATE": "1"}
    if request.param == "s3":
        import boto3

        endpoint = request.getfixturevalue("moto_server")
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        bucket = f"server-tests-{slide_files.name.lower()}"
        client.create_bucket(Bucket=bucket)
        for path in slide_files.rglob("*"):
            if path.is_file():
                key = "wsi/" + path.relative_to(slide_files).as_posix()
                client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
        env.update({"WSI_S3_BUCKET": bucket, "WSI_S3_PREFIX": "wsi",
                    "WSI_S3_ENDPOINT": endpoint})
    else:
        env["WSI_SLIDES_DIR"] = str(slide_files)
    with gunicorn(env, tmp / "gunicorn.log", workers=2) as srv:
        yield srv


def get(server: Server, path: str, **kwargs: object) -> requests.Response:
    return requests.get(server.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]


def assert_error(response: requests.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code and body["status"] == status and body["message"]
    assert "Traceback" not in response.text
    return body  # type: ignore[no-any-return]


def image(response: requests.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "image/jpeg"
    return Image.open(io.BytesIO(response.content))


def test_health(server: Server) -> None:
    body = get(server, "/health").json()
    assert body["status"] == "healthy" and body["version"]


def test_metrics_count_storage_and_tiles(server: Server, corpus: Corpus) -> None:
    get(server, f"/tiles/{corpus.main}/0/0/0.jpg")
    text = get(server, "/metrics").text
    # Host totals (no pid label: every worker's values are summed), Prometheus floats.
    values = dict(re.findall(r"^(wsi_\w+) (\d+(?:\.\d+)?(?:e[+-]?\d+)?)$", text, re.MULTILINE))
    assert {"wsi_storage_requests_total", "wsi_tiles_rendered_total",
            "wsi_tile_cache_hits_total"} <= set(values), text


def test_listing_filters_and_pages(server: Server, corpus: Corpus) -> None:
    slides = get(server, "/slides").json()
    assert slides["next_cursor"] is None
    assert slides["slides"] == sorted(slides["slides"])
    assert {corpus.main, "folder/slide.svs", "UPPER.SVS", "pyramid.tif",
            corpus.deflate} <= set(slides["slides"])
    assert not any(s.endswith((".txt", ".ndpi")) for s in slides["slides"])
    seen, cursor = [], None
    while True:
        page = get(server, "/slides", params={"limit": 3, "cursor": cursor}).json()
        assert len(page["slides"]) <= 3
        seen += page["slides"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == slides["slides"]
    assert get(server, "/slides", params={"prefix": "folder/"}).json()["slides"] == [
        "folder/slide.svs"]
    assert get(server, "/slides", params={"search": corpus.search}).json()["slides"] == [
        corpus.main]
    assert len(get(server, "/slides", params={"limit": 0}).json()["slides"]) == 1
    assert len(get(server, "/slides", params={"limit": 99999}).json()["slides"]) == len(seen)


def test_metadata(server: Server, corpus: Corpus) -> None:
    body = get(server, f"/slides/{corpus.main}").json()
    assert body["slide_id"] == corpus.main and body["format"] == "Aperio SVS"
    width, height = corpus.size
    assert (body["width"], body["height"], body["level_count"]) == (width, height,
                                                                     corpus.levels)
    tiles_x, tiles_y = corpus.tiles
    assert body["levels"][0] == {"level": 0, "width": width, "height": height,
                                 "tile_width": corpus.tile, "tile_height": corpus.tile,
                                 "tiles_x": tiles_x, "tiles_y": tiles_y, "downsample": 1.0}
    assert body["mpp_x"] == pytest.approx(0.499) and body["magnification"] == 20
    generic = get(server, "/slides/pyramid.tif").json()
    assert generic["format"] == "Generic Pyramidal TIFF" and generic["level_count"] == 4
    assert [lv["downsample"] for lv in generic["levels"]] == [1, 2, 4, 8]


@pytest.mark.parametrize("slide_id", ["folder%2Fslide.svs", "folder/slide.svs"])
def test_ids_with_slashes(server: Server, corpus: Corpus, slide_id: str) -> None:
    assert get(server, f"/slides/{slide_id}").json()["slide_id"] == "folder/slide.svs"
    assert image(get(server, f"/tiles/{slide_id}/0/1/2.jpg")).size == (corpus.tile,
                                                                        corpus.tile)
    assert get(server, f"/slides/{slide_id}/dzi").status_code == 200


def test_tile_headers_quality_and_conditional_get(server: Server, corpus: Corpus) -> None:
    url = f"/tiles/{corpus.main}/0/3/4.jpg"
    first = get(server, url)
    assert image(first).size == (corpus.tile, corpus.tile)
    assert first.headers["Cache-Control"] == "public, max-age=3600"
    assert first.headers["X-Tile-Quality"] == "80"
    assert first.headers["Access-Control-Allow-Origin"] == "*"
    etag = first.headers["ETag"]
    again = get(server, f"/tiles/{corpus.main}/0/3/4")  # .jpg is optional
    assert again.headers["X-Tile-Cache-Hit"] == "true" and again.headers["ETag"] == etag
    assert again.content == first.content
    assert get(server, url, headers={"If-None-Match": etag}).status_code == 304
    q95 = get(server, url, params={"quality": 95})
    assert q95.headers["X-Tile-Quality"] == "95" and q95.headers["ETag"] != etag
    head = requests.head(server.url + url, timeout=10)
    assert head.status_code == 200 and head.content == b""
    options = requests.options(server.url + url, timeout=10,
                               headers={"Origin": "http://viewer.example",
                                        "Access-Control-Request-Method": "GET"})
    assert options.status_code == 200
    assert "GET" in options.headers["Access-Control-Allow-Methods"]


def test_edge_tiles_are_cropped(server: Server, corpus: Corpus) -> None:
    (width, height), (tiles_x, tiles_y) = corpus.size, corpus.tiles
    last = image(get(server, f"/tiles/{corpus.main}/0/{tiles_x - 1}/{tiles_y - 1}.jpg"))
    assert last.size == (width - (tiles_x - 1) * corpus.tile,
                         height - (tiles_y - 1) * corpus.tile)
    assert image(get(server, f"/tiles/{corpus.small}/0/0/0.jpg")).size == (16, 16)


def test_tile_pixels_match_openslide(server: Server, corpus: Corpus,
                                     slide_files: Path) -> None:
    openslide = pytest.importorskip("openslide")
    side = corpus.tile
    with openslide.OpenSlide(str(slide_files / corpus.main)) as oracle:
        got = np.asarray(image(get(server, f"/tiles/{corpus.main}/0/4/5.jpg?quality=100")),
                         float)
        want = np.asarray(oracle.read_region((4 * side, 5 * side), 0, (side, side))
                          .convert("RGB"), float)
    psnr = 10 * np.log10(255**2 / max(1e-9, float(((got - want) ** 2).mean())))
    assert psnr > 38, psnr


@pytest.mark.parametrize(("path", "status", "code", "words"), [
    ("/tiles/{main}/{levels}/0/0.jpg", 400, "invalid_level", "0 to {last_level}"),
    ("/tiles/{main}/-1/0/0.jpg", 400, "invalid_level", ""),
    ("/tiles/{main}/x/0/0.jpg", 400, "invalid_level", ""),
    ("/tiles/{main}/0/{tiles_x}/0.jpg", 400, "tile_out_of_bounds", "0 to {last_x}"),
    ("/tiles/{main}/0/0/{tiles_y}.jpg", 400, "tile_out_of_bounds", "0 to {last_y}"),
    ("/tiles/{main}/0/0/0.jpg?quality=0", 400, "invalid_quality", ""),
    ("/tiles/{main}/0/0/0.jpg?quality=101", 400, "invalid_quality", ""),
    ("/tiles/{main}/0/0/0.jpg?quality=high", 400, "invalid_quality", ""),
    ("/tiles/missing.svs/0/0/0.jpg", 404, "not_found", ""),
    ("/slides/missing.svs", 404, "not_found", ""),
    ("/slides/{deflate}", 415, "unsupported_format", "Deflate"),
    ("/tiles/{deflate}/0/0/0.jpg", 415, "unsupported_format", "Deflate"),
    ("/slides/{stripped}", 415, "unsupported_format", "stripped"),
    ("/slides/{ndpi}", 415, "unsupported_format", "NDPI"),
    ("/slides/notes.txt", 415, "unsupported_format", "TIFF"),
    ("/tiles/{unreadable}/0/0/0.jpg", 500, "decode_error", ""),
    ("/no/such/route", 404, "not_found", ""),
    ("/slides/{main}/dzi_files/99/0_0.jpg", 400, "invalid_level", ""),
    ("/slides/{main}/dzi_files/{top}/99_0.jpg", 400, "tile_out_of_bounds", ""),
])
def test_errors(server: Server, corpus: Corpus, request: pytest.FixtureRequest, path: str,
                status: int, code: str, words: str) -> None:
    if request.node.callspec.params["server"] == "local" and path.endswith(".txt"):
        # A folder opens only slide names (15.10), and the names a driver recognises to say
        # why it refuses them (NDPI: 415, issue 12).
        status, code, words = 404, "not_found", ""
    body = assert_error(get(server, corpus.fill(path)), status, code)
    assert corpus.fill(words) in str(body["message"])


def test_method_not_allowed_is_json(server: Server) -> None:
    assert_error(requests.post(server.url + "/health", timeout=10), 405, "method_not_allowed")


def test_dzi_descriptor_and_tiles(server: Server, corpus: Corpus) -> None:
    main, side, (width, height) = corpus.main, corpus.tile, corpus.size
    xml = get(server, f"/slides/{main}/dzi")
    assert "xml" in xml.headers["Content-Type"]
    root = ET.fromstring(xml.text)
    ns = "{http://schemas.microsoft.com/deepzoom/2008}"
    size = root.find(f"{ns}Size")
    assert size is not None and (size.get("Width"), size.get("Height")) == (str(width),
                                                                             str(height))
    tile_size, overlap = int(root.get("TileSize", 0)), int(root.get("Overlap", -1))
    assert root.get("Format") == "jpg" and tile_size > 0 and overlap >= 0
    top = corpus.dzi_top
    assert image(get(server, f"/slides/{main}/dzi_files/0/0_0.jpg")).size == (1, 1)
    assert image(get(server, f"/slides/{main}/dzi_files/{top}/0_0.jpg")).size == (
        tile_size + overlap, tile_size + overlap)
    assert image(get(server, f"/slides/{main}/dzi_files/{top}/1_1.jpg")).size == (
        tile_size + 2 * overlap, tile_size + 2 * overlap)
    cols = -(-width // tile_size)
    last = image(get(server, f"/slides/{main}/dzi_files/{top}/{cols - 1}_0.jpg"))
    assert last.size[0] == width - (cols - 1) * tile_size + overlap
    # The top level is the native level: DZI tile (1,1) equals the same pixels of the slide.
    dz = np.asarray(image(get(server, f"/slides/{main}/dzi_files/{top}/1_1.jpg?quality=100")),
                    float)
    x0 = tile_size - overlap
    region = np.zeros_like(dz)
    for ty in range(x0 // side, (x0 + dz.shape[0]) // side + 1):
        for tx in range(x0 // side, (x0 + dz.shape[1]) // side + 1):
            tile = np.asarray(image(get(server, f"/tiles/{main}/0/{tx}/{ty}.jpg?quality=100")),
                              float)
            ys, xs = ty * side - x0, tx * side - x0
            sub = region[max(0, ys):ys + tile.shape[0], max(0, xs):xs + tile.shape[1]]
            sub[:] = tile[max(0, -ys):max(0, -ys) + sub.shape[0],
                          max(0, -xs):max(0, -xs) + sub.shape[1]]
    assert np.abs(dz - region).mean() < 3.0


def test_thumbnail(server: Server, corpus: Corpus) -> None:
    main, (width, height) = corpus.main, corpus.size
    thumb = image(get(server, f"/slides/{main}/thumbnail", params={"max_size": 300}))
    scale = 300 / max(width, height)
    assert thumb.size == (round(width * scale), round(height * scale))
    assert "X-Thumbnail-Size-Clamped" not in get(server, f"/slides/{main}/thumbnail").headers
    big = get(server, f"/slides/{main}/thumbnail", params={"max_size": 5000})
    assert big.headers["X-Thumbnail-Size-Clamped"] == "true"
    assert big.headers["X-Thumbnail-Requested-Size"] == "5000"
    assert big.headers["X-Thumbnail-Actual-Size"] == "2048"
    assert max(image(big).size) == 2048
    small = get(server, f"/slides/{main}/thumbnail", params={"max_size": 1})
    assert max(image(small).size) == 64 and small.headers["X-Thumbnail-Actual-Size"] == "64"
    pyramid = image(get(server, "/slides/pyramid.tif/thumbnail", params={"max_size": 200}))
    assert pyramid.size == (200, 150)
    pixels = np.asarray(thumb, float)
    assert pixels.std() > 10 and pixels.mean() < 245  # tissue, not blank


def test_viewer_page_and_its_scripts(server: Server, corpus: Corpus) -> None:
    page = get(server, f"/view/{corpus.main}")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert corpus.main in page.text
    scripts = re.findall(r'<script[^>]*\bsrc="([^"]+)"', page.text)
    assert scripts, page.text[:1000]
    for src in scripts:
        assert src.startswith("/"), src  # served by the app itself, no CDN
        assert get(server, src).status_code == 200, src


def test_access_log_line(server: Server, corpus: Corpus) -> None:
    path = f"/tiles/{corpus.main}/0/2/2.jpg"
    get(server, f"{path}?quality=77&sig=deadbeef")
    lines = server.access_lines(path)
    assert lines, server.log()[-2000:]
    line = lines[-1]
    for word in ("GET", " 200 ", "ms", "cache_hit=", "storage_requests=", "storage_bytes="):
        assert word in line
    assert "deadbeef" not in server.log()
