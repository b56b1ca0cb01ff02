"""One TiffSlide shared by many threads: cold offset arrays and tiles are fetched once."""

from __future__ import annotations

import numpy as np

from tests.fixtures.fakes import CountingReader
from tests.fixtures.slides import make_svs
from tests.fixtures.threads import run_together, values
from wsi_streamer.format.tiff.driver import parse_structure
from wsi_streamer.format.tiff.slide import TiffSlide
from wsi_streamer.io.block_cache import BlockCache
from wsi_streamer.io.range_reader import BytesReader

BS = 4096


def test_cold_slide_many_threads_fetch_each_block_once() -> None:
    data = make_svs(1024, 768, levels=2, tile=128, associated=False).data
    structure = parse_structure(BytesReader(data))  # parsed elsewhere: the cache stays cold
    reference = TiffSlide(BytesReader(data), structure)
    inner = CountingReader(data, delay=0.01)
    slide = TiffSlide(BlockCache(inner, block_size=BS, max_bytes=1 << 26), structure)
    tiles = [(0, 1, 1), (0, 2, 1), (0, 1, 2), (0, 7, 5), (1, 0, 0), (1, 3, 2)]
    jobs = [tiles[i % len(tiles)] for i in range(32)]
    results = values(run_together(lambda job: np.asarray(slide.read_tile(*job)), jobs))
    for job, result in zip(jobs, results, strict=True):
        assert np.array_equal(result, np.asarray(reference.read_tile(*job))), job
    # Tile data is read as exact ranges (not whole blocks), each tile exactly once.
    for tile in tiles:
        assert inner.calls.count(slide.tile_range(*tile)) == 1, tile
    # two arrays per level, plus distinct tiles: never one request per thread
    assert len(inner.calls) <= 2 * 2 + len(tiles)
