"""JPEG tiles: JPEGTables merging, Aperio RGB-coded components vs YCbCr, decode errors."""

from __future__ import annotations

import functools
import io

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.images import abbreviated_jpeg_tiles, psnr, segments, tissue
from wsi_streamer.errors import DecodeError
from wsi_streamer.format.jpeg import (
    ADOBE_RGB,
    SOI,
    complete_stream,
    decode_jpeg,
    header_segments,
    jpeg_size,
)


@functools.cache
def tile_pixels() -> np.ndarray:
    """The 64x64 RGB tissue every test encodes (read-only: it is shared)."""
    pixels = tissue(64, 64, seed=11)
    pixels.setflags(write=False)
    return pixels


def pil_decode(stream: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(stream)).convert("RGB"))


def test_rgb_tiles_need_the_colour_space_forced() -> None:
    tables, (tile,) = abbreviated_jpeg_tiles([tile_pixels()], 90, rgb=True)
    merged = complete_stream(tile, tables, rgb=True)
    assert merged.startswith(SOI + ADOBE_RGB)
    good = np.asarray(decode_jpeg(merged, (64, 64)))
    assert psnr(good, tile_pixels()) > 35
    # the same tables merged without forcing RGB: libjpeg guesses YCbCr -> wrong colours
    wrong = pil_decode(complete_stream(tile, tables, rgb=False))
    assert psnr(wrong, tile_pixels()) < 20


def test_ycbcr_tiles_get_no_adobe_marker() -> None:
    tables, (tile,) = abbreviated_jpeg_tiles([tile_pixels()], 85, rgb=False)
    merged = complete_stream(tile, tables, rgb=False)
    assert ADOBE_RGB not in merged
    assert merged.startswith(SOI) and merged[2:].startswith(tables[2:-2])
    assert psnr(np.asarray(decode_jpeg(merged, (64, 64))), tile_pixels()) > 30


def test_tables_of_another_level_give_other_pixels() -> None:
    t90, (tile,) = abbreviated_jpeg_tiles([tile_pixels()], 90, rgb=True)
    t30, _ = abbreviated_jpeg_tiles([tile_pixels()], 30, rgb=True)
    assert t90 != t30
    right = np.asarray(decode_jpeg(complete_stream(tile, t90, rgb=True), (64, 64)))
    wrong = np.asarray(decode_jpeg(complete_stream(tile, t30, rgb=True), (64, 64)))
    assert psnr(right, tile_pixels()) > psnr(wrong, tile_pixels()) + 5


def test_complete_stream_passes_through_and_replaces_jfif_when_rgb() -> None:
    import imagecodecs

    full = bytes(imagecodecs.jpeg8_encode(tile_pixels(), level=90))  # JFIF, YCbCr, own tables
    assert complete_stream(full, b"\xff\xd8\xff\xd9", rgb=False) == full
    forced = complete_stream(full, None, rgb=True)
    markers = [m for m, _ in segments(forced)[0]]
    assert forced.startswith(SOI + ADOBE_RGB) and 0xE0 not in markers
    assert markers.count(0xEE) == 1


def test_rgb_decoding_matches_an_explicit_rgb_decoder() -> None:
    import imagecodecs

    tables, (tile,) = abbreviated_jpeg_tiles([tile_pixels()], 80, rgb=True)
    ours = np.asarray(decode_jpeg(complete_stream(tile, tables, rgb=True), (64, 64)))
    merged_plain = SOI + tables[2:-2] + tile[2:]
    reference = imagecodecs.jpeg8_decode(merged_plain, colorspace="RGB", outcolorspace="RGB")
    assert np.array_equal(ours, reference)


def test_jpeg_size_and_segments() -> None:
    tables, (tile,) = abbreviated_jpeg_tiles([tissue(48, 80)], 80, rgb=False)
    stream = complete_stream(tile, tables, rgb=False)
    assert jpeg_size(stream) == (80, 48)
    assert header_segments(stream)[-1][0] == 0xDA


@pytest.mark.parametrize("stream", [b"", b"not a jpeg", SOI, SOI + b"\xff\xdb\x00\x43\x00",
                                    SOI + b"\x00\x00\x00\x00\x00"])
def test_malformed_streams_are_decode_errors(stream: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_jpeg(stream, (64, 64))


def test_bad_tables_are_decode_errors() -> None:
    _, (tile,) = abbreviated_jpeg_tiles([tile_pixels()], 80, rgb=True)
    with pytest.raises(DecodeError):
        complete_stream(tile, b"garbage", rgb=True)


def test_oversized_or_truncated_tiles_are_decode_errors() -> None:
    tables, (tile,) = abbreviated_jpeg_tiles([tile_pixels()], 80, rgb=True)
    stream = complete_stream(tile, tables, rgb=True)
    with pytest.raises(DecodeError, match="expected at most"):
        decode_jpeg(stream, (32, 32))
    with pytest.raises(DecodeError):
        decode_jpeg(stream[: len(stream) // 3], (64, 64))


def test_reduce_to_uses_dct_scaling() -> None:
    tables, (tile,) = abbreviated_jpeg_tiles([tile_pixels()], 80, rgb=False)
    image = decode_jpeg(complete_stream(tile, tables, rgb=False), (64, 64), reduce_to=(16, 16))
    assert image.size == (16, 16) and image.mode == "RGB"


ADOBE_YCBCR = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x01"  # transform 1: YCbCr
JFIF = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"


@pytest.mark.parametrize("markers", [ADOBE_YCBCR, JFIF + ADOBE_YCBCR, ADOBE_YCBCR + JFIF],
                         ids=["adobe-ycbcr", "jfif-then-adobe", "adobe-then-jfif"])
def test_rgb_tile_with_its_own_ycbcr_markers_is_forced_to_rgb(markers: bytes) -> None:
    """An RGB-coded abbreviated tile that claims YCbCr (Adobe transform 1, JFIF): merged with
    the tables, the stream is exactly SOI, the forced Adobe segment, the tables and the tile's
    own segments and scan, with no byte added or lost, and it decodes as RGB."""
    tables, (plain,) = abbreviated_jpeg_tiles([tile_pixels()], 90, rgb=True)
    tile = SOI + markers + plain[2:]
    merged = complete_stream(tile, tables, rgb=True)
    assert merged == SOI + ADOBE_RGB + tables[2:-2] + plain[2:]
    head, _ = segments(merged)
    app14 = [seg for marker, seg in head if marker == 0xEE]
    assert app14 == [ADOBE_RGB]  # exactly one, the forced one (transform 0)
    assert 0xE0 not in [marker for marker, _ in head]
    unforced = [marker for marker, _, _ in header_segments(SOI + tables[2:-2] + plain[2:])]
    assert [marker for marker, _ in head] == [0xEE, *unforced]  # DQT, DHT, SOF, SOS
    assert psnr(np.asarray(decode_jpeg(merged, (64, 64))), tile_pixels()) > 35


def test_rgb_slide_tile_with_adobe_ycbcr_marker_decodes_as_rgb() -> None:
    """The same through a slide: Photometric RGB wins over the tile's own marker."""
    from tests.fixtures.tiffpack import pack_tiff, payload_offset, tiled_fields
    from wsi_streamer.io.range_reader import BytesReader
    from wsi_streamer.slide.reader import open_slide

    tables, (plain,) = abbreviated_jpeg_tiles([tile_pixels()], 90, rgb=True)
    tile = SOI + ADOBE_YCBCR + plain[2:]
    fields = tiled_fields(64, 64, 64, [payload_offset()], [len(tile)], tables=tables,
                          photometric=2)
    slide = open_slide(BytesReader(pack_tiff([fields], payload=tile)))
    assert psnr(np.asarray(slide.read_tile(0, 0, 0)), tile_pixels()) > 35
