"""Parsed slide structures are shared through the tile cache (diskcache, keyed by ETag): a
second process, or a restarted one, opens a known slide with one HEAD and no GET."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wsi_streamer.io.block_cache import BlockStore
from wsi_streamer.io.s3 import S3Storage
from wsi_streamer.slide.registry import SlideRegistry
from wsi_streamer.tile.cache import TileCache


def worker(bucket: Any, cache_dir: Path) -> tuple[S3Storage, SlideRegistry]:
    """What one gunicorn worker builds: its own client, block store and registry."""
    storage = S3Storage(bucket.name, endpoint_url=bucket.endpoint)
    cache = TileCache(str(cache_dir), 64 * 2**20)
    return storage, SlideRegistry(storage, BlockStore(), structures=cache)


def test_second_worker_opens_known_slide_without_gets(s3_bucket: Any, svs4: Any,
                                                      tmp_path: Path) -> None:
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="a.svs", Body=svs4.data)
    first_storage, first = worker(s3_bucket, tmp_path / "tiles")
    first.get("a.svs")
    assert first_storage.stats.requests >= 2  # HEAD + GETs to parse

    second_storage, second = worker(s3_bucket, tmp_path / "tiles")
    slide = second.get("a.svs")
    assert second_storage.stats.requests == 1 and second_storage.stats.bytes == 0  # HEAD only
    assert slide.level_count == 4
    before = second_storage.stats.requests
    tile = slide.read_tile(0, 1, 1)  # arrays + tables in one round trip, then the tile
    assert tile.size == (256, 256)
    assert second_storage.stats.requests - before <= 4


def test_replaced_object_is_parsed_again(s3_bucket: Any, svs4: Any, tmp_path: Path) -> None:
    from tests.fixtures.slides import make_svs

    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="b.svs", Body=svs4.data)
    worker(s3_bucket, tmp_path / "tiles")[1].get("b.svs")
    other = make_svs(512, 384, levels=2, tile=128)
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="b.svs", Body=other.data)
    storage, registry = worker(s3_bucket, tmp_path / "tiles")
    slide = registry.get("b.svs")
    assert slide.dimensions == (512, 384) and storage.stats.requests > 1
