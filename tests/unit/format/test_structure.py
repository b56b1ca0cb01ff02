"""parse_structure on generated slides: levels, associated images, properties, refusals with
reasons, and lazy loading of tile-offset arrays."""

from __future__ import annotations

import pytest

from tests.fixtures.images import abbreviated_jpeg_tiles, tissue
from tests.fixtures.slides import make_generic, make_simple, make_svs
from tests.fixtures.tiffpack import Field, pack_tiff, payload_offset, tiled_fields
from wsi_streamer.errors import UnsupportedFormat
from wsi_streamer.format import spans
from wsi_streamer.format.tiff.chain import IFD_WINDOW
from wsi_streamer.format.tiff.driver import parse_structure
from wsi_streamer.format.tiff.ifd import read_fields
from wsi_streamer.io.range_reader import BytesReader
from wsi_streamer.slide.reader import open_slide


@pytest.fixture(scope="module")
def svs():  # type: ignore[no-untyped-def]
    return make_svs(600, 440, levels=3, tile=128)


def test_svs_levels_exclude_thumbnail_label_macro(svs) -> None:  # type: ignore[no-untyped-def]
    st = parse_structure(BytesReader(svs.data))
    assert st.format_name == "Aperio SVS" and st.vendor == "aperio"
    assert [(lv.width, lv.height) for lv in st.levels] == [(600, 440), (300, 220), (150, 110)]
    assert [lv.ifd_index for lv in st.levels] == [0, 2, 3]  # IFD 1 thumbnail, 4-5 label/macro
    assert [lv.downsample for lv in st.levels] == [1.0, 2.0, 4.0]
    assert [(lv.tiles_x, lv.tiles_y) for lv in st.levels] == [(5, 4), (3, 2), (2, 1)]
    assert all(lv.compression == 7 and lv.photometric == 2 for lv in st.levels)
    reader = BytesReader(svs.data)
    tables = [read_fields(reader, [lv.jpeg_tables])[0] for lv in st.levels if lv.jpeg_tables]
    assert all(t and t.startswith(b"\xff\xd8") for t in tables)
    assert len(set(tables)) == 3  # a different quality, so different tables, per level
    assert st.mpp_x == st.mpp_y == pytest.approx(0.499) and st.magnification == 20
    props = dict(st.properties)
    assert props["aperio.AppMag"] == "20" and props["tiff.ImageDescription"].startswith("Aperio")


@pytest.mark.parametrize(("codec", "compression"), [("jp2k-ycbcr", 33003), ("jp2k-rgb", 33005)])
def test_svs_jpeg2000_variants(codec: str, compression: int) -> None:
    st = parse_structure(BytesReader(make_svs(300, 200, levels=2, tile=128, codec=codec,
                                              associated=False).data))
    assert [lv.compression for lv in st.levels] == [compression] * 2
    assert all(lv.jpeg_tables is None for lv in st.levels)


@pytest.mark.parametrize(("byteorder", "bigtiff"), [("<", False), (">", False), ("<", True),
                                                    (">", True)])
def test_generic_pyramid_any_flavour(byteorder: str, bigtiff: bool) -> None:
    st = parse_structure(BytesReader(make_generic(byteorder=byteorder, bigtiff=bigtiff).data))
    assert st.format_name == "Generic Pyramidal TIFF"
    assert st.tiff.byteorder == byteorder and st.tiff.bigtiff == bigtiff
    assert [(lv.width, lv.height) for lv in st.levels] == [(700, 500), (350, 250), (175, 125)]
    assert all(lv.photometric == 6 and lv.jpeg_tables for lv in st.levels)
    assert st.mpp_x == pytest.approx(0.25) and st.mpp_y == pytest.approx(0.25)


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"tile": None}, "stripped"),
    ({"tile": None, "byteorder": ">"}, "stripped"),
    ({"compression": "lzw"}, "LZW"),
    ({"compression": "zlib"}, "Deflate"),
    ({"compression": None}, "uncompressed"),
])
def test_unsupported_layouts_name_the_reason(kwargs: dict, reason: str) -> None:
    data = make_simple(**kwargs).data
    with pytest.raises(UnsupportedFormat, match=reason):
        parse_structure(BytesReader(data))


def test_planar_and_16_bit_are_refused() -> None:
    tables, (tile,) = abbreviated_jpeg_tiles([tissue(16, 16)], 80, rgb=True)
    base = tiled_fields(16, 16, 16, [payload_offset()], [len(tile)], tables=tables)
    planar = [f if f.tag != 284 else Field(284, 3, [2]) for f in base]
    sixteen = [f if f.tag != 258 else Field(258, 3, [16, 16, 16]) for f in base]
    with pytest.raises(UnsupportedFormat, match="PlanarConfiguration"):
        parse_structure(BytesReader(pack_tiff([planar], payload=tile)))
    with pytest.raises(UnsupportedFormat, match="16-bit"):
        parse_structure(BytesReader(pack_tiff([sixteen], payload=tile)))


def test_ndpi_is_refused() -> None:
    tables, (tile,) = abbreviated_jpeg_tiles([tissue(16, 16)], 80, rgb=True)
    fields = tiled_fields(16, 16, 16, [8], [len(tile)], tables=tables,
                          extra=[Field(65420, 4, [1])])
    with pytest.raises(UnsupportedFormat, match="NDPI"):
        parse_structure(BytesReader(pack_tiff([fields], payload=tile)))


def _many_tiles_slide() -> tuple[bytes, int]:
    """One level of 2048x2048 in 16x16 tiles: 16384 tiles, 64 KiB per offset array (far past
    the IFD window); every tile points at the same stored JPEG."""
    tables, (tile,) = abbreviated_jpeg_tiles([tissue(16, 16)], 80, rgb=True)
    n = 128 * 128
    fields = tiled_fields(2048, 2048, 16, [payload_offset()] * n, [len(tile)] * n,
                          tables=tables, extra=[Field(270, 2, b"Aperio Image Library\0")])
    return pack_tiff([fields], payload=tile), len(tile)


def test_open_does_not_read_tile_offset_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    # First reads shrunk to 16 bytes each, so that they do not hold the whole small file.
    monkeypatch.setattr(spans, "OPEN_HEAD", 16)
    monkeypatch.setattr(spans, "OPEN_TAIL", 16)
    data, tile_len = _many_tiles_slide()
    reader = BytesReader(data)
    st = parse_structure(reader)
    opened = reader.stats.snapshot()
    entry = st.levels[0].tile_offsets
    assert entry.count == 16384 and entry.nbytes == 65536
    assert opened["bytes"] <= 32 + IFD_WINDOW + 512, opened  # head, tail, IFD, small values
    assert opened["requests"] <= 6, opened  # head, tail, IFD, 3 out-of-line eager values

    slide = open_slide(reader, structure=st)  # private block cache over the counting reader
    before = reader.stats.snapshot()
    slide.read_raw_tile(0, 77, 99)
    first = reader.stats.requests - before["requests"]
    slide.read_raw_tile(0, 5, 3)
    assert reader.stats.requests - before["requests"] == first  # arrays and tile now cached
    assert first <= 3  # both arrays (possibly one coalesced run) plus the tile's block
