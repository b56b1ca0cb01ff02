"""Issue 13: associated images over HTTP (off by default: labels can carry patient
identifiers; a full signature when auth is on) and colour management of every image
(``WSI_COLOR_MODE``) with a generated slide carrying a non-sRGB profile."""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image, ImageCms

from tests.fixtures.icc import SWAPPED
from tests.fixtures.images import psnr
from tests.fixtures.slides import make_svs
from wsi_streamer import create_app
from wsi_streamer.config import Config
from wsi_streamer.server.auth import signed_url, viewer_token
from wsi_streamer.slide.reader import open_slide
from wsi_streamer.tile.color import SRGB_PROFILE
from wsi_streamer.tile.encoder import encode_jpeg

CMU = "CMU-1-Small-Region.svs"
PROFILED = "profiled.svs"
PLAIN = "plain.svs"
SECRET = "associated-secret"


@pytest.fixture
def folder(app_config: Config, slide_of_kind: Callable[[str], Path]) -> Path:
    root = Path(app_config.slides_dir)
    make_svs(900, 700, levels=2, tile=256, icc_profile=SWAPPED).write(root, PROFILED)
    make_svs(900, 700, levels=2, tile=256).write(root, PLAIN)
    shutil.copyfile(slide_of_kind("aperio"), root / CMU)  # the real file or its twin
    return root


def client_of(config: Config, **changes: object) -> FlaskClient:
    return create_app(replace(config, **changes)).test_client()  # type: ignore[arg-type]


def decoded(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    image.load()
    return image


# --- associated images --------------------------------------------------------------------

def test_off_by_default_404_and_unlisted(client: FlaskClient, folder: Path) -> None:
    for path in (f"/slides/{PLAIN}/associated", f"/slides/{PLAIN}/associated/label",
                 f"/slides/{PLAIN}/associated/macro.png"):
        reply = client.get(path)
        assert reply.status_code == 404 and reply.get_json()["error"] == "not_found", path
    meta = client.get(f"/slides/{PLAIN}").get_json()
    assert "associated_images" not in meta and meta["icc_profile"] is False


def test_listed_and_served_as_jpeg_and_png(app_config: Config, folder: Path) -> None:
    client = client_of(app_config, associated_images=True)
    listing = client.get(f"/slides/{PLAIN}/associated").get_json()
    assert listing == {"slide_id": PLAIN, "associated": ["thumbnail", "label", "macro"]}
    assert client.get(f"/slides/{PLAIN}").get_json()["associated_images"] == listing["associated"]
    slide = open_slide(str(folder / PLAIN))
    for name in listing["associated"]:
        png = client.get(f"/slides/{PLAIN}/associated/{name}.png")
        assert png.status_code == 200 and png.mimetype == "image/png"
        assert np.array_equal(np.asarray(decoded(png.data).convert("RGB")),
                              np.asarray(slide.associated_image(name)))
        jpeg = client.get(f"/slides/{PLAIN}/associated/{name}")
        assert jpeg.status_code == 200 and jpeg.mimetype == "image/jpeg"
        assert decoded(jpeg.data).size == slide.associated_image(name).size
        again = client.get(f"/slides/{PLAIN}/associated/{name}",
                           headers={"If-None-Match": jpeg.headers["ETag"]})
        assert again.status_code == 304
    assert client.get(f"/slides/{PLAIN}/associated/overview").status_code == 404
    assert client.get(f"/slides/{PLAIN}/associated/..%2F..").status_code in (400, 404)


def test_the_real_label_equals_openslide(app_config: Config, folder: Path) -> None:
    openslide = pytest.importorskip("openslide")
    client = client_of(app_config, associated_images=True)
    reference = openslide.OpenSlide(str(folder / CMU))
    for name in ("label", "macro", "thumbnail"):
        reply = client.get(f"/slides/{CMU}/associated/{name}.png")
        assert reply.status_code == 200
        ours = np.asarray(decoded(reply.data).convert("RGB"))
        assert np.array_equal(ours, np.asarray(reference.associated_images[name].convert("RGB")))


def test_auth_needs_a_full_signature_not_a_viewer_token(app_config: Config,
                                                         folder: Path) -> None:
    client = client_of(app_config, associated_images=True, auth_enabled=True,
                       auth_secret=SECRET)
    path = f"/slides/{PLAIN}/associated/label"
    assert client.get(path).status_code == 401
    exp = int(time.time()) + 300
    token = viewer_token(SECRET, PLAIN, exp)
    assert client.get(f"{path}?exp={exp}&vt={token}").status_code == 401
    assert client.get(f"/slides/{PLAIN}?exp={exp}&vt={token}").status_code == 200
    assert client.get(signed_url(SECRET, path, 300)).status_code == 200


# --- colour ---------------------------------------------------------------------------------

def tile_of(config: Config, mode: str, slide: str = PROFILED,
            path: str = "/tiles/{id}/0/1/1.jpg?quality=95") -> tuple[Image.Image, str]:
    reply = client_of(config, color_mode=mode).get(path.format(id=slide))
    assert reply.status_code == 200, reply.data[:200]
    return decoded(reply.data), reply.headers["ETag"]


def test_metadata_says_whether_there_is_a_profile(client: FlaskClient, folder: Path) -> None:
    assert client.get(f"/slides/{PROFILED}").get_json()["icc_profile"] is True
    assert client.get(f"/slides/{PLAIN}").get_json()["icc_profile"] is False


def test_embed_carries_the_slide_profile_with_the_pixels_untouched(app_config: Config,
                                                                    folder: Path) -> None:
    ignored, ignored_etag = tile_of(app_config, "ignore")
    embedded, embedded_etag = tile_of(app_config, "embed")
    assert "icc_profile" not in ignored.info
    assert embedded.info["icc_profile"] == SWAPPED
    assert np.array_equal(np.asarray(embedded), np.asarray(ignored))
    assert embedded_etag != ignored_etag  # other bytes, other key


def test_srgb_converts_the_pixels_through_the_profile(app_config: Config,
                                                       folder: Path) -> None:
    ignored, _ = tile_of(app_config, "ignore")
    converted, _ = tile_of(app_config, "srgb")
    assert converted.info["icc_profile"] == SRGB_PROFILE
    stored_pixels = open_slide(str(folder / PROFILED)).read_tile(0, 1, 1)
    expected = ImageCms.profileToProfile(
        stored_pixels, ImageCms.ImageCmsProfile(io.BytesIO(SWAPPED)),
        ImageCms.ImageCmsProfile(io.BytesIO(SRGB_PROFILE)),
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
    assert expected is not None
    ours, theirs = np.asarray(converted.convert("RGB")), np.asarray(expected)
    # Exactly LittleCMS's conversion of the stored pixels, through our encoder at quality 95.
    assert np.array_equal(ours, np.asarray(decoded(encode_jpeg(expected, 95)).convert("RGB")))
    assert psnr(ours, theirs) >= 35
    assert psnr(ours, np.asarray(ignored.convert("RGB"))) < 30  # and a visible one
    # red and green swapped: the mean red of the stored pixels is the converted mean green
    stored = np.asarray(ignored.convert("RGB")).reshape(-1, 3).mean(axis=0)
    shown = ours.reshape(-1, 3).mean(axis=0)
    assert abs(shown[1] - stored[0]) < abs(shown[1] - stored[1])


def test_every_image_kind_is_colour_managed(app_config: Config, folder: Path) -> None:
    for path in ("/slides/{id}/thumbnail", "/slides/{id}/dzi_files/8/0_0.jpg",
                 "/iiif/3/{id}/full/200,/0/default.png", "/iiif/3/{id}/0,0,300,300/max/90/"
                 "color.jpg"):
        image, _ = tile_of(app_config, "srgb", path=path)
        assert image.info.get("icc_profile") == SRGB_PROFILE, path
    gray, _ = tile_of(app_config, "embed", path="/iiif/3/{id}/full/200,/0/gray.jpg")
    assert "icc_profile" not in gray.info  # an RGB profile does not describe gray pixels


def test_a_slide_without_profile_is_the_same_in_every_mode(app_config: Config,
                                                           folder: Path) -> None:
    results = {mode: tile_of(app_config, mode, slide=PLAIN) for mode in ("embed", "srgb",
                                                                          "ignore")}
    assert len({etag for _, etag in results.values()}) == 1
    assert all("icc_profile" not in image.info for image, _ in results.values())
