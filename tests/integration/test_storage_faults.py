"""S3 faults over real HTTP: a closed port, and a fault-injecting proxy in front of moto
(connection resets, 500/503, delays, truncated bodies). Failures are clean JSON errors after
retries, nothing from a failed read is cached, and service recovers without a restart."""

from __future__ import annotations

import functools
import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import S3Bucket
from tests.integration.conftest_faults import Gunicorn, assert_json_error
from tests.integration.fault_proxy import FaultProxy
from tests.servers import free_port
from wsi_streamer import create_app
from wsi_streamer.config import Config
from wsi_streamer.errors import StorageConnectionError
from wsi_streamer.format.drivers import plan_open_reads
from wsi_streamer.io.range_reader import BytesReader
from wsi_streamer.io.s3 import S3Storage
from wsi_streamer.slide.reader import open_slide
from wsi_streamer.tile.encoder import encode_jpeg

KEY = "cases/s.svs"
QUALITY = 80


@pytest.fixture(scope="module")
def slide_bytes() -> bytes:
    """A 3-level SVS of about 5 MB, so that many tiles lie outside the open's first reads.
    Painted by ``synthetic_tissue`` plus grain (under a second; ``tissue`` takes 40 s here)."""
    import numpy as np

    from tests.fixtures.images import downsample2
    from tests.fixtures.slides import make_svs
    from wsi_streamer.format.tiff.writer import synthetic_tissue

    base = np.asarray(synthetic_tissue(2560, 1920)).astype(np.int16)
    grain = np.random.default_rng(3).integers(-12, 13, base.shape, dtype=np.int16)
    level0 = np.clip(base + grain, 0, 255).astype(np.uint8)
    level1 = downsample2(level0)
    return make_svs(images=[level0, level1, downsample2(level1)], tile=256,
                    associated=False).data


@pytest.fixture(scope="module")
def cold_tiles(slide_bytes: bytes) -> list[tuple[int, int]]:
    """Level-0 tiles whose bytes are not fetched when the slide is opened (so reading one
    needs a fresh GET), with 8 KiB of margin for 4 KiB blocks."""
    slide = open_slide(BytesReader(slide_bytes))
    warm = plan_open_reads(len(slide_bytes))
    info = slide.level(0)
    cold = []
    for y in range(info.tiles_y):
        for x in range(info.tiles_x):
            off, length = slide.tile_range(0, x, y)
            if all(off + length + 8192 < o or off > o + n + 8192 for o, n in warm):
                cold.append((x, y))
    assert len(cold) >= 8, "the generated slide is too small for these tests"
    return cold


def reference(slide_bytes: bytes, x: int, y: int) -> bytes:
    return encode_jpeg(open_slide(BytesReader(slide_bytes)).read_tile(0, x, y), QUALITY)


@pytest.fixture
def bucket(s3_bucket: S3Bucket, slide_bytes: bytes) -> S3Bucket:
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=KEY, Body=slide_bytes)
    return s3_bucket


@pytest.fixture
def proxy(bucket: S3Bucket) -> Iterator[FaultProxy]:
    fault = FaultProxy(bucket.endpoint)
    yield fault
    fault.close()


@pytest.fixture
def app_config(bucket: S3Bucket, proxy: FaultProxy, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Config:
    """The shared ``app``/``client`` read the bucket through the proxy, with one retry: the
    patch is in place before ``app`` is built from this (botocore's backoff before a second
    and third retry of a 503 took ~10 s)."""
    monkeypatch.setattr("wsi_streamer.io.factory.S3Storage",  # the s3:// builder
                        functools.partial(S3Storage, max_attempts=2))
    return Config(s3_bucket=bucket.name, s3_endpoint=proxy.url, block_size=4096,
                  tile_cache_dir=str(tmp_path / "tc"))


def tile_url(x: int, y: int) -> str:
    return f"/tiles/{KEY}/0/{x}/{y}.jpg?quality={QUALITY}"


def test_endpoint_down(bucket: S3Bucket, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A closed port: 502 for every storage-backed route, after a bounded number of HTTP
    sends (counted at urllib3's ``HTTPConnectionPool.urlopen``, which boto3 and the lean data
    plane call once per attempt: botocore with its own retries off, the lean data plane per
    urllib3 retry; and at ``CurlGet._perform``, once per attempt of the curl data plane).
    The default client (``max_attempts=3``) sends at most 4 times per S3 call here
    (3 seen), and a request makes at most two calls (the open's head and tail reads);
    backoff-heavy retries (the legacy mode's 5 attempts, or retrying forever) would show as
    more. This app is built
    by hand: the module's ``app_config`` points at the proxy and lowers the retries."""
    from urllib3.connectionpool import HTTPConnectionPool

    sends: list[str] = []

    def counting(real: Any) -> Any:
        def send(self: Any, *args: Any, **kwargs: Any) -> Any:
            sends.append(repr(args[:2]))
            return real(self, *args, **kwargs)
        return send

    monkeypatch.setattr(HTTPConnectionPool, "urlopen", counting(HTTPConnectionPool.urlopen))
    if importlib.util.find_spec("pycurl") is not None:
        from wsi_streamer.io.s3_curl import CurlGet

        monkeypatch.setattr(CurlGet, "_perform", counting(CurlGet._perform))
    app = create_app(Config(s3_bucket=bucket.name, s3_endpoint=f"http://127.0.0.1:{free_port()}",
                            tile_cache_dir=str(tmp_path / "tc")))
    client = app.test_client()
    for url in (f"/slides/{KEY}", tile_url(0, 0), "/slides", f"/slides/{KEY}/dzi"):
        before = len(sends)
        response = client.get(url)
        assert 1 <= len(sends) - before <= 2 * 4, (url, sends[before:])
        payload = assert_json_error(response.status_code, response.data, 502,
                                    "connection_error")
        assert "127.0.0.1" not in payload["message"]
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("mode, status, code", [
    ("reset", 502, "connection_error"), ("500", 500, "storage_error"),
    ("503", 500, "storage_error"), ("truncate", 500, "storage_error"),
])
def test_failed_reads_are_retried_reported_and_not_cached(
        client: Any, proxy: FaultProxy, slide_bytes: bytes, cold_tiles: list[tuple[int, int]],
        mode: str, status: int, code: str) -> None:
    assert client.get(f"/slides/{KEY}").status_code == 200
    x, y = cold_tiles[len(cold_tiles) // 2]
    proxy.mode = mode
    response = client.get(tile_url(x, y))
    assert_json_error(response.status_code, response.data, status, code)
    # Retried, and boundedly (counted, not timed): at most two reads of max_attempts=2 each
    # (3 seen); botocore's default retries, with their backoff, would show as more.
    assert 2 <= proxy.count(mode) <= 2 * 2, proxy.log
    proxy.mode = "pass"
    response = client.get(tile_url(x, y))
    assert response.status_code == 200
    assert response.data == reference(slide_bytes, x, y), "wrong pixels after a failed read"
    assert response.headers["X-Tile-Cache-Hit"] == "false"


def test_failed_open_is_not_cached(client: Any, proxy: FaultProxy) -> None:
    proxy.mode = "500"
    assert_json_error(*_status_body(client.get(f"/slides/{KEY}")), 500, "storage_error")
    proxy.mode = "reset"
    assert_json_error(*_status_body(client.get(f"/slides/{KEY}/dzi")), 502, "connection_error")
    proxy.mode = "pass"
    response = client.get(f"/slides/{KEY}")
    assert response.status_code == 200 and response.json["width"] == 2560


def _status_body(response: Any) -> tuple[int, bytes]:
    return response.status_code, response.data


def test_slow_storage_is_not_a_failure(client: Any, proxy: FaultProxy, slide_bytes: bytes,
                                       cold_tiles: list[tuple[int, int]]) -> None:
    proxy.delay_s = 0.3
    proxy.mode = "delay"
    x, y = cold_tiles[0]
    response = client.get(tile_url(x, y))
    assert response.status_code == 200 and response.data == reference(slide_bytes, x, y)


def test_read_timeout_is_a_connection_error(bucket: S3Bucket, proxy: FaultProxy) -> None:
    # The answer would come after 20 s: failing at all proves the 0.3 s timeout worked, and the
    # bound below is far from both (a loaded 2-core CI host must not trip it).
    proxy.delay_s = 20.0
    proxy.mode = "delay"
    storage = S3Storage(bucket.name, endpoint_url=proxy.url, read_timeout=0.3,
                        max_attempts=1)
    started = time.monotonic()
    with pytest.raises(StorageConnectionError):
        storage.open(KEY)
    assert time.monotonic() - started < 10


def test_gunicorn_recovers_without_restart(bucket: S3Bucket, proxy: FaultProxy,
                                           slide_bytes: bytes, tmp_path: Path,
                                           cold_tiles: list[tuple[int, int]]) -> None:
    env = {"WSI_S3_BUCKET": bucket.name, "WSI_S3_ENDPOINT": proxy.url,
           "WSI_BLOCK_SIZE": "4KB", "WSI_TILE_CACHE_DIR": str(tmp_path / "tc")}
    with Gunicorn(env, tmp_path / "gunicorn.log") as server:
        pid = server.get("/metrics")[2].decode().split('pid="', 1)[1].split('"', 1)[0]
        first, *rest = cold_tiles[:5]
        assert server.get(tile_url(*first))[0] == 200
        proxy.mode = "reset"  # storage goes away mid-run
        for x, y in rest:
            resets = proxy.count("reset")
            status, _, body = server.get(tile_url(x, y))  # its 10 s timeout bounds a hang
            assert_json_error(status, body, 502, "connection_error")
            # At most two reads of the default max_attempts=3 each (4 seen).
            assert 1 <= proxy.count("reset") - resets <= 2 * 3, proxy.log
        assert server.get("/health")[0] == 200
        proxy.mode = "pass"  # and comes back
        for x, y in rest:
            status, headers, body = server.get(tile_url(x, y))
            assert status == 200 and body == reference(slide_bytes, x, y)
        metrics = server.get("/metrics")[2].decode()
        assert f'pid="{pid}"' in metrics, "the worker was replaced"
