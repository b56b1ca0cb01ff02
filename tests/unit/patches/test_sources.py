"""The pipeline's road to storage is the server's: URLs parsed by ``io/location.py``, stores
made by ``io/factory.py``, one option vocabulary (``open_storage``'s)."""

from __future__ import annotations

import pytest

from wsi_streamer.io.factory import BACKENDS
from wsi_streamer.io.location import StorageSpec, url_scheme
from wsi_streamer.io.s3 import S3Storage
from wsi_streamer.patches.sources import (
    REMOTE_SCHEMES,
    S3Options,
    is_remote,
    remote_object,
    resolve_slide_paths,
    storage_at,
)


@pytest.mark.parametrize(("url", "scheme"), [
    ("s3://b/k.svs", "s3"), ("HTTPS://h/x", "https"), ("memory://slide_1.svs", "memory"),
    ("git+ssh://h/x", "git+ssh"), ("/data/x.svs", None), ("x.svs", None),
    ("./a://b", None), ("1s3://b/k", None), ("://b/k", None), ("C:\\slides\\x.svs", None),
])
def test_url_scheme(url: str, scheme: str | None) -> None:
    assert url_scheme(url) == scheme


def test_remote_schemes_are_the_factory_table_but_local_folders() -> None:
    assert REMOTE_SCHEMES == set(BACKENDS) - {"file"}
    assert is_remote("S3://b/k.svs") and is_remote("https://h/x.svs")
    assert not is_remote("memory://x.svs") and not is_remote("/data/x.svs")


def test_options_are_open_storage_names_with_one_alias_and_the_environment_below() -> None:
    env = {"WSI_S3_ENDPOINT": "http://env:9000", "WSI_S3_REGION": "eu-north-1"}
    assert S3Options.from_mapping(None, env) == S3Options("http://env:9000", "eu-north-1")
    given = S3Options.from_mapping({"endpoint_url": "http://mine:1", "region_name": "ap-south-1",
                                    "anonymous": 1}, env)
    assert given == S3Options("http://mine:1", "ap-south-1", anonymous=True)
    assert S3Options.from_mapping({"region": "", "endpoint_url": None}, {}) == S3Options()
    with pytest.raises(ValueError, match=r"unknown option 'endpoint'.*'region_name'"):
        S3Options.from_mapping({"endpoint": "x"}, {})
    storage = storage_at(StorageSpec("s3", "bucket", "pre"), given)
    assert isinstance(storage, S3Storage) and storage.bucket == "bucket"
    assert storage_at(StorageSpec("https", "h", ""), given) is not None  # S3's stay with S3


def test_object_urls_go_through_the_location_grammar() -> None:
    root, make, slide_id = remote_object("s3://Bucket/a%20b/x.svs", S3Options())
    assert (root, slide_id) == ("s3://bucket/", "a b/x.svs")
    assert isinstance(make(), S3Storage)
    with pytest.raises(ValueError, match="empty, '.' or '..'"):
        resolve_slide_paths("s3://bucket/a//x.svs")
    with pytest.raises(ValueError, match="cannot be listed"):
        resolve_slide_paths("https://h/folder/")
    assert resolve_slide_paths(["s3://b/k.svs", "memory://m.svs"], any_scheme=True) == [
        "s3://b/k.svs", "memory://m.svs"]


def test_slide_extensions_have_one_home() -> None:
    from wsi_streamer.format.openslide_driver import DRIVER as OPENSLIDE
    from wsi_streamer.format.tiff.driver import DRIVER as TIFF
    from wsi_streamer.io.storage import OPENSLIDE_ONLY_EXTENSIONS, SLIDE_EXTENSIONS
    from wsi_streamer.patches.sources import OPENSLIDE_EXTENSIONS, WSI_EXTENSIONS

    assert TIFF.extensions is SLIDE_EXTENSIONS
    assert set(OPENSLIDE.extensions) == set(OPENSLIDE_EXTENSIONS) == WSI_EXTENSIONS
    assert set(OPENSLIDE_EXTENSIONS) == {*SLIDE_EXTENSIONS, *OPENSLIDE_ONLY_EXTENSIONS}
