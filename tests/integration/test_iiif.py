"""IIIF Image API 3.0 through the app (Flask client): malformed requests (a table of IIIF
statuses with JSON bodies), limits, the base-URI redirect, JSON-LD, auth (signatures, viewer
tokens in the query and in the path), native-tile requests served without a render, and
pixels against OpenSlide on CMU-1-Small-Region.svs (or its generated twin)."""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from flask import Flask
from PIL import Image

from tests.fixtures.images import psnr
from wsi_streamer import create_app
from wsi_streamer.config import Config
from wsi_streamer.server.auth import signed_url, viewer_token
from wsi_streamer.server.services import services
from wsi_streamer.tile import service as service_module

SLIDE = "a.svs"  # 1536x1152, 4 levels (downsamples 1, 2, 4, 8), 256 px tiles
REAL = "CMU-1-Small-Region.svs"
SECRET = "iiif-secret"
BASE = f"/iiif/3/{SLIDE}"


@pytest.fixture
def app_config(tmp_path: Path, svs4: Any) -> Config:
    slides = tmp_path / "slides"
    slides.mkdir()
    (slides / SLIDE).write_bytes(svs4.data)
    (slides / "b.svs").write_bytes(svs4.data)
    return Config(slides_dir=str(slides), tile_cache_dir=str(tmp_path / "tile-cache"))


@pytest.fixture
def aperio(slide_of_kind: Callable[[str], Path]) -> Path:
    """CMU-1-Small-Region.svs, or its generated twin without the real slides."""
    return slide_of_kind("aperio")


@pytest.fixture
def real_client(tmp_path: Path, aperio: Path) -> Any:
    slides = tmp_path / "real"
    slides.mkdir()
    shutil.copy(aperio, slides / REAL)
    config = Config(slides_dir=str(slides), tile_cache_dir=str(tmp_path / "real-cache"))
    return create_app(config).test_client()


def pixels(response: Any) -> np.ndarray:
    assert response.status_code == 200, response.get_data(as_text=True)
    return np.asarray(Image.open(io.BytesIO(response.data)))


# --- malformed requests: (path after /iiif/3/a.svs/, status) -----------------------------

MALFORMED = [
    # region
    ("fulll/max/0/default.jpg", 400), ("FULL/max/0/default.jpg", 400),
    ("square!/max/0/default.jpg", 400), ("0,0,10/max/0/default.jpg", 400),
    ("0,0,10,10,10/max/0/default.jpg", 400), ("-1,0,10,10/max/0/default.jpg", 400),
    ("0,0,0,10/max/0/default.jpg", 400), ("0,0,10,0/max/0/default.jpg", 400),
    ("1536,0,10,10/max/0/default.jpg", 400), ("0,1152,10,10/max/0/default.jpg", 400),
    ("1.5,0,10,10/max/0/default.jpg", 400), ("x,y,w,h/max/0/default.jpg", 400),
    ("pct:0,0,0,10/max/0/default.jpg", 400), ("pct:100,0,10,10/max/0/default.jpg", 400),
    ("pct:a,0,10,10/max/0/default.jpg", 400), ("pct:-1,0,10,10/max/0/default.jpg", 400),
    ("pct:1,2,3/max/0/default.jpg", 400), ("%200,0,10,10/max/0/default.jpg", 400),
    # size
    ("full/full/0/default.jpg", 400), ("full/max,/0/default.jpg", 400),
    ("full/0,/0/default.jpg", 400), ("full/,0/0/default.jpg", 400),
    ("full/0,0/0/default.jpg", 400), ("full/!0,10/0/default.jpg", 400),
    ("full/1537,/0/default.jpg", 400), ("full/,1153/0/default.jpg", 400),
    ("full/pct:101/0/default.jpg", 400), ("full/pct:0/0/default.jpg", 400),
    ("full/pct:/0/default.jpg", 400), ("full/^/0/default.jpg", 400),
    ("full/^^max/0/default.jpg", 400), ("full/10,20,30/0/default.jpg", 400),
    ("full/!10/0/default.jpg", 400), ("full/-10,/0/default.jpg", 400),
    ("full/abc/0/default.jpg", 400), ("full/!2000,3000/0/default.jpg", 400),
    # rotation
    ("full/max/45/default.jpg", 501), ("full/max/22.5/default.jpg", 501),
    ("full/max/!45/default.jpg", 501), ("full/max/361/default.jpg", 400),
    ("full/max/-90/default.jpg", 400), ("full/max/abc/default.jpg", 400),
    ("full/max/!!0/default.jpg", 400), ("full/max/90deg/default.jpg", 400),
    # quality
    ("full/max/0/grey.jpg", 400), ("full/max/0/native.jpg", 400),
    ("full/max/0/Default.jpg", 400), ("full/max/0/colour.jpg", 400),
    # format
    ("full/max/0/default.gif", 501), ("full/max/0/default.tif", 501),
    ("full/max/0/default.jp2", 501), ("full/max/0/default.pdf", 501),
    ("full/max/0/default.bmp", 400), ("full/max/0/default.JPG", 400),
    ("full/max/0/default.jpeg", 400),
]


@pytest.mark.parametrize(("path", "status"), MALFORMED)
def test_malformed_requests_get_iiif_status_and_json(client: Any, path: str,
                                                     status: int) -> None:
    response = client.get(f"{BASE}/{path}")
    assert response.status_code == status, (path, response.get_data(as_text=True))
    body = response.get_json()
    assert body["status"] == status and body["error"] and body["message"], body


def test_table_is_large_enough() -> None:
    assert len(MALFORMED) >= 40


@pytest.mark.parametrize("path", ["missing.svs/full/max/0/default.jpg",
                                  "missing.svs/info.json", "a%2Fb/full/max/0/default.jpg"])
def test_unknown_identifier_is_404(client: Any, path: str) -> None:
    response = client.get(f"/iiif/3/{path}")
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


def test_syntax_is_checked_before_the_identifier(client: Any) -> None:
    assert client.get("/iiif/3/missing.svs/full/max/0/grey.jpg").status_code == 400


@pytest.mark.parametrize(("size", "limit"), [("^5000,", "MAX_WIDTH"), ("^,4097", "MAX_WIDTH"),
                                             ("^3000,3000", "MAX_AREA")])
def test_over_the_limits_is_400_naming_the_limit(client: Any, size: str, limit: str) -> None:
    response = client.get(f"{BASE}/full/{size}/0/default.jpg")
    assert response.status_code == 400
    body = response.get_json()
    assert limit in body["message"] and body["status"] == 400, body


# --- protocol ----------------------------------------------------------------------------

def test_info_json(client: Any) -> None:
    response = client.get(f"{BASE}/info.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    info = response.get_json()
    assert info["@context"] == "http://iiif.io/api/image/3/context.json"
    assert info["id"] == f"http://localhost{BASE}" and info["type"] == "ImageService3"
    assert info["protocol"] == "http://iiif.io/api/image" and info["profile"] == "level2"
    assert (info["width"], info["height"]) == (1536, 1152)
    assert info["tiles"] == [{"width": 256, "height": 256, "scaleFactors": [1, 2, 4, 8]}]
    assert info["maxArea"] == 2048 * 2048 and info["maxWidth"] == 4096
    assert {"width": 192, "height": 144} in info["sizes"]
    assert set(info["extraQualities"]) == {"color", "gray", "bitonal"}
    assert info["extraFormats"] == ["webp"]
    assert "mirroring" in info["extraFeatures"]
    ld = client.get(f"{BASE}/info.json", headers={"Accept": "application/ld+json"})
    assert ld.headers["Content-Type"].startswith("application/ld+json")
    assert 'rel="profile"' in ld.headers["Link"]


def test_identifier_with_slash_is_percent_encoded(client: Any, app_config: Config) -> None:
    folder = Path(app_config.slides_dir) / "sub"
    folder.mkdir()
    shutil.copy(Path(app_config.slides_dir) / SLIDE, folder / SLIDE)
    info = client.get("/iiif/3/sub%2Fa.svs/info.json").get_json()
    assert info["id"].endswith("/iiif/3/sub%2Fa.svs")


def test_base_uri_redirects_to_info_json(client: Any) -> None:
    response = client.get(BASE)
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"{BASE}/info.json")


def test_canonical_and_profile_link_headers(client: Any) -> None:
    links = client.get(f"{BASE}/pct:0,0,50,50/^!900,900/!90/gray.png").headers["Link"]
    assert f'<http://localhost{BASE}/0,0,768,576/^900,675/!90/gray.png>;rel="canonical"' in links
    assert '<http://iiif.io/api/image/3/level2.json>;rel="profile"' in links
    full = client.get(f"{BASE}/full/max/0/default.jpg").headers["Link"]
    assert f"{BASE}/full/max/0/default.jpg>" in full


def test_cors_and_media_types(client: Any) -> None:
    for fmt, media in (("jpg", "image/jpeg"), ("png", "image/png"), ("webp", "image/webp")):
        response = client.get(f"{BASE}/full/128,/0/default.{fmt}",
                              headers={"Origin": "http://elsewhere"})
        assert response.status_code == 200 and response.mimetype == media
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert Image.open(io.BytesIO(response.data)).size == (128, 96)


def test_sizes_and_regions(client: Any) -> None:
    cases = {"full/max": (1536, 1152), "square/max": (1152, 1152), "full/,100": (133, 100),
             "full/pct:50": (768, 576), "full/!300,300": (300, 225), "full/^!1800,1800":
             (1800, 1350), "100,100,300,200/max": (300, 200), "pct:50,50,50,50/max":
             (768, 576), "1500,1100,100,100/max": (36, 52), "full/^2000,": (2000, 1500),
             "10,10,20,20/^40,": (40, 40)}
    for path, size in cases.items():
        response = client.get(f"{BASE}/{path}/0/default.png")
        assert response.status_code == 200, (path, response.get_data(as_text=True))
        assert Image.open(io.BytesIO(response.data)).size == size, path
    capped = Image.open(io.BytesIO(client.get(f"{BASE}/full/^!3000,3000/0/default.png").data))
    assert capped.width * capped.height <= 2048 * 2048 and capped.width > 2048  # maxArea
    rotated = Image.open(io.BytesIO(client.get(f"{BASE}/0,0,300,200/max/90/default.png").data))
    assert rotated.size == (200, 300)


def test_qualities(client: Any) -> None:
    color = pixels(client.get(f"{BASE}/0,0,256,256/max/0/color.png"))
    gray = pixels(client.get(f"{BASE}/0,0,256,256/max/0/gray.png"))
    bitonal = pixels(client.get(f"{BASE}/0,0,256,256/max/0/bitonal.png"))
    assert color.shape == (256, 256, 3) and gray.shape == bitonal.shape == (256, 256)
    expected = np.asarray(Image.fromarray(color).convert("L"))
    assert np.array_equal(gray, expected)
    assert set(np.unique(bitonal)) <= {0, 255}
    assert np.array_equal(bitonal, np.where(expected >= 128, 255, 0))


# --- native tiles ------------------------------------------------------------------------

def test_native_tile_requests_are_served_without_a_render(app: Flask, client: Any,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    renders: list[object] = []
    real = service_module.render_region
    monkeypatch.setattr(service_module, "render_region",
                        lambda *a, **k: renders.append(a) or real(*a, **k))
    stats = services(app).tiles.stats
    # What OpenSeadragon asks for: scale factor 1 and 2 tiles, and a cropped edge tile.
    for iiif_path, tile_path in (("256,0,256,256/256,", "0/1/0"),
                                 ("512,512,512,512/256,", "1/1/1"),
                                 ("1024,1024,512,128/256,", "1/2/2"),
                                 ("1280,1024,256,128/256,", "0/5/4"),
                                 ("1024,0,512,512/256,", "1/2/0")):
        iiif = client.get(f"{BASE}/{iiif_path}/0/default.jpg")
        tile = client.get(f"/tiles/{SLIDE}/{tile_path}.jpg")
        assert iiif.status_code == tile.status_code == 200, iiif_path
        assert iiif.headers["ETag"] == tile.headers["ETag"], iiif_path  # one cached image
        assert iiif.data == tile.data
    assert stats.native >= 5 and renders == []
    client.get(f"{BASE}/100,100,256,256/128,/0/default.jpg")
    assert len(renders) == 1  # not a native tile: rendered


def test_regions_a_pixel_off_a_tile_are_rendered(app: Flask, client: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Level-0 tile (1, 0) is 256,0,256,256: a box one pixel off is other pixels, so it is
    rendered under its own key, never served as that tile (nor as its cache entry)."""
    renders: list[object] = []
    real = service_module.render_region
    monkeypatch.setattr(service_module, "render_region",
                        lambda *a, **k: renders.append(a) or real(*a, **k))
    tile = client.get(f"/tiles/{SLIDE}/0/1/0.jpg")
    assert tile.status_code == 200
    for region in ("257,0,256,256", "255,1,256,256", "256,0,257,256", "511,0,512,512"):
        iiif = client.get(f"{BASE}/{region}/256,/0/default.jpg")
        assert iiif.status_code == 200, region
        assert iiif.headers["ETag"] != tile.headers["ETag"], region
        assert iiif.headers.get("X-Tile-Cache-Hit") != "true", region
    assert len(renders) == 4
    assert services(app).tiles.stats.native == 1  # the /tiles request only


def test_a_region_reads_only_the_tiles_it_covers(app: Flask, client: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A 700x500 box at half resolution is read from level 1 (downsample 2): the four
    tiles its 350x250 level-1 box covers, each once, and nothing else."""
    slide = services(app).tiles.slide(SLIDE)
    reads: list[tuple[int, int, int]] = []
    real = type(slide).read_raw_tiles  # every tile read of a render goes through it

    def counting(self: Any, level: int, tiles: list[tuple[int, int]]) -> list[bytes]:
        reads.extend((level, x, y) for x, y in tiles)
        return real(self, level, tiles)

    monkeypatch.setattr(type(slide), "read_raw_tiles", counting)
    response = client.get(f"{BASE}/300,300,700,500/350,/0/default.png")
    assert response.status_code == 200
    assert sorted(reads) == [(1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1)]


# --- auth --------------------------------------------------------------------------------

@pytest.fixture
def auth_client(app_config: Config) -> Any:
    from dataclasses import replace

    return create_app(replace(app_config, auth_enabled=True, auth_secret=SECRET)).test_client()


def _local(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "")


def test_signed_info_json_hands_out_a_path_token(auth_client: Any) -> None:
    assert auth_client.get(f"{BASE}/info.json").status_code == 401
    assert auth_client.get(f"{BASE}/full/64,/0/default.jpg").status_code == 401
    url = signed_url(SECRET, f"{BASE}/info.json", 600)
    info = auth_client.get(url)
    assert info.status_code == 200, info.get_data(as_text=True)
    base = info.get_json()["id"]
    assert "/iiif/3/vt/" in base and base.endswith(f"/{SLIDE}")
    tile = auth_client.get(_local(base) + "/0,0,256,256/256,/0/default.jpg")
    assert tile.status_code == 200 and tile.mimetype == "image/jpeg"
    assert auth_client.get(_local(base) + "/info.json").status_code == 200
    # The token is scoped to its slide, and cannot be altered.
    other = _local(base).replace(f"/{SLIDE}", "/b.svs")
    assert auth_client.get(other + "/full/96,72/0/default.jpg").status_code == 401
    token = _local(base).split("/")[5]
    forged = _local(base).replace(token, "0" * len(token))
    assert auth_client.get(forged + "/full/96,72/0/default.jpg").status_code == 401
    # Shared caches keep the image no longer than the token lives.
    max_age = int(tile.headers["Cache-Control"].rsplit("=", 1)[1])
    assert 0 < max_age <= 600
    # A path token authorises no query parameter.
    assert auth_client.get(_local(base) + "/full/64,/0/default.jpg?x=1").status_code == 400


def test_query_viewer_token_covers_iiif_of_its_slide(auth_client: Any) -> None:
    exp = int(time.time()) + 600
    vt = viewer_token(SECRET, SLIDE, exp)
    query = f"?exp={exp}&vt={vt}"
    assert auth_client.get(f"{BASE}/info.json{query}").status_code == 200
    assert auth_client.get(f"{BASE}/full/96,72/0/default.jpg{query}").status_code == 200
    assert auth_client.get(f"/iiif/3/b.svs/info.json{query}").status_code == 401
    expired = int(time.time()) - 10
    old = f"?exp={expired}&vt={viewer_token(SECRET, SLIDE, expired)}"
    assert auth_client.get(f"{BASE}/info.json{old}").status_code == 401
    path = f"/iiif/3/vt/{expired}/{viewer_token(SECRET, SLIDE, expired)}/{SLIDE}/info.json"
    assert auth_client.get(path).status_code == 401


def _grid(info: dict[str, Any]) -> list[str]:
    """Every ``{region}/{size}`` of the tile grid info.json advertises, as OpenSeadragon and
    Mirador ask for it (IIIF 3.0 implementation notes, section 3): edge tiles clipped, the size
    rounded up, ``full`` for a box that is the whole image."""
    width, height = info["width"], info["height"]
    (tiles,) = info["tiles"]
    tw, th = tiles["width"], tiles["height"]
    paths = []
    for s in tiles["scaleFactors"]:
        for y in range(0, height, th * s):
            for x in range(0, width, tw * s):
                w, h = min(tw * s, width - x), min(th * s, height - y)
                region = "full" if (x, y, w, h) == (0, 0, width, height) else f"{x},{y},{w},{h}"
                paths.append(f"{region}/{-(-w // s)},{-(-h // s)}")
    return paths


def test_viewer_token_reaches_the_advertised_tile_grid_and_sizes(auth_client: Any) -> None:
    info = auth_client.get(signed_url(SECRET, f"{BASE}/info.json", 600)).get_json()
    base = _local(info["id"])
    grid = _grid(info)
    assert len(grid) == 6 * 5 + 3 * 3 + 2 * 2 + 1 and "full/192,144" in grid
    for path in grid:
        response = auth_client.get(f"{base}/{path}/0/default.jpg")
        assert response.status_code == 200, (path, response.get_data(as_text=True))
    sizes = [f"full/{s['width']},{s['height']}" for s in info["sizes"]]
    for path in sizes:
        response = auth_client.get(f"{base}/{path}/0/default.jpg")
        assert response.status_code == 200, (path, response.get_data(as_text=True))
    # Any quality and format of a grid tile; the same URL with the token in the query.
    assert auth_client.get(f"{base}/512,0,512,512/256,256/0/gray.png").status_code == 200
    assert auth_client.get(f"{base}/1280,1024,256,128/256,128/0/bitonal.webp").status_code == 200
    exp = int(time.time()) + 600
    query = f"?exp={exp}&vt={viewer_token(SECRET, SLIDE, exp)}"
    assert auth_client.get(f"{BASE}/1024,0,512,512/256,256/0/default.jpg{query}"
                           ).status_code == 200
    assert auth_client.get(f"{BASE}{query}").status_code == 303  # the base URI redirect


REFUSED_TO_A_TOKEN = [
    "100,100,300,200/max",  # not on the grid
    "257,0,256,256/256,256",  # a pixel off a tile
    "0,0,256,256/128,128",  # a tile at another size
    "256,0,512,512/256,256",  # not a multiple of the scale factor's box
    "full/1000,",  # full, not at one of the sizes
    "full/^2000,",  # upscaled: larger than any size (a viewer token gets no such render)
    "square/max",
    "0,0,256,256/256,256/90",  # rotated
    "0,0,256,256/256,256/!0",  # mirrored
]


@pytest.mark.parametrize("path", REFUSED_TO_A_TOKEN)
def test_viewer_token_is_refused_off_the_grid(auth_client: Any, path: str) -> None:
    """Each other region or size would be one more render under its own cache key: only a
    signed URL may ask for it."""
    rotation = "" if path.count("/") == 2 else "/0"
    image = f"{path}{rotation}/default.jpg"
    exp = int(time.time()) + 600
    token = viewer_token(SECRET, SLIDE, exp)
    for url in (f"/iiif/3/vt/{exp}/{token}/{SLIDE}/{image}",
                f"{BASE}/{image}?exp={exp}&vt={token}"):
        response = auth_client.get(url)
        assert response.status_code == 401, (url, response.status_code)
        body = response.get_json()
        assert body["error"] == "missing_signature" and body["status"] == 401, body
        assert "signed URL" in body["message"], body
    signed = auth_client.get(signed_url(SECRET, f"{BASE}/{image}", 600))
    assert signed.status_code == 200, signed.get_data(as_text=True)


# --- pixels against OpenSlide ------------------------------------------------------------

def _openslide(source: Path, box: tuple[int, int, int, int]) -> Image.Image:
    import openslide

    slide = openslide.OpenSlide(str(source))
    x, y, w, h = box
    return slide.read_region((x, y), 0, (w, h)).convert("RGB")


def test_full_size_region_matches_openslide(real_client: Any, aperio: Path) -> None:
    box = (333, 777, 700, 500)
    ours = pixels(real_client.get(f"/iiif/3/{REAL}/{','.join(map(str, box))}/max/0/default.png"))
    assert psnr(ours, np.asarray(_openslide(aperio, box))) >= 45


@pytest.mark.parametrize("width", [1000, 700, 333])  # from level 0 and from the overview
def test_scaled_region_matches_openslide_downscaled(real_client: Any, aperio: Path,
                                                    width: int) -> None:
    box = (100, 200, 1800, 1400)
    ours = pixels(real_client.get(
        f"/iiif/3/{REAL}/{','.join(map(str, box))}/{width},/0/default.png"))
    reference = _openslide(aperio, box).resize((ours.shape[1], ours.shape[0]),
                                       Image.Resampling.LANCZOS)
    assert psnr(ours, np.asarray(reference)) >= 35


def test_rotation_and_mirroring_are_exact(real_client: Any) -> None:
    base = f"/iiif/3/{REAL}/500,600,300,200/max"
    upright = pixels(real_client.get(f"{base}/0/default.png"))
    for rotation, expected in (("90", np.rot90(upright, -1)), ("180", np.rot90(upright, 2)),
                               ("270", np.rot90(upright, 1)), ("!0", upright[:, ::-1]),
                               ("!90", np.rot90(upright[:, ::-1], -1)),
                               ("!180", upright[::-1, :])):
        got = pixels(real_client.get(f"{base}/{rotation}/default.png"))
        assert np.array_equal(got, expected), rotation
