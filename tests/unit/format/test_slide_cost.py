"""``TiffSlide.cost_bytes``: the memory a registry charges an open slide for, which grows as
levels' offset arrays are loaded (16 bytes per tile as uint64, plus the JPEGTables)."""

from __future__ import annotations

from tests.fixtures.slides import make_svs
from wsi_streamer.format.tiff.driver import parse_structure
from wsi_streamer.format.tiff.slide import TiffSlide
from wsi_streamer.io.range_reader import BytesReader


def test_cost_grows_with_the_levels_loaded() -> None:
    data = make_svs(1024, 768, levels=3, tile=128, associated=False).data
    slide = TiffSlide(BytesReader(data), parse_structure(BytesReader(data)))
    assert slide.cost_bytes == 0
    slide.read_tile(0, 0, 0)
    tables = slide.level_tables()
    level0 = slide.level(0)
    assert slide.cost_bytes == 16 * level0.tile_count + len(tables[0][2] or b"")
    slide.read_tile(2, 0, 0)
    assert slide.cost_bytes == sum(o.nbytes + c.nbytes + len(t or b"")
                                   for o, c, t in slide.level_tables().values())
    assert slide.cost_bytes > 16 * level0.tile_count
