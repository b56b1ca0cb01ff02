"""The real files in ../shared/slides behave as their README says; pixels equal OpenSlide's.

Skipped (with the reason) when the shared folder is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.images import psnr
from tests.fixtures.oracle import MIN_PSNR, compare_every_tile, openslide_reference
from wsi_streamer.errors import DecodeError, UnsupportedFormat, WsiError
from wsi_streamer.format.tiff.chain import read_ifd_chain
from wsi_streamer.format.tiff.header import parse_header
from wsi_streamer.io.block_cache import BlockStore
from wsi_streamer.io.local import LocalReader, LocalStorage
from wsi_streamer.slide.reader import open_slide
from wsi_streamer.slide.region import read_region
from wsi_streamer.slide.registry import SlideRegistry

CMU = "CMU-1-Small-Region.svs"


def slide_path(shared_slides: Path, name: str) -> Path:
    path = shared_slides / name
    if not path.is_file():
        pytest.skip(f"{name} is not in {shared_slides}")
    return path


def ifd_chain(path: Path):  # type: ignore[no-untyped-def]
    reader = LocalReader(str(path), path.name)
    fmt, first = parse_header(reader.read(0, 16))
    return fmt, read_ifd_chain(reader, fmt, first)


def test_cmu_structure(shared_slides: Path) -> None:
    path = slide_path(shared_slides, CMU)
    fmt, ifds = ifd_chain(path)
    assert fmt.byteorder == "<" and not fmt.bigtiff and len(ifds) == 4
    slide = open_slide(str(path))
    assert slide.format_name == "Aperio SVS"
    assert slide.level_count == 1  # thumbnail (IFD 1), label (2), macro (3) excluded
    info = slide.level(0)
    assert (info.width, info.height, info.tile_width, info.tile_height) == (2220, 2967, 240, 240)
    tiff = slide.structure.levels[0]  # type: ignore[attr-defined]  # the TIFF driver's own
    assert (tiff.tiles_x, tiff.tiles_y) == (10, 13) and tiff.ifd_index == 0
    assert tiff.compression == 7 and tiff.photometric == 2 and tiff.jpeg_tables
    assert slide.info.mpp_x == pytest.approx(0.499)
    assert slide.info.magnification == pytest.approx(20)
    assert slide.info.associated == ("thumbnail", "label", "macro")
    assert slide.properties["aperio.AppMag"] == "20"


def test_cmu_every_tile_equals_openslide(shared_slides: Path) -> None:
    path = slide_path(shared_slides, CMU)
    slide = open_slide(str(path))
    worst = compare_every_tile(slide, openslide_reference(path), MIN_PSNR)
    print(f"\nCMU-1-Small-Region: worst tile PSNR vs OpenSlide {worst[0]:.1f} dB")
    assert len(worst) == 1


def test_cmu_regions_equal_openslide(shared_slides: Path) -> None:
    path = slide_path(shared_slides, CMU)
    slide = open_slide(str(path))
    reference = openslide_reference(path)
    for x, y, w, h in ((0, 0, 500, 300), (1000, 2800, 700, 167), (239, 239, 3, 3),
                       (2100, 100, 120, 481)):
        ours = np.asarray(read_region(slide, 0, x=x, y=y, width=w, height=h))
        assert psnr(ours, reference(0, x, y, w, h)) >= MIN_PSNR, (x, y, w, h)


def test_cmu_through_registry_and_local_storage(shared_slides: Path) -> None:
    slide_path(shared_slides, CMU)
    storage = LocalStorage(str(shared_slides))
    registry = SlideRegistry(storage, BlockStore())
    slide = registry.get(CMU)
    assert slide is registry.get(CMU)
    before = storage.stats.requests
    edge = slide.read_tile(0, 9, 12)
    assert edge.size == (2220 - 9 * 240, 2967 - 12 * 240)
    assert storage.stats.requests - before <= 3  # two offset arrays (maybe cached) + tile
    reference = openslide_reference(shared_slides / CMU)(0, 9 * 240, 12 * 240, *edge.size)
    assert psnr(np.asarray(edge), reference) >= MIN_PSNR


def test_openslide_small_one_cropped_tile(shared_slides: Path) -> None:
    path = slide_path(shared_slides, "openslide-small.svs")
    slide = open_slide(str(path))
    assert slide.level_count == 1 and slide.dimensions == (16, 16)
    info = slide.level(0)
    assert (info.tiles_x, info.tiles_y) == (1, 1) and info.tile_width == 64
    assert slide.read_tile(0, 0, 0).size == (16, 16)
    compare_every_tile(slide, openslide_reference(path))


def test_openslide_unreadable_is_a_clean_error(shared_slides: Path) -> None:
    path = slide_path(shared_slides, "openslide-unreadable.svs")
    with pytest.raises((DecodeError, UnsupportedFormat)):
        slide = open_slide(str(path))
        for info in slide.levels:
            for y in range(info.tiles_y):
                for x in range(info.tiles_x):
                    slide.read_tile(info.level, x, y)


def test_boxes_deflate_is_unsupported_naming_deflate(shared_slides: Path) -> None:
    path = slide_path(shared_slides, "openslide-boxes-deflate.tiff")
    _, ifds = ifd_chain(path)
    assert len(ifds) == 4
    with pytest.raises(UnsupportedFormat, match="Deflate"):
        open_slide(str(path))


def test_ome_big_endian_stripped_parses_then_refuses(shared_slides: Path) -> None:
    path = slide_path(shared_slides, "ome-4D-series-bigendian-stripped.ome.tiff")
    fmt, ifds = ifd_chain(path)
    assert fmt.byteorder == ">" and not fmt.bigtiff and len(ifds) == 35
    with pytest.raises(UnsupportedFormat, match="stripped"):
        open_slide(str(path))


def test_ndpi_is_refused_never_wrong_pixels(shared_slides: Path) -> None:
    path = slide_path(shared_slides, "hamamatsu-test3-DAPI.ndpi")
    with pytest.raises(UnsupportedFormat, match="NDPI"):
        open_slide(str(path))


def test_every_shared_file_is_covered(shared_slides: Path) -> None:
    """A new file in the folder needs a test here; every file opens or fails cleanly."""
    known = {CMU, "openslide-small.svs", "openslide-unreadable.svs",
             "openslide-boxes-deflate.tiff", "ome-4D-series-bigendian-stripped.ome.tiff",
             "hamamatsu-test3-DAPI.ndpi", "README.md"}
    names = {p.name for p in shared_slides.iterdir()}
    assert names <= known, names - known
    for name in sorted(names - {"README.md"}):
        try:
            open_slide(str(shared_slides / name)).read_tile(0, 0, 0)
        except WsiError:
            pass
