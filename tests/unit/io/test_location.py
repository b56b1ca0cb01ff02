"""Storage URLs: parsed once into a ``StorageSpec``, the factory's table of backends, and the
server's choice between ``WSI_STORAGE`` and its aliases."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsi_streamer.config import Config
from wsi_streamer.errors import ConfigError
from wsi_streamer.io.factory import BACKENDS, open_storage, open_url_reader, storage_spec
from wsi_streamer.io.http import HttpStorage
from wsi_streamer.io.local import LocalReader, LocalStorage
from wsi_streamer.io.location import StorageSpec, parse_storage_url, split_object_url
from wsi_streamer.io.s3 import S3Storage
from wsi_streamer.io.transfer import ReadDeadline
from wsi_streamer.server.services import storage_of


@pytest.mark.parametrize(("url", "spec"), [
    ("s3://bucket", StorageSpec("s3", "bucket", "")),
    ("s3://bucket/", StorageSpec("s3", "bucket", "")),
    ("s3://bucket/slides/2024/", StorageSpec("s3", "bucket", "slides/2024")),
    ("S3://Bucket/Prefix", StorageSpec("s3", "bucket", "Prefix")),
    ("https://cdn.example.org/wsi", StorageSpec("https", "cdn.example.org", "wsi")),
    ("http://127.0.0.1:8080/a%20b/c", StorageSpec("http", "127.0.0.1:8080", "a b/c")),
    ("https://[::1]:8443/", StorageSpec("https", "[::1]:8443", "")),
    ("file:///data/slides", StorageSpec("file", "", "/data/slides")),
    ("file://localhost/data/my%20slides", StorageSpec("file", "", "/data/my slides")),
    ("/data/slides", StorageSpec("file", "", "/data/slides")),
    ("./slides", StorageSpec("file", "", "./slides")),
    ("slides", StorageSpec("file", "", "slides")),
    ("  gs://bucket/p  ", StorageSpec("gs", "bucket", "p")),  # parsed; no backend (below)
])
def test_good_urls(url: str, spec: StorageSpec) -> None:
    assert parse_storage_url(url) == spec


@pytest.mark.parametrize(("url", "message"), [
    ("", "empty"),
    ("   ", "empty"),
    ("s3://", "no host or bucket"),
    ("https:///path", "no host or bucket"),
    ("s3:bucket/prefix", "expected scheme://host/prefix"),
    ("https://user:secret@host/p", "credentials"),
    ("https://host/p?sig=abc", "query string"),
    ("https://host/p#frag", "fragment"),
    ("https://host:99999/p", "bad port"),
    ("https://host:http/p", "bad port"),
    ("file://otherhost/data", "file:///absolute/path"),
    ("file:relative/path", "expected scheme://host/prefix"),
    ("s3://bucket/a//b", "segments"),
    ("s3://bucket/a/../b", "segments"),
    ("https://host/a/%2E%2E/b", "segments"),
    ("https://host/a%2Fb/c", "encoded '/'"),
    ("https://host/a%00b", "segments"),
    ("ht tp://host/p", "scheme"),
])
def test_bad_urls_are_value_errors_naming_the_problem(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_storage_url(url)
    assert "secret" not in str(caught.value)


def test_unknown_schemes_are_refused_by_the_factory_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"no storage backend for gs:// URLs \(known: file, "
                                         r"http, https, s3\)"):
        storage_spec("gs://bucket/p")
    with pytest.raises(ValueError, match="no storage backend for ftp://"):
        open_storage("ftp://host/p")
    assert set(BACKENDS) == {"s3", "file", "http", "https"}


def test_urls_round_trip_through_the_canonical_form() -> None:
    for url in ("s3://bucket/a/b", "https://host:8443/a%20b/c%2Bd", "file:///data/x%20y",
                "http://h/"):
        spec = parse_storage_url(url)
        assert spec.url == url
        assert parse_storage_url(spec.url) == spec


def test_object_urls_split_into_store_and_id() -> None:
    assert split_object_url("s3://b/k/x.svs") == (StorageSpec("s3", "b", ""), "k/x.svs")
    assert split_object_url("https://h/a%20b/x.svs") == (StorageSpec("https", "h", ""),
                                                          "a b/x.svs")
    assert split_object_url("/data/x.svs") == (StorageSpec("file", "", "/data"), "x.svs")
    assert split_object_url("x.svs") == (StorageSpec("file", "", "."), "x.svs")
    for url in ("s3://b", "s3://b/", "https://h/folder/", "/data/"):
        with pytest.raises(ValueError, match="names a"):
            split_object_url(url)


def test_the_factory_builds_each_backend_without_connecting(tmp_path: Path) -> None:
    s3 = open_storage("s3://bucket/pre/fix/", endpoint_url="http://127.0.0.1:1")
    assert isinstance(s3, S3Storage) and (s3.bucket, s3.prefix) == ("bucket", "pre/fix/")
    http = open_storage("https://cdn.example.org/wsi%20data", max_attempts=1)
    assert isinstance(http, HttpStorage)
    assert http.url_of("a b/c#1.svs") == "https://cdn.example.org/wsi%20data/a%20b/c%231.svs"
    local = open_storage(f"file://{tmp_path}")
    assert isinstance(local, LocalStorage) and local.root == str(tmp_path.resolve())
    with pytest.raises(TypeError, match="endpoint_url"):
        open_storage(str(tmp_path), endpoint_url="x")
    with pytest.raises(TypeError):
        open_storage("https://h/p", region="us-east-1")  # an S3 option: not HTTP's


def test_open_url_reader_reads_local_files_as_given(tmp_path: Path) -> None:
    path = tmp_path / "any.name"
    path.write_bytes(b"abcdef")
    for url in (str(path), f"file://{path}"):
        reader = open_url_reader(url)
        assert isinstance(reader, LocalReader) and reader.read(2, 3) == b"cde"
        reader.close()


# --- the server: WSI_STORAGE and its aliases ------------------------------------------------


def test_wsi_storage_wins_over_the_aliases() -> None:
    config = Config(storage="https://cdn.example.org/wsi", s3_bucket="bucket",
                    slides_dir="/data", threads=8)
    spec, options = storage_of(config)
    assert spec == StorageSpec("https", "cdn.example.org", "wsi")
    assert options == {"max_connections": 16, "deadline": ReadDeadline(base_s=30.0),
                       "redirects": "origin"}


def test_s3_alias_wins_over_the_folder_and_keeps_endpoint_and_region() -> None:
    config = Config(s3_bucket="bucket", s3_prefix="/slides/", s3_endpoint="http://minio:9000",
                    s3_region="eu-west-1", slides_dir="/data", threads=2)
    spec, options = storage_of(config)
    assert spec == StorageSpec("s3", "bucket", "slides")
    assert options == {"endpoint_url": "http://minio:9000", "region": "eu-west-1",
                       "anonymous": False, "max_connections": 10,
                       "deadline": ReadDeadline(base_s=30.0)}


def test_s3_storage_url_takes_the_endpoint_and_region_settings() -> None:
    spec, options = storage_of(Config(storage="s3://b/p", s3_endpoint="http://gcs:1",
                                      s3_region="auto"))
    assert spec == StorageSpec("s3", "b", "p")
    assert options["endpoint_url"] == "http://gcs:1" and options["region"] == "auto"


def test_the_folder_is_the_default() -> None:
    assert storage_of(Config(slides_dir="/data/slides")) == (
        StorageSpec("file", "", "/data/slides"), {})
    assert storage_of(Config(storage="file:///srv/wsi")) == (StorageSpec("file", "", "/srv/wsi"),
                                                            {})


@pytest.mark.parametrize("url", ["ftp://host/p", "https://u:pw@host/p", "s3://"])
def test_a_bad_wsi_storage_is_a_config_error_naming_the_variable(url: str) -> None:
    with pytest.raises(ConfigError, match="^WSI_STORAGE: ") as caught:
        storage_of(Config(storage=url))
    assert "pw" not in str(caught.value)
