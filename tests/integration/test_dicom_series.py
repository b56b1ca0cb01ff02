"""DICOM WSI series (``tests/fixtures/dicom.py``) as slides: from a loopback S3 prefix with
counted work (one LIST and one header read per instance to open, one GET per tile, nothing
but the LIST from the host cache), listed as one slide each, served by the Flask app's
endpoints from a folder, and streamed by the patch pipeline."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import wsi_streamer.io.s3 as s3mod
from tests.conftest import S3Bucket
from wsi_streamer import create_app
from wsi_streamer.config import Config
from wsi_streamer.io.block_cache import BlockStore
from wsi_streamer.io.s3 import S3Storage
from wsi_streamer.patches import PatchPipeline, RandomSampler
from wsi_streamer.slide import open_slide
from wsi_streamer.slide.hostcache import HostCache
from wsi_streamer.slide.registry import SlideRegistry

pytest.importorskip("pydicom", reason="pydicom is not installed (the dicom extra)")
SERIES = "CMU-1-Small-Region"


@pytest.fixture
def gets(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every ranged GetObject our S3 reader sends: (key, range spec)."""
    seen: list[tuple[str, str]] = []
    real = s3mod._get_range

    def counting(client: Any, bucket: str, key: str, *args: Any, **kw: Any) -> Any:
        seen.append((key, args[2]))
        return real(client, bucket, key, *args, **kw)

    monkeypatch.setattr(s3mod, "_get_range", counting)
    return seen


def _upload(bucket: S3Bucket, folder: Path, prefix: str, **extra: Any) -> list[str]:
    keys = []
    for path in sorted(folder.glob("*.dcm")):
        keys.append(f"{prefix}/{path.name}")
        bucket.client.put_object(Bucket=bucket.name, Key=keys[-1], Body=path.read_bytes(),
                                 **extra)
    return keys


def test_s3_open_is_one_list_and_one_header_read_per_instance(dicom_series, s3_bucket,
                                                              gets, tmp_path):
    folder = dicom_series("jpeg")
    keys = _upload(s3_bucket, folder, f"idc/{SERIES}")
    storage = S3Storage(s3_bucket.name, endpoint_url=s3_bucket.endpoint)
    cache = HostCache(str(tmp_path / "host"), 1 << 26)
    slide = SlideRegistry(storage, BlockStore(), structures=cache).get(f"idc/{SERIES}")
    assert slide.format_name == "DICOM" and slide.level_count == 5
    assert sorted(key for key, _ in gets) == keys  # one head read per instance
    assert storage.stats.requests == 1 + len(keys)  # and one LIST, no HeadObject

    gets.clear()
    before = storage.stats.snapshot()["bytes"]
    tile = slide.read_tile(0, 3, 4)
    frame = slide.read_raw_tiles(0, [(3, 4)])[0]  # from the block store now
    assert len(gets) == 1
    assert storage.stats.snapshot()["bytes"] - before <= 1.2 * len(frame)
    local = open_slide(str(folder))
    assert np.array_equal(np.asarray(tile), np.asarray(local.read_tile(0, 3, 4)))

    gets.clear()
    requests = storage.stats.requests
    again = SlideRegistry(storage, BlockStore(), structures=cache).get(f"idc/{SERIES}")
    assert again.identity == slide.identity
    assert gets == [] and storage.stats.requests == requests + 1  # the LIST alone


def test_the_header_reads_are_one_round_trip(dicom_series, s3_bucket, monkeypatch):
    """Every instance's header read is in flight at once (one round trip after the LIST):
    each GET waits at a barrier for all the others, which serial reads would never pass."""
    import threading

    keys = _upload(s3_bucket, dicom_series("jpeg"), "one")
    barrier = threading.Barrier(len(keys), timeout=30)
    real = s3mod._get_range

    def together(*args: Any, **kw: Any) -> Any:
        barrier.wait()
        return real(*args, **kw)

    monkeypatch.setattr(s3mod, "_get_range", together)
    storage = S3Storage(s3_bucket.name, endpoint_url=s3_bucket.endpoint)
    slide = SlideRegistry(storage, BlockStore()).get("one")
    assert slide.level_count == 5 and storage.stats.requests == 1 + len(keys)


def test_a_replaced_instance_is_new_content(dicom_series, s3_bucket):
    folder = dicom_series("jpeg")
    keys = _upload(s3_bucket, folder, "a")
    storage = S3Storage(s3_bucket.name, endpoint_url=s3_bucket.endpoint)
    first = storage.open("a").identity
    assert storage.open("a").identity == first
    s3_bucket.client.copy_object(Bucket=s3_bucket.name, Key=keys[0], MetadataDirective="REPLACE",
                                 CopySource={"Bucket": s3_bucket.name, "Key": keys[-1]})
    assert storage.open("a").identity != first


def test_listing_shows_each_series_once(dicom_series, s3_bucket, tmp_path):
    folder = dicom_series("jpeg")
    _upload(s3_bucket, folder, "idc/s1")
    _upload(s3_bucket, folder, "idc/s2")
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="idc/a.svs", Body=b"x")
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="idc/notes.txt", Body=b"x")
    storage = S3Storage(s3_bucket.name, endpoint_url=s3_bucket.endpoint)
    assert storage.list_slides().slides == ("idc/a.svs", "idc/s1", "idc/s2")
    page = storage.list_slides(limit=2)
    assert page.slides == ("idc/a.svs", "idc/s1") and page.next_cursor == "idc/s1"
    assert storage.list_slides(cursor=page.next_cursor).slides == ("idc/s2",)

    local = tmp_path / "slides"
    shutil.copytree(folder, local / "cases" / "s1")
    (local / "b.svs").write_bytes(b"x")
    app = create_app(Config(slides_dir=str(local), tile_cache_dir=str(tmp_path / "tc")))
    assert app.test_client().get("/slides").get_json()["slides"] == ["b.svs", "cases/s1"]


@pytest.fixture
def served(dicom_series, tmp_path) -> Any:
    slides = tmp_path / "slides"
    shutil.copytree(dicom_series("jp2k"), slides / SERIES)
    config = Config(slides_dir=str(slides), tile_cache_dir=str(tmp_path / "tc"),
                    associated_images=True)
    return create_app(config).test_client(), open_slide(str(slides / SERIES))


def test_every_endpoint_serves_a_series_folder(served):
    client, slide = served
    meta = client.get(f"/slides/{SERIES}").get_json()
    assert meta["format"] == "DICOM" and meta["level_count"] == 5
    assert (meta["width"], meta["height"]) == (2220, 2967)
    assert meta["mpp_x"] == pytest.approx(0.499)
    reply = client.get(f"/tiles/{SERIES}/0/3/4.jpg?quality=100")
    assert reply.status_code == 200 and reply.mimetype == "image/jpeg"
    ours = np.asarray(Image.open(io.BytesIO(reply.data)).convert("RGB"), float)
    truth = np.asarray(slide.read_tile(0, 3, 4), float)
    assert 10 * np.log10(255 ** 2 / np.mean((ours - truth) ** 2)) >= 40
    thumb = client.get(f"/slides/{SERIES}/thumbnail?max_size=256")
    assert thumb.status_code == 200
    assert max(Image.open(io.BytesIO(thumb.data)).size) == 256
    assert b"TileSize" in client.get(f"/slides/{SERIES}/dzi").data
    assert client.get(f"/slides/{SERIES}/dzi_files/12/2_3.jpg").status_code == 200
    assert client.get(f"/iiif/3/{SERIES}/info.json").get_json()["width"] == 2220
    region = client.get(f"/iiif/3/{SERIES}/720,960,240,240/max/0/default.png")
    assert region.status_code == 200
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(region.data)).convert("RGB")),
                          np.asarray(slide.read_tile(0, 3, 4)))
    assert client.get(f"/view/{SERIES}").status_code == 200
    label = client.get(f"/slides/{SERIES}/associated/label.png")
    assert label.status_code == 200
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(label.data)).convert("RGB")),
                          np.asarray(slide.associated_image("label")))


def test_a_ct_in_the_folder_is_refused_with_the_reason(dicom_series, tmp_path):
    import pydicom

    slides = tmp_path / "slides"
    shutil.copytree(dicom_series("jpeg"), slides / "ct")
    path = min((slides / "ct").glob("*.dcm"), key=lambda p: p.stat().st_size)  # a label
    dataset = pydicom.dcmread(path)
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    dataset.save_as(path, enforce_file_format=True)
    client = create_app(Config(slides_dir=str(slides),
                               tile_cache_dir=str(tmp_path / "tc"))).test_client()
    reply = client.get("/slides/ct")
    assert reply.status_code == 415
    assert "CT Image Storage" in reply.get_json()["message"]


def test_the_patch_pipeline_streams_series_folders(dicom_series, shared_slides, tmp_path):
    openslide = pytest.importorskip("openslide", reason="OpenSlide (the oracle) is missing")
    root = tmp_path / "train"
    shutil.copytree(dicom_series("jpeg"), root / "a" / SERIES)
    shutil.copytree(dicom_series("jp2k"), root / "b" / SERIES)
    kwargs: dict[str, Any] = {"sampler": RandomSampler(224), "seed": 3,
                              "thumbnail_size": (256, 256), "patches_per_slide": 4,
                              "pool_size": 2, "cache_dir": str(tmp_path / "c")}
    results = list(PatchPipeline(str(root), **kwargs))
    assert sorted(Path(r.coordinate.slide_path).parent.name for r in results) == ["a"] * 4 + [
        "b"] * 4
    oracle = openslide.OpenSlide(str(shared_slides / f"{SERIES}.svs"))
    for result in results:
        c = result.coordinate
        assert c.level == 0 and result.image.shape == (224, 224, 3)
        truth = np.asarray(oracle.read_region((c.x, c.y), 0, (224, 224)).convert("RGB"))
        if Path(c.slide_path).parent.name == "a":  # level 0: the SVS's own JPEG tiles
            assert np.array_equal(result.image, truth)
        else:  # re-encoded in JPEG 2000
            error = np.mean((result.image.astype(float) - truth) ** 2)
            assert 10 * np.log10(255 ** 2 / max(error, 1e-9)) >= 45


def test_pipeline_sources_take_prefixes_of_series_and_anonymous_access(dicom_series,
                                                                       s3_bucket, tmp_path):
    from wsi_streamer.patches.sources import S3Options, resolve_slide_paths

    folder = dicom_series("jpeg")
    for name in ("s1", "s2"):  # a public bucket's objects
        _upload(s3_bucket, folder, f"idc/{name}", ACL="public-read")
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="idc/s2-notes.txt", Body=b"x")
    base = f"s3://{s3_bucket.name}/idc"
    options = S3Options.from_mapping({"endpoint_url": s3_bucket.endpoint})
    assert resolve_slide_paths(f"{base}/", options=options) == [f"{base}/s1", f"{base}/s2"]
    assert resolve_slide_paths([f"{base}/s1/", f"{base}/s2"], options=options) == [
        f"{base}/s1", f"{base}/s2"]
    anonymous = S3Options.from_mapping(None, {"WSI_S3_ENDPOINT": s3_bucket.endpoint,
                                              "WSI_S3_ANONYMOUS": "true"})
    assert anonymous.anonymous
    results = list(PatchPipeline(f"{base}/", storage_options={
        "endpoint_url": s3_bucket.endpoint, "anonymous": True}, sampler=RandomSampler(224),
        seed=1, thumbnail_size=(256, 256), patches_per_slide=2, pool_size=2,
        cache_dir=str(tmp_path / "c")))
    assert sorted(r.coordinate.slide_path for r in results) == [f"{base}/s1"] * 2 + [
        f"{base}/s2"] * 2


def test_a_focal_plane_and_optical_path_selected_everywhere(dicom_series, s3_bucket,
                                                            tmp_path):
    """The one vocabulary, ``<series>@z=<index>,path=<identifier>``: the server's slide id
    (metadata lists the planes and paths), the registry over S3 (still one LIST), the
    pipeline's sources (a folder and an S3 prefix)."""
    from tests.fixtures.dicom import make_planes_series, plane_tile

    slides = tmp_path / "slides"
    folder, tiles = make_planes_series(dicom_series("jpeg"), slides / "planes", "TILED_SPARSE")
    chosen = "planes@z=1,path=7"
    client = create_app(Config(slides_dir=str(slides),
                               tile_cache_dir=str(tmp_path / "tc"))).test_client()
    listed = client.get("/slides/planes").get_json()
    assert (listed["focal_planes"], listed["optical_paths"]) == ([0.0, 2.5], ["0", "7"])
    assert listed["selection"] == "z=0,path=0"
    assert client.get(f"/slides/{chosen}").get_json()["selection"] == "z=1,path=7"
    region = client.get(f"/iiif/3/{chosen}/0,0,240,240/max/0/default.png")
    assert region.status_code == 200
    truth = plane_tile(tiles[0], 1, 1)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(region.data)).convert("RGB")), truth)
    assert client.get("/slides/planes@z=9").status_code == 415

    _upload(s3_bucket, folder, "idc/planes")
    storage = S3Storage(s3_bucket.name, endpoint_url=s3_bucket.endpoint)
    registry = SlideRegistry(storage, BlockStore())
    slide = registry.get(f"idc/{chosen}")
    assert storage.stats.requests == 1 + len(list(folder.glob("*.dcm")))
    assert np.array_equal(np.asarray(slide.read_tile(0, 0, 0)), truth)
    assert slide.identity != registry.get("idc/planes").identity

    kwargs: dict[str, Any] = {"sampler": RandomSampler(224), "seed": 2,
                              "thumbnail_size": (128, 128), "patches_per_slide": 2,
                              "pool_size": 1, "cache_dir": str(tmp_path / "c")}
    base = f"s3://{s3_bucket.name}/idc/{chosen}"
    for source, options in ((f"{folder}@z=1,path=7", None),
                            (base, {"endpoint_url": s3_bucket.endpoint})):
        results = list(PatchPipeline([source], storage_options=options, **kwargs))
        assert len(results) == 2 and {r.coordinate.slide_path for r in results} == {source}
        local = open_slide(f"{folder}@z=1,path=7")
        for result in results:
            c = result.coordinate
            canvas = np.full((480, 480, 3), 255, np.uint8)
            for index in range(4):
                x, y = index % 2, index // 2
                tile = np.asarray(local.read_tile(0, x, y))
                canvas[y * 240 : y * 240 + tile.shape[0], x * 240 : x * 240 + tile.shape[1]] = tile
            assert np.array_equal(result.image, canvas[c.y : c.y + 224, c.x : c.x + 224])
