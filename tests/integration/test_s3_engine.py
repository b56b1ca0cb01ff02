"""The engine over S3 (moto ThreadedMotoServer on loopback, boto3 over HTTP): request counts
for opening and first tiles, singleflight of a cold tile, error translation.

Requests are counted twice: by ``S3Storage.stats`` (HEAD counts as a request of 0 bytes) and
by ``HttpCounter``, which sees every HTTP request actually sent (retries too)."""

from __future__ import annotations

import importlib.util
import socket
import threading
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from botocore.awsrequest import AWSHTTPConnectionPool
from urllib3.connectionpool import HTTPConnectionPool

from tests.conftest import S3Bucket
from tests.fixtures.images import psnr
from tests.fixtures.threads import run_together, values
from wsi_streamer.errors import (
    ObjectChanged,
    SlideNotFound,
    StorageConnectionError,
    StorageError,
    UnsupportedFormat,
)
from wsi_streamer.format.drivers import OPEN_HEAD, OPEN_TAIL
from wsi_streamer.format.tiff.slide import TiffSlide
from wsi_streamer.io.block_cache import BlockStore
from wsi_streamer.io.range_reader import BytesReader
from wsi_streamer.io.s3 import S3Storage
from wsi_streamer.slide.reader import open_slide
from wsi_streamer.slide.registry import SlideRegistry

KEY = "cases/svs4.svs"


class HttpCounter:
    """Every HTTP request sent to S3, retries included: botocore's ``before-send`` hook for
    the boto3 control plane, and urllib3's per-attempt ``_make_request`` on plain urllib3
    pools (not botocore's) for the lean data plane (``io/s3_lean.py``) and each libcurl
    exchange (``CurlGet._perform``) for the curl data plane, when ``monkeypatch`` is given."""

    def __init__(self, client: Any, monkeypatch: Any = None) -> None:
        self.sent: list[str] = []
        self.ranges: list[str] = []  # Range header of each GET
        self._lock = threading.Lock()
        client.meta.events.register("before-send.s3", self._on_send)
        if monkeypatch is not None:
            real = HTTPConnectionPool._make_request
            endpoint = urlsplit(client.meta.endpoint_url)

            def counting(pool: Any, conn: Any, method: str, url: str, *args: Any,
                         **kwargs: Any) -> Any:
                if (not isinstance(pool, AWSHTTPConnectionPool)
                        and (pool.host, pool.port) == (endpoint.hostname, endpoint.port)):
                    self._record(method, (kwargs.get("headers") or {}).get("Range", ""))
                return real(pool, conn, method, url, *args, **kwargs)
            monkeypatch.setattr(HTTPConnectionPool, "_make_request", counting)
            if importlib.util.find_spec("pycurl") is not None:
                from wsi_streamer.io.s3_curl import CurlGet

                perform = CurlGet._perform

                def counting_curl(get: Any, handle: Any, url: str, fields: list[str],
                                  *args: Any) -> Any:
                    self._record("GET", next((f[len("Range: "):] for f in fields
                                              if f.startswith("Range: ")), ""))
                    return perform(get, handle, url, fields, *args)
                monkeypatch.setattr(CurlGet, "_perform", counting_curl)

    def _on_send(self, request: Any, **_: Any) -> None:
        rng = request.headers.get("Range", b"")
        self._record(request.method, rng.decode() if isinstance(rng, bytes) else str(rng))

    def _record(self, method: str, rng: str) -> None:
        with self._lock:
            self.sent.append(method)
            if method == "GET":
                self.ranges.append(rng)

    def __len__(self) -> int:
        with self._lock:
            return len(self.sent)


@pytest.fixture
def s3_svs(s3_bucket: S3Bucket, svs4: Any, monkeypatch: Any
           ) -> tuple[S3Storage, HttpCounter, Any]:
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=KEY, Body=svs4.data)
    storage = S3Storage(s3_bucket.name, endpoint_url=s3_bucket.endpoint)
    return storage, HttpCounter(storage.client, monkeypatch), svs4


def test_open_and_first_tile_request_count(s3_svs) -> None:  # type: ignore[no-untyped-def]
    storage, http, svs4 = s3_svs
    registry = SlideRegistry(storage, BlockStore())
    slide = registry.get(KEY)
    opened = storage.stats.requests
    tile = slide.read_tile(0, 0, 0)
    total = storage.stats.requests
    assert slide.level_count == 4 and svs4.ifd_count == 7  # + thumbnail, label, macro
    budget = 1 + svs4.ifd_count + 2 + 1  # head/tail, one per IFD, TileOffsets/ByteCounts, tile
    message = (f"S3 requests: open {opened} (head + tail), first tile {total - opened}, "
               f"total {total} (budget {budget}); bytes {storage.stats.bytes} of "
               f"{len(svs4.data)}; HTTP requests sent {len(http)}")
    print("\n" + message)
    assert total <= budget, message
    assert len(http) == total, message  # no hidden retries or extra calls
    # A slide never seen: no HEAD; size and ETag come from the two concurrent first reads.
    assert http.sent[:2] == ["GET", "GET"] and opened == 2, message
    assert sorted(http.ranges[:2]) == ["bytes=-1048576", "bytes=0-262143"]

    local = open_slide(BytesReader(svs4.data)).read_tile(0, 0, 0)
    assert psnr(np.asarray(tile), np.asarray(local)) == float("inf")

    again = storage.stats.requests
    registry.get(KEY).read_tile(0, 0, 0)
    assert storage.stats.requests == again, "a warm tile must take 0 requests"

    # a tile of level 0 outside the open-time head/tail reads: one GET, then none
    x, y = _tile_outside_first_reads(slide, len(svs4.data))
    slide.read_raw_tile(0, x, y)
    assert storage.stats.requests == again + 1
    slide.read_raw_tile(0, x, y)
    assert storage.stats.requests == again + 1


def _tile_outside_first_reads(slide: Any, size: int) -> tuple[int, int]:
    info = slide.level(0)
    return next((x, y) for y in range(info.tiles_y) for x in range(info.tiles_x)
                if OPEN_HEAD <= slide.tile_range(0, x, y)[0]
                and sum(slide.tile_range(0, x, y)) <= size - OPEN_TAIL)


def test_every_level_first_tile_within_budget(s3_svs) -> None:  # type: ignore
    storage, http, svs4 = s3_svs
    slide = open_slide(storage.open(KEY), blocks=BlockStore(block_size=64 * 1024))
    for level in range(slide.level_count):
        before = storage.stats.requests
        slide.read_raw_tile(level, 0, 0)
        assert storage.stats.requests - before <= 3, level  # two arrays + the tile at most
    print(f"\nS3 requests for open + first tile of 4 levels (64 KiB blocks): "
          f"{storage.stats.requests}, HTTP {len(http)}")


def test_32_threads_one_cold_tile_one_request_per_block(s3_svs) -> None:  # type: ignore
    storage, http, svs4 = s3_svs
    store = BlockStore(block_size=16 * 1024)
    slide = open_slide(storage.open(KEY), blocks=store)
    assert isinstance(slide, TiffSlide)
    slide.read_raw_tile(0, 0, 0)  # offset arrays of level 0 now loaded
    x, y = _tile_outside_first_reads(slide, len(svs4.data))
    offset, length = slide.tile_range(0, x, y)
    first, last = offset // store.block_size, (offset + length - 1) // store.block_size
    ident = slide.identity
    cold = [b for b in range(first, last + 1) if (ident, b) not in store._blocks]
    assert cold, "the tile must not be cached yet"
    before, before_http, misses = storage.stats.requests, len(http), store.stats.misses
    results = values(run_together(lambda _: slide.read_raw_tile(0, x, y), range(32)))
    assert len(set(results)) == 1 and len(results[0]) == length
    assert store.stats.misses - misses == 1  # one miss for the whole tile range ...
    assert storage.stats.requests - before == 1  # ... fetched in ONE exact ranged GET
    assert len(http) - before_http == 1
    assert http.ranges[-1] == f"bytes={offset}-{offset + length - 1}", "exactly the tile"
    print(f"\n32 threads, cold tile spanning {len(cold)} block(s): 1 S3 request of "
          f"{length} bytes")


@pytest.mark.parametrize("body", [b"", b"II*\0", b"not a tiff at all" * 10])
def test_probed_open_of_tiny_or_empty_objects(s3_bucket: S3Bucket, body: bytes) -> None:
    """Ranges past the end of small objects (and the 416 of an empty one) end in a clear
    refusal, not a storage error."""
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="tiny.svs", Body=body)
    storage = S3Storage(s3_bucket.name, endpoint_url=s3_bucket.endpoint)
    with pytest.raises(UnsupportedFormat):
        SlideRegistry(storage, BlockStore()).get("tiny.svs")


def test_missing_key_is_slide_not_found(s3_bucket: S3Bucket) -> None:
    storage = S3Storage(s3_bucket.name, endpoint_url=s3_bucket.endpoint)
    with pytest.raises(SlideNotFound):
        storage.open("nope/missing.svs")
    with pytest.raises(SlideNotFound):
        SlideRegistry(storage, BlockStore()).get("missing.svs")


def test_missing_bucket_is_a_storage_error(moto_server: str) -> None:
    storage = S3Storage("no-such-bucket", endpoint_url=moto_server, max_attempts=1)
    with pytest.raises(StorageError):
        storage.check()


def test_endpoint_down_is_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    storage = S3Storage("bucket", endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1,
                        connect_timeout=1, read_timeout=1)
    with pytest.raises(StorageConnectionError):
        storage.open("slide.svs")
    with pytest.raises(StorageConnectionError):
        storage.check()


def test_replaced_object_fails_loudly_not_mixed(s3_svs, s3_bucket: S3Bucket) -> None:  # type: ignore
    storage, _, svs4 = s3_svs
    reader = storage.open(KEY)
    assert reader.read(0, 4) == svs4.data[:4]
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=KEY, Body=b"II*\0" + b"x" * 100)
    with pytest.raises(ObjectChanged):  # 412 on the IfMatch read: typed, so it can reopen
        reader.read(0, 4)
    assert storage.open(KEY).identity != reader.identity


def test_a_replaced_object_is_reopened_and_read_at_once(s3_svs, s3_bucket: S3Bucket  # type: ignore
                                                        ) -> None:
    """Through the registry: the first read after the replacement reopens the slide and
    returns the new content (no minute of errors until revalidation)."""
    from tests.fixtures.slides import make_svs
    from wsi_streamer.io.block_cache import BlockStore
    from wsi_streamer.slide.registry import SlideRegistry

    storage, _, svs4 = s3_svs
    registry = SlideRegistry(storage, BlockStore(max_bytes=1), revalidate_s=3600)
    assert registry.get(KEY).dimensions == (1536, 1152)
    other = make_svs(1000, 800, levels=2, tile=256, seed=9)
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=KEY, Body=other.data)
    size = registry.using(KEY, lambda slide: slide.read_tile(0, 3, 0).size)
    assert size == (1000 - 768, 256)
    assert registry.get(KEY).dimensions == (1000, 800)


def test_reads_past_end_make_no_request(s3_svs) -> None:  # type: ignore[no-untyped-def]
    from wsi_streamer.errors import ReadPastEnd

    storage, http, svs4 = s3_svs
    reader = storage.open(KEY)
    sent = len(http)
    with pytest.raises(ReadPastEnd):
        reader.read(len(svs4.data) - 2, 4)
    assert len(http) == sent


def test_listing(s3_bucket: S3Bucket) -> None:
    for key in ("p/a.svs", "p/b.tif", "p/sub/c.tiff", "p/readme.txt", "q/d.svs"):
        s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=key, Body=b"x")
    storage = S3Storage(s3_bucket.name, prefix="p", endpoint_url=s3_bucket.endpoint)
    assert storage.list_slides().slides == ("a.svs", "b.tif", "sub/c.tiff")
    page = storage.list_slides(limit=2)
    assert page.slides == ("a.svs", "b.tif") and page.next_cursor == "b.tif"
    assert storage.list_slides(cursor="b.tif").slides == ("sub/c.tiff",)
    assert storage.list_slides(search="C.TIFF").slides == ("sub/c.tiff",)
    assert storage.check() == f"s3://{s3_bucket.name}/p/"
