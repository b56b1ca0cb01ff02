"""Our engine measured in-process: ``S3Storage`` + ``SlideRegistry`` (the server's open path: a
slide never seen is opened without ``HeadObject``) with a fresh ``BlockStore``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .common import Result, S3Counters, measure_slide


def run_engine(endpoint: str, bucket: str, key: str, first: tuple[int, int],
               cold: list[tuple[int, int]], parallel: list[tuple[int, int]]) -> Result:
    """Open, first tile, sequential cold and warm tiles, then ``parallel`` distinct cold tiles
    from 32 threads (``tput32``). The boto3 client is created before timing."""
    from wsi_streamer.io.block_cache import BlockStore
    from wsi_streamer.io.s3 import S3Storage
    from wsi_streamer.slide.registry import SlideRegistry

    storage = S3Storage(bucket, endpoint_url=endpoint)
    assert storage.client is not None
    store = BlockStore()
    counters = S3Counters(endpoint)
    result = Result(system="engine", slide=key)

    def read(slide: Any, x: int, y: int) -> Any:
        return slide.read_tile(0, x, y)

    registry = SlideRegistry(storage, store)
    slide = measure_slide(result, counters, lambda: registry.get(key), read, first, cold)
    if parallel:
        run: dict[str, float] = {}
        with counters.measure(run), ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda t: read(slide, *t), parallel))
        result.tput32 = len(parallel) / run["s"]
        result.extra["par_requests_per_tile"] = run["requests"] / len(parallel)
        result.extra["par_bytes_per_tile"] = run["bytes"] / len(parallel)
    result.extra["levels"] = len(slide.levels)
    return result
