"""Which IFDs are pyramid levels, on files written page by page: masks, tiled labels and
macros are not levels; levels stored out of order are numbered largest first, as OpenSlide
numbers them; a page repeating a level's size is not a level; a damaged trailing label does not
cost the slide. Every case would be a plausible refactoring slip in ``format/levels.py``,
``svs.py``, ``generic_tiff.py`` or the chain walk."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.images import psnr
from tests.fixtures.pages import Page, write_pages
from tests.fixtures.slides import ifd_offsets, make_svs, pyramid
from wsi_streamer.format.tiff.driver import parse_structure
from wsi_streamer.io.range_reader import BytesReader
from wsi_streamer.slide.reader import open_slide

APERIO = "Aperio Image Library v12.0.15"


@functools.cache
def images() -> tuple[np.ndarray, ...]:
    """1024x768, 512x384, 256x192, 128x96: every one a consistent reduction of the first
    (read-only: they are shared)."""
    levels = tuple(pyramid(1024, 768, 4, seed=5))
    for level in levels:
        level.setflags(write=False)
    return levels


def aperio(image: np.ndarray, note: str = "") -> str:
    """An Aperio level description (``note`` replaces the second line, e.g. ``label``)."""
    h, w = image.shape[:2]
    line = note or f"1024x768 [0,0 1024x768] -> {w}x{h} (128x128) JPEG/RGB Q=85"
    return f"{APERIO}\r\n{line}|AppMag = 20|MPP = 0.499"


def sizes(data: bytes) -> list[tuple[int, int]]:
    return [(lv.width, lv.height) for lv in parse_structure(BytesReader(data)).levels]


def assert_levels_are(data: bytes, expected: Sequence[np.ndarray]) -> None:
    """The slide's levels are ``expected``, in that order, by size and by pixels."""
    slide = open_slide(BytesReader(data))
    assert [(lv.width, lv.height) for lv in slide.levels] == [
        (im.shape[1], im.shape[0]) for im in expected]
    assert [lv.level for lv in slide.levels] == list(range(len(expected)))
    for info, image in zip(slide.levels, expected, strict=True):
        tile = np.asarray(slide.read_tile(info.level, 0, 0))
        assert psnr(tile, image[: tile.shape[0], : tile.shape[1]]) > 30, info.level


@pytest.mark.parametrize("vendor", ["aperio", "generic"])
@pytest.mark.parametrize("kind", ["bilevel", "jpeg"])
def test_tiled_transparency_mask_is_not_a_level(vendor: str, kind: str) -> None:
    """NewSubfileType 4 (TIFF 6.0: transparency mask), tiled, at a size that fits the
    pyramid: a real bilevel mask (which, taken for a level, would get the slide refused as
    unsupported) and a JPEG one (which would be served as an extra level)."""
    im = images()
    mask = im[2][..., 0] > 128 if kind == "bilevel" else im[2]
    desc = aperio if vendor == "aperio" else (lambda image: "")
    data = write_pages([Page(im[0], 0, desc(im[0])), Page(im[1], 1, desc(im[1])),
                        Page(mask, 4, desc(im[2]))])
    assert_levels_are(data, im[:2])


@pytest.mark.parametrize(("note", "subfiletype"), [
    ("label 256x192", 1),  # Aperio writes NewSubfileType 1 for the label
    ("macro 256x192", 9),
    ("label 256x192", 0),
    ("macro 256x192", 0),  # the description alone decides
])
def test_aperio_tiled_label_or_macro_is_not_a_level(note: str, subfiletype: int) -> None:
    im = images()
    associated = im[2]  # proportional to the base, so only the vendor rule excludes it
    data = write_pages([Page(im[0], 0, aperio(im[0])),
                        Page(im[1], 0, aperio(im[1])),
                        Page(associated, subfiletype, aperio(associated, note))])
    assert parse_structure(BytesReader(data)).format_name == "Aperio SVS"
    assert_levels_are(data, im[:2])


@pytest.mark.parametrize("description", ["label", "Macro image", "thumbnail 256x192"])
def test_generic_tiled_associated_image_is_not_a_level(description: str) -> None:
    im = images()
    data = write_pages([Page(im[0]), Page(im[1], 1), Page(im[2], 0, description)])
    assert parse_structure(BytesReader(data)).format_name == "Generic Pyramidal TIFF"
    assert_levels_are(data, im[:2])


@pytest.mark.parametrize("order", [(0, 2, 1, 3), (0, 3, 2, 1), (0, 1, 3, 2)])
def test_levels_out_of_order_are_sorted_largest_first_like_openslide(
        tmp_path: Path, order: tuple[int, ...]) -> None:
    import openslide

    im = images()
    data = write_pages([Page(im[i], 1 if i else 0) for i in order])
    path = tmp_path / "shuffled.tif"
    path.write_bytes(data)
    assert_levels_are(data, im)
    structure = parse_structure(BytesReader(data))
    assert [lv.ifd_index for lv in structure.levels] == [order.index(i) for i in range(4)]
    assert [lv.downsample for lv in structure.levels] == [1.0, 2.0, 4.0, 8.0]
    reference = openslide.OpenSlide(str(path))
    assert [(lv.width, lv.height) for lv in structure.levels] == list(
        reference.level_dimensions)


@pytest.mark.parametrize("vendor", ["aperio", "generic"])
def test_duplicate_size_pages_are_not_extra_levels(vendor: str) -> None:
    im = images()
    desc = aperio if vendor == "aperio" else (lambda image: "")
    twin = im[1][::-1].copy()  # same size, other pixels: the first page of a size wins
    data = write_pages([Page(im[0], 0, desc(im[0])), Page(im[1], 1, desc(im[1])),
                        Page(twin, 1, desc(twin)), Page(im[2], 1, desc(im[2])),
                        Page(im[2], 1, desc(im[2]))])
    assert_levels_are(data, im[:3])
    assert [lv.ifd_index for lv in parse_structure(BytesReader(data)).levels] == [0, 1, 3]


@functools.cache
def svs() -> bytes:
    """A 600x440 SVS; IFDs: L0, thumbnail, L1, L2, label, macro."""
    return make_svs(600, 440, levels=3, tile=128).data


def _table_end(data: bytes, offset: int) -> int:
    """End of the classic IFD at ``offset`` (count, 12-byte entries, next offset)."""
    return offset + 2 + 12 * int.from_bytes(data[offset : offset + 2], "little") + 4


def cut(where: str) -> int:
    """Where the file ends in the case ``where`` (one of ``CUTS``)."""
    data = svs()
    label, macro = ifd_offsets(data)[4:6]
    return {
        "label-ifd-table": label + 30,
        "label-values": _table_end(data, label) + 4,  # its out-of-line values (description...)
        "macro-ifd-count": macro + 1,
        "macro-ifd-table": macro + 40,
        "macro-values": _table_end(data, macro) + 4,
        "macro-data": len(data) - 100,
    }[where]


CUTS = ("label-ifd-table", "label-values", "macro-ifd-count", "macro-ifd-table",
        "macro-values", "macro-data")


@pytest.mark.parametrize("where", CUTS)
def test_truncated_trailing_label_or_macro_keeps_the_slide(where: str) -> None:
    assert cut(where) < len(svs())
    data = svs()[: cut(where)]
    assert sizes(data) == [(600, 440), (300, 220), (150, 110)]
    slide = open_slide(BytesReader(data))
    for info in slide.levels:  # every tile of every level is still there
        for y in range(info.tiles_y):
            for x in range(info.tiles_x):
                slide.read_tile(info.level, x, y)
