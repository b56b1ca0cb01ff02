"""Every endpoint and error code of API.md against a real gunicorn, serving the same slides
from a local folder and from S3 (moto over HTTP on loopback)."""

from __future__ import annotations

import io
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from tests.servers import Server, gunicorn
from wsi_streamer.format.writer import synthetic_tissue, write_pyramid

CMU = "CMU-1-Small-Region.svs"
REAL = [CMU, "openslide-small.svs", "openslide-unreadable.svs", "openslide-boxes-deflate.tiff",
        "ome-4D-series-bigendian-stripped.ome.tiff", "hamamatsu-test3-DAPI.ndpi"]


@pytest.fixture(scope="module")
def slide_files(shared_slides: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("slides")
    for name in REAL:
        shutil.copy(shared_slides / name, folder / name)
    (folder / "folder").mkdir()
    shutil.copy(shared_slides / CMU, folder / "folder" / "slide.svs")
    shutil.copy(shared_slides / "openslide-small.svs", folder / "UPPER.SVS")
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
        client.create_bucket(Bucket="server-tests")
        for path in slide_files.rglob("*"):
            if path.is_file():
                key = "wsi/" + path.relative_to(slide_files).as_posix()
                client.put_object(Bucket="server-tests", Key=key, Body=path.read_bytes())
        env.update({"WSI_S3_BUCKET": "server-tests", "WSI_S3_PREFIX": "wsi",
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


def test_listing_filters_and_pages(server: Server) -> None:
    slides = get(server, "/slides").json()
    assert slides["next_cursor"] is None
    assert slides["slides"] == sorted(slides["slides"])
    assert {CMU, "folder/slide.svs", "UPPER.SVS", "pyramid.tif",
            "openslide-boxes-deflate.tiff"} <= set(slides["slides"])
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
    assert get(server, "/slides", params={"search": "cmu-1"}).json()["slides"] == [CMU]
    assert len(get(server, "/slides", params={"limit": 0}).json()["slides"]) == 1
    assert len(get(server, "/slides", params={"limit": 99999}).json()["slides"]) == len(seen)


def test_metadata(server: Server) -> None:
    body = get(server, f"/slides/{CMU}").json()
    assert body["slide_id"] == CMU and body["format"] == "Aperio SVS"
    assert (body["width"], body["height"], body["level_count"]) == (2220, 2967, 1)
    assert body["levels"][0] == {"level": 0, "width": 2220, "height": 2967, "tile_width": 240,
                                 "tile_height": 240, "tiles_x": 10, "tiles_y": 13,
                                 "downsample": 1.0}
    assert body["mpp_x"] == pytest.approx(0.499) and body["magnification"] == 20
    generic = get(server, "/slides/pyramid.tif").json()
    assert generic["format"] == "Generic Pyramidal TIFF" and generic["level_count"] == 4
    assert [lv["downsample"] for lv in generic["levels"]] == [1, 2, 4, 8]


@pytest.mark.parametrize("slide_id", ["folder%2Fslide.svs", "folder/slide.svs"])
def test_ids_with_slashes(server: Server, slide_id: str) -> None:
    assert get(server, f"/slides/{slide_id}").json()["slide_id"] == "folder/slide.svs"
    assert image(get(server, f"/tiles/{slide_id}/0/1/2.jpg")).size == (240, 240)
    assert get(server, f"/slides/{slide_id}/dzi").status_code == 200


def test_tile_headers_quality_and_conditional_get(server: Server) -> None:
    first = get(server, f"/tiles/{CMU}/0/3/4.jpg")
    assert image(first).size == (240, 240)
    assert first.headers["Cache-Control"] == "public, max-age=3600"
    assert first.headers["X-Tile-Quality"] == "80"
    assert first.headers["Access-Control-Allow-Origin"] == "*"
    etag = first.headers["ETag"]
    again = get(server, f"/tiles/{CMU}/0/3/4")  # .jpg is optional
    assert again.headers["X-Tile-Cache-Hit"] == "true" and again.headers["ETag"] == etag
    assert again.content == first.content
    assert get(server, f"/tiles/{CMU}/0/3/4.jpg", headers={"If-None-Match": etag}
               ).status_code == 304
    q95 = get(server, f"/tiles/{CMU}/0/3/4.jpg", params={"quality": 95})
    assert q95.headers["X-Tile-Quality"] == "95" and q95.headers["ETag"] != etag
    head = requests.head(server.url + f"/tiles/{CMU}/0/3/4.jpg", timeout=10)
    assert head.status_code == 200 and head.content == b""
    options = requests.options(server.url + f"/tiles/{CMU}/0/3/4.jpg", timeout=10,
                               headers={"Origin": "http://viewer.example",
                                        "Access-Control-Request-Method": "GET"})
    assert options.status_code == 200
    assert "GET" in options.headers["Access-Control-Allow-Methods"]


def test_edge_tiles_are_cropped(server: Server) -> None:
    assert image(get(server, f"/tiles/{CMU}/0/9/12.jpg")).size == (2220 - 2160, 2967 - 2880)
    assert image(get(server, "/tiles/openslide-small.svs/0/0/0.jpg")).size == (16, 16)


def test_tile_pixels_match_openslide(server: Server, slide_files: Path) -> None:
    openslide = pytest.importorskip("openslide")
    with openslide.OpenSlide(str(slide_files / CMU)) as oracle:
        got = np.asarray(image(get(server, f"/tiles/{CMU}/0/4/5.jpg?quality=100")), float)
        want = np.asarray(oracle.read_region((4 * 240, 5 * 240), 0, (240, 240)).convert("RGB"),
                          float)
    psnr = 10 * np.log10(255**2 / max(1e-9, float(((got - want) ** 2).mean())))
    assert psnr > 38, psnr


@pytest.mark.parametrize(("path", "status", "code", "words"), [
    (f"/tiles/{CMU}/1/0/0.jpg", 400, "invalid_level", "0 to 0"),
    (f"/tiles/{CMU}/-1/0/0.jpg", 400, "invalid_level", ""),
    (f"/tiles/{CMU}/x/0/0.jpg", 400, "invalid_level", ""),
    (f"/tiles/{CMU}/0/10/0.jpg", 400, "tile_out_of_bounds", "0 to 9"),
    (f"/tiles/{CMU}/0/0/13.jpg", 400, "tile_out_of_bounds", "0 to 12"),
    (f"/tiles/{CMU}/0/0/0.jpg?quality=0", 400, "invalid_quality", ""),
    (f"/tiles/{CMU}/0/0/0.jpg?quality=101", 400, "invalid_quality", ""),
    (f"/tiles/{CMU}/0/0/0.jpg?quality=high", 400, "invalid_quality", ""),
    ("/tiles/missing.svs/0/0/0.jpg", 404, "not_found", ""),
    ("/slides/missing.svs", 404, "not_found", ""),
    ("/slides/openslide-boxes-deflate.tiff", 415, "unsupported_format", "Deflate"),
    ("/tiles/openslide-boxes-deflate.tiff/0/0/0.jpg", 415, "unsupported_format", "Deflate"),
    ("/slides/ome-4D-series-bigendian-stripped.ome.tiff", 415, "unsupported_format", "stripped"),
    ("/slides/hamamatsu-test3-DAPI.ndpi", 415, "unsupported_format", "NDPI"),
    ("/slides/notes.txt", 415, "unsupported_format", "TIFF"),
    ("/tiles/openslide-unreadable.svs/0/0/0.jpg", 500, "decode_error", ""),
    ("/no/such/route", 404, "not_found", ""),
    (f"/slides/{CMU}/dzi_files/99/0_0.jpg", 400, "invalid_level", ""),
    (f"/slides/{CMU}/dzi_files/12/99_0.jpg", 400, "tile_out_of_bounds", ""),
])
def test_errors(server: Server, request: pytest.FixtureRequest, path: str, status: int,
                code: str, words: str) -> None:
    if request.node.callspec.params["server"] == "local" and path.endswith((".ndpi", ".txt")):
        status, code, words = 404, "not_found", ""  # a folder opens only slide names (15.10)
    body = assert_error(get(server, path), status, code)
    assert words in str(body["message"])


def test_method_not_allowed_is_json(server: Server) -> None:
    assert_error(requests.post(server.url + "/health", timeout=10), 405, "method_not_allowed")


def test_dzi_descriptor_and_tiles(server: Server) -> None:
    xml = get(server, f"/slides/{CMU}/dzi")
    assert "xml" in xml.headers["Content-Type"]
    root = ET.fromstring(xml.text)
    ns = "{http://schemas.microsoft.com/deepzoom/2008}"
    size = root.find(f"{ns}Size")
    assert size is not None and (size.get("Width"), size.get("Height")) == ("2220", "2967")
    tile_size, overlap = int(root.get("TileSize", 0)), int(root.get("Overlap", -1))
    assert root.get("Format") == "jpg" and tile_size > 0 and overlap >= 0
    top = 12  # ceil(log2(2967))
    assert image(get(server, f"/slides/{CMU}/dzi_files/0/0_0.jpg")).size == (1, 1)
    assert image(get(server, f"/slides/{CMU}/dzi_files/{top}/0_0.jpg")).size == (
        tile_size + overlap, tile_size + overlap)
    assert image(get(server, f"/slides/{CMU}/dzi_files/{top}/1_1.jpg")).size == (
        tile_size + 2 * overlap, tile_size + 2 * overlap)
    cols = -(-2220 // tile_size)
    last = image(get(server, f"/slides/{CMU}/dzi_files/{top}/{cols - 1}_0.jpg"))
    assert last.size[0] == 2220 - (cols - 1) * tile_size + overlap
    # The top level is the native level: DZI tile (1,1) equals the same pixels of the slide.
    dz = np.asarray(image(get(server, f"/slides/{CMU}/dzi_files/{top}/1_1.jpg?quality=100")),
                    float)
    x0 = tile_size - overlap
    region = np.zeros_like(dz)
    for ty in range(x0 // 240, (x0 + dz.shape[0]) // 240 + 1):
        for tx in range(x0 // 240, (x0 + dz.shape[1]) // 240 + 1):
            tile = np.asarray(image(get(server, f"/tiles/{CMU}/0/{tx}/{ty}.jpg?quality=100")),
                              float)
            ys, xs = ty * 240 - x0, tx * 240 - x0
            sub = region[max(0, ys):ys + tile.shape[0], max(0, xs):xs + tile.shape[1]]
            sub[:] = tile[max(0, -ys):max(0, -ys) + sub.shape[0],
                          max(0, -xs):max(0, -xs) + sub.shape[1]]
    assert np.abs(dz - region).mean() < 3.0


def test_thumbnail(server: Server) -> None:
    thumb = image(get(server, f"/slides/{CMU}/thumbnail", params={"max_size": 300}))
    assert thumb.size == (224, 300)
    assert "X-Thumbnail-Size-Clamped" not in get(server, f"/slides/{CMU}/thumbnail").headers
    big = get(server, f"/slides/{CMU}/thumbnail", params={"max_size": 5000})
    assert big.headers["X-Thumbnail-Size-Clamped"] == "true"
    assert big.headers["X-Thumbnail-Requested-Size"] == "5000"
    assert big.headers["X-Thumbnail-Actual-Size"] == "2048"
    assert max(image(big).size) == 2048
    small = get(server, f"/slides/{CMU}/thumbnail", params={"max_size": 1})
    assert max(image(small).size) == 64 and small.headers["X-Thumbnail-Actual-Size"] == "64"
    pyramid = image(get(server, "/slides/pyramid.tif/thumbnail", params={"max_size": 200}))
    assert pyramid.size == (200, 150)
    pixels = np.asarray(thumb, float)
    assert pixels.std() > 10 and pixels.mean() < 245  # tissue, not blank


def test_access_log_line(server: Server) -> None:
    get(server, f"/tiles/{CMU}/0/2/2.jpg?quality=77&sig=deadbeef")
    lines = server.access_lines(f"/tiles/{CMU}/0/2/2.jpg")
    assert lines, server.log()[-2000:]
    line = lines[-1]
    for word in ("GET", " 200 ", "ms", "cache_hit=", "storage_requests=", "storage_bytes="):
        assert word in line
    assert "deadbeef" not in server.log()
