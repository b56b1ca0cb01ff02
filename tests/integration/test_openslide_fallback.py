"""Issue 12: the OpenSlide driver behind ``WSI_OPENSLIDE_FALLBACK`` (local folders only).

The real NDPI of ``../shared/slides`` is refused natively (415 naming NDPI) and served through
the fallback on every endpoint, tiles and regions equal to OpenSlide reading the same box; the
patch pipeline's ``OpenSlideBackend`` is the same driver. Over S3 the fallback is a config
error: OpenSlide cannot read ranges."""

from __future__ import annotations

import io
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image

from tests.conftest import S3Bucket
from tests.fixtures.images import psnr
from tests.fixtures.oracle import openslide_reference
from wsi_streamer import create_app
from wsi_streamer.config import Config
from wsi_streamer.errors import UnsupportedFormat
from wsi_streamer.format import drivers
from wsi_streamer.format.openslide_driver import TILE
from wsi_streamer.slide.reader import open_slide
from wsi_streamer.slide.region import read_region
from wsi_streamer.tile.encoder import encode_jpeg

openslide = pytest.importorskip("openslide")

NDPI = "hamamatsu-test3-DAPI.ndpi"
DEFLATE = "openslide-boxes-deflate.tiff"
JPEG_PSNR = 35.0  # and what the JPEG encoding at quality 95 keeps of noisy DAPI pixels


@pytest.fixture
def folder(app_config: Config, shared_slides: Path) -> Path:
    root = Path(app_config.slides_dir)
    for name in (NDPI, DEFLATE, "CMU-1-Small-Region.svs"):
        if not (shared_slides / name).exists():
            pytest.skip(f"../shared/slides/{name} is not here")
        shutil.copyfile(shared_slides / name, root / name)
    return root


def fallback_client(app_config: Config) -> FlaskClient:
    return create_app(replace(app_config, openslide_fallback=True)).test_client()


def decoded(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def test_ndpi_is_415_naming_ndpi_without_the_fallback(client: FlaskClient,
                                                      folder: Path) -> None:
    reply = client.get(f"/slides/{NDPI}")
    assert reply.status_code == 415
    assert "NDPI" in reply.get_json()["message"]
    assert client.get(f"/slides/{DEFLATE}").status_code == 415


def test_every_endpoint_answers_through_the_fallback(app_config: Config, folder: Path) -> None:
    client = fallback_client(app_config)
    meta = client.get(f"/slides/{NDPI}")
    assert meta.status_code == 200, meta.get_json()
    body = meta.get_json()
    reference = openslide.OpenSlide(str(folder / NDPI))
    assert (body["width"], body["height"]) == reference.dimensions
    assert body["level_count"] == reference.level_count
    assert body["format"] == "OpenSlide (hamamatsu)" and body["vendor"] == "hamamatsu"
    assert body["mpp_x"] == pytest.approx(float(reference.properties["openslide.mpp-x"]))
    assert body["levels"][0]["tile_width"] == TILE
    listed = client.get("/slides").get_json()
    assert NDPI in str(listed)
    for path in (f"/tiles/{NDPI}/0/0/0.jpg", f"/slides/{NDPI}/dzi",
                 f"/slides/{NDPI}/dzi_files/0/0_0.jpg", f"/slides/{NDPI}/thumbnail",
                 f"/slides/{NDPI}/dzi_files/12/1_1.jpg", f"/view/{NDPI}"):
        reply = client.get(path)
        assert reply.status_code == 200, (path, reply.data[:200])
    # The native slide in the same folder is still read natively.
    native = client.get("/slides/CMU-1-Small-Region.svs").get_json()
    assert native["format"] == "Aperio SVS"


@pytest.mark.parametrize("level,tx,ty", [(0, 0, 0), (0, 3, 5), (0, 7, 9), (2, 1, 1), (6, 0, 0)])
def test_tiles_equal_openslide(app_config: Config, folder: Path, level: int, tx: int,
                               ty: int) -> None:
    client = fallback_client(app_config)
    reply = client.get(f"/tiles/{NDPI}/{level}/{tx}/{ty}.jpg?quality=95")
    assert reply.status_code == 200
    ours = decoded(reply.data)
    reference = openslide_reference(folder / NDPI)
    width = min(TILE, client.get(f"/slides/{NDPI}").get_json()["levels"][level]["width"]
                - tx * TILE)
    height = min(TILE, client.get(f"/slides/{NDPI}").get_json()["levels"][level]["height"]
                 - ty * TILE)
    assert ours.shape == (height, width, 3)
    expected = reference(level, tx * TILE, ty * TILE, width, height)
    # Exactly OpenSlide's pixels, through the same encoder at the same quality.
    assert np.array_equal(ours, decoded(encode_jpeg(Image.fromarray(expected), 95)))
    assert psnr(ours, expected) >= JPEG_PSNR


def test_regions_are_exactly_openslide_pixels(folder: Path) -> None:
    """Below the JPEG encoder: a region across tile seams is OpenSlide's read, bit for bit."""
    slide = open_slide(str(folder / NDPI), openslide=True)
    reference = openslide_reference(folder / NDPI)
    for level, x, y, w, h in [(0, 500, 700, 700, 300), (1, 0, 0, 1984, 40), (3, 100, 90, 396, 500)]:
        ours = np.asarray(read_region(slide, level, x=x, y=y, width=w, height=h))
        assert np.array_equal(ours, reference(level, x, y, w, h)), (level, x, y)
    slide.close()


def test_the_native_refusal_stays_the_error_without_the_fallback(folder: Path) -> None:
    with pytest.raises(UnsupportedFormat, match="NDPI"):
        open_slide(str(folder / NDPI))
    not_a_slide = folder / "notes.tif"
    not_a_slide.write_bytes(b"plain text, no slide")
    with pytest.raises(UnsupportedFormat):
        open_slide(str(not_a_slide), openslide=True)


def test_over_s3_the_fallback_stays_native_with_a_warning(
        app_config: Config, s3_bucket: S3Bucket, shared_slides: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """OpenSlide cannot read ranges: over S3 a refused slide keeps its 415 and reason."""
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=NDPI,
                                Body=(shared_slides / NDPI).read_bytes())
    with caplog.at_level(logging.WARNING, "wsi_streamer.server.services"):
        app = create_app(replace(app_config, openslide_fallback=True, s3_bucket=s3_bucket.name,
                                 s3_endpoint=s3_bucket.endpoint))
    assert any("local folders only" in r.getMessage() for r in caplog.records)
    reply = app.test_client().get(f"/slides/{NDPI}")
    assert reply.status_code == 415 and "NDPI" in reply.get_json()["message"]


def test_structures_round_trip_through_the_shared_cache(folder: Path) -> None:
    parsed = drivers.parse(open_slide(str(folder / NDPI), openslide=True).reader,  # type: ignore[attr-defined]
                           drivers.with_openslide())
    again = drivers.decode(drivers.encode(parsed), drivers.with_openslide())
    assert again == parsed and again.info.associated == ("macro",)
    # A host without the fallback treats the entry as a miss, not a crash.
    from wsi_streamer.records import CacheEntryError
    with pytest.raises(CacheEntryError, match="not enabled"):
        drivers.decode(drivers.encode(parsed))


def test_patch_backend_is_the_same_driver(folder: Path) -> None:
    from wsi_streamer.patches.backends import OpenSlideBackend

    slide = OpenSlideBackend().open_slide(str(folder / NDPI))
    reference = openslide_reference(folder / NDPI)
    region = slide.read_region(x=1000, y=1200, level=1, width=300, height=200)
    assert np.array_equal(region, reference(1, 500, 600, 300, 200))
    assert slide.properties.vendor == "hamamatsu"
    slide.close()
