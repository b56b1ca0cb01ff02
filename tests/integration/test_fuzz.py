"""Fuzzing the TIFF parser and tile path with mutated real and generated slides: byte and word
overwrites in the first 64 KiB and around every IFD, and truncations. Whatever the bytes, only
``WsiError`` subclasses may escape ``open_slide`` and tile reads, each case in bounded time.

Derandomized (the same examples on every run) and bounded, so it is a CI test, not a campaign;
raise ``WSI_FUZZ_EXAMPLES`` locally for a longer search."""

from __future__ import annotations

import functools
import io
import os
import struct
import time
from pathlib import Path

import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import SHARED_SLIDES
from tests.fixtures.slide_kinds import missing_reason
from tests.fixtures.slides import make_generic, make_svs
from wsi_streamer.errors import WsiError
from wsi_streamer.io.range_reader import BytesReader
from wsi_streamer.slide.reader import open_slide
from wsi_streamer.slide.region import read_region

EXAMPLES = int(os.environ.get("WSI_FUZZ_EXAMPLES", "200"))
SHARED = ("CMU-1-Small-Region.svs", "openslide-small.svs", "openslide-boxes-deflate.tiff",
          "ome-4D-series-bigendian-stripped.ome.tiff")
# A hang detector, not a speed test: a case takes milliseconds, and a loaded 2-core CI host
# must not trip it (hypothesis' own per-example deadline is off for the same reason). The
# work a case may do is bounded by wsi_streamer.limits, which tests/unit/format counts.
CASE_LIMIT_S = 60.0
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _ifd_offsets(data: bytes) -> list[int]:
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        return [page.offset for page in tif.pages]


# The inputs, by name (known without building or reading anything); bytes come from ``base``.
GENERATED = ("gen.svs", "gen-big-endian.tif", "gen-bigtiff.tif", "gen-jp2k.svs")
NAMES = GENERATED + SHARED


@functools.cache
def base(name: str) -> bytes:
    """The unmutated input ``name``: generated on first use, or read from the shared slides
    (``pytest.skip`` when that file is absent)."""
    if name == "gen.svs":
        return make_svs(520, 390, levels=3, tile=128).data
    if name == "gen-big-endian.tif":
        return make_generic(300, 200, levels=2, tile=64, byteorder=">").data
    if name == "gen-bigtiff.tif":
        return make_generic(300, 200, levels=2, tile=64, bigtiff=True).data
    if name == "gen-jp2k.svs":
        return make_svs(260, 200, levels=2, tile=128, codec="jp2k-ycbcr",
                        associated=False).data
    path = Path(SHARED_SLIDES) / name
    if not path.is_file():
        pytest.skip(missing_reason(SHARED_SLIDES, name))
    return path.read_bytes()


def available() -> list[str]:
    """The names whose bytes exist here: the generated ones and the shared slides present."""
    return [name for name in sorted(NAMES)
            if name in GENERATED or (Path(SHARED_SLIDES) / name).is_file()]


@functools.cache
def hot(name: str) -> list[tuple[int, int]]:
    """Where structure lives: the first 64 KiB and 512 bytes from each IFD."""
    data = base(name)
    return [(0, min(len(data), 65536))] + [(o, min(len(data), o + 512))
                                           for o in _ifd_offsets(data)]


# Drawn from the names present when a test first runs (not at import).
BASE_NAMES = st.deferred(lambda: st.sampled_from(available()))
WORDS = [0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF,
         0xFFFFFFFF, 2**63 - 1, 2**64 - 1]


def exercise(data: bytes) -> None:
    """Open the slide and read the corner tiles of the first and last level and a region;
    ``WsiError`` is the only acceptable failure (anything else propagates)."""
    started = time.monotonic()
    try:
        slide = open_slide(BytesReader(data))
    except WsiError:
        return
    levels = sorted({0, slide.level_count - 1})
    for level in levels:
        info = slide.level(level)
        for x, y in sorted({(0, 0), (info.tiles_x - 1, info.tiles_y - 1)}):
            try:
                slide.read_tile(level, x, y)
            except WsiError:
                pass
    info = slide.level(levels[-1])
    try:
        read_region(slide, levels[-1], x=0, y=0, width=min(info.width, 300),
                    height=min(info.height, 300))
    except WsiError:
        pass
    assert time.monotonic() - started < CASE_LIMIT_S


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    name = draw(BASE_NAMES)
    data = bytearray(base(name))
    for _ in range(draw(st.integers(1, 6))):
        start, end = draw(st.sampled_from(hot(name)))
        pos = draw(st.integers(start, max(start, end - 1)))
        kind = draw(st.sampled_from(["byte", "H", "I", "Q", "random"]))
        if kind == "byte":
            value = bytes([draw(st.integers(0, 255))])
        elif kind == "random":
            value = draw(st.binary(min_size=1, max_size=16))
        else:
            size = struct.calcsize(kind)
            word = draw(st.sampled_from(WORDS + [len(data), len(data) - 1, len(data) + 1]))
            order = "<" if data[:2] == b"II" else ">"
            value = struct.pack(order + kind, word % (1 << (8 * size)))
        data[pos : pos + len(value)] = value
    if draw(st.integers(0, 9)) == 0:
        del data[draw(st.integers(0, len(data))):]
    return bytes(data)


@FUZZ
@given(mutations())
def test_mutated_slides_raise_only_wsi_errors(data: bytes) -> None:
    exercise(data)


@settings(FUZZ, max_examples=max(20, EXAMPLES // 3))
@given(BASE_NAMES, st.floats(0.0, 1.0))
def test_truncated_slides_raise_only_wsi_errors(name: str, fraction: float) -> None:
    data = base(name)
    exercise(data[: int(len(data) * fraction)])


@pytest.mark.parametrize("name", sorted(NAMES))
def test_bases_are_valid_inputs(name: str) -> None:
    """The unmutated inputs exercise the whole path (else the fuzzing would prove little)."""
    exercise(base(name))
    if name.startswith("gen") or name.startswith("CMU"):
        slide = open_slide(BytesReader(base(name)))
        assert slide.read_tile(0, 0, 0).size[0] > 0


def test_word_overwrites_of_every_ifd_field() -> None:
    """Deterministic sweep: each 4-byte word of IFD 0 of the generated SVS set to the
    nastiest values, one at a time."""
    original = base("gen.svs")
    first = _ifd_offsets(original)[0]
    count = struct.unpack_from("<H", original, first)[0]
    for pos in range(first, first + 2 + 12 * count + 4, 2):
        for word in (0, 0xFFFFFFFF, 0x7FFFFFFF, len(original)):
            data = bytearray(original)
            data[pos : pos + 4] = struct.pack("<I", word)
            exercise(bytes(data))


def _tile_jpeg(**kwargs: object) -> bytes:
    """A 64x64 grey-noise JPEG, the same on every run (seeded, so derandomized cases are)."""
    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(7).normal(128, 40, (64, 64)).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).convert("RGB").save(buf, "JPEG", **kwargs)
    return buf.getvalue()


JPEG_KINDS = 4  # the variants ``jpegs`` builds


@functools.cache
def jpegs() -> tuple[bytes, ...]:
    """Plain, 4:4:4, progressive and EXIF-carrying 64x64 JPEGs, encoded on first use."""
    return (_tile_jpeg(quality=80), _tile_jpeg(quality=60, subsampling=0),
            _tile_jpeg(quality=90, progressive=True),
            _tile_jpeg(quality=80, exif=b"Exif\0\0MM\0*\0\0\0\x08\0\0"))


@settings(FUZZ, max_examples=EXAMPLES)
@given(st.sampled_from(range(JPEG_KINDS)), st.lists(
    st.tuples(st.integers(0, 699), st.binary(min_size=1, max_size=3)), min_size=1,
    max_size=4), st.booleans(), st.booleans())
def test_mutated_jpeg_tiles_raise_only_decode_errors(
        index: int, patches: list[tuple[int, bytes]], rgb: bool, reduce: bool) -> None:
    from wsi_streamer.format.jpeg import complete_stream, decode_jpeg

    data = bytearray(jpegs()[index])
    for pos, value in patches:
        data[pos : pos + len(value)] = value
    try:
        decode_jpeg(complete_stream(bytes(data), None, rgb), (64, 64),
                    (16, 16) if reduce else None)
    except WsiError:
        pass


@pytest.mark.parametrize("tag", [256, 257, 258, 259, 262, 277, 284, 322, 323, 254, 296, 282,
                                 347, 324, 325])
def test_integer_tags_with_other_types(tag: int) -> None:
    """A field of the wrong type (FLOAT NaN, DOUBLE inf, negative SLONG, ASCII...)."""
    from tests.fixtures.tiffpack import Field, pack_tiff, tiled_fields

    tile = jpegs()[0]
    for type_, values in ((11, [float("nan")]), (12, [float("inf")]), (12, [1e300]),
                          (9, [-5]), (17, [-(2**63)]), (5, [(1, 0)]), (10, [(-1, 3)]),
                          (2, b"64\0"), (7, b"\xff" * 9), (16, [2**64 - 1])):
        fields = [f for f in tiled_fields(64, 64, 64, [8], [len(tile)]) if f.tag != tag]
        exercise(pack_tiff([[*fields, Field(tag, type_, values)]], payload=tile))
