"""Generated slides decode like the reference decoders: OpenSlide for SVS (JPEG with per-level
tables, JPEG 2000 33003/33005), little-endian and BigTIFF generic pyramids; tifffile for
classic big-endian. Also read_region, edge cropping and request validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.images import psnr
from tests.fixtures.oracle import (
    compare_every_tile,
    openslide_reference,
    tifffile_reference,
)
from tests.fixtures.slides import GeneratedSlide, make_generic, make_svs
from wsi_streamer.errors import InvalidLevel, InvalidParameter, TileOutOfBounds
from wsi_streamer.io.range_reader import BytesReader
from wsi_streamer.slide.reader import SlideReader, open_slide
from wsi_streamer.slide.region import read_region

SVS_VARIANTS = {
    "jpeg": {},
    "jpeg-bigtiff": {"bigtiff": True},
    "jp2k-ycbcr": {"codec": "jp2k-ycbcr"},
    "jp2k-rgb": {"codec": "jp2k-rgb"},
}


@pytest.fixture(scope="module")
def svs_slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path,
                                                                               GeneratedSlide]]:
    folder = tmp_path_factory.mktemp("svs")
    out = {}
    for name, kwargs in SVS_VARIANTS.items():
        generated = make_svs(520, 400, levels=3, tile=128, **kwargs)  # type: ignore[arg-type]
        out[name] = (generated.write(folder, f"{name}.svs"), generated)
    return out


@pytest.mark.parametrize("name", list(SVS_VARIANTS))
def test_svs_every_tile_matches_openslide(svs_slides, name: str) -> None:  # type: ignore
    path, generated = svs_slides[name]
    slide = open_slide(BytesReader(generated.data))
    reference = openslide_reference(path)
    assert slide.level_count == 3
    compare_every_tile(slide, reference)
    # the oracle agreement means something: tiles are close to the source pixels too
    source = generated.levels[1][:128, :128]
    assert psnr(np.asarray(slide.read_tile(1, 0, 0)), source) > 30


@pytest.mark.parametrize(("byteorder", "bigtiff"), [("<", False), ("<", True), (">", True)])
def test_generic_pyramid_matches_openslide(tmp_path: Path, byteorder: str,
                                           bigtiff: bool) -> None:
    generated = make_generic(byteorder=byteorder, bigtiff=bigtiff)
    path = generated.write(tmp_path, "generic.tif")
    slide = open_slide(BytesReader(generated.data))
    compare_every_tile(slide, openslide_reference(path))


def test_classic_big_endian_matches_tifffile() -> None:
    generated = make_generic(byteorder=">")
    slide = open_slide(BytesReader(generated.data))
    assert slide.structure.tiff.byteorder == ">" and not slide.structure.tiff.bigtiff
    compare_every_tile(slide, tifffile_reference(generated.data, [0, 1, 2]))


def test_local_path_and_bytes_reader_agree(svs_slides) -> None:  # type: ignore[no-untyped-def]
    path, generated = svs_slides["jpeg"]
    a = open_slide(str(path))
    b = open_slide(BytesReader(generated.data))
    assert a.levels == b.levels
    assert np.array_equal(np.asarray(a.read_tile(0, 2, 1)), np.asarray(b.read_tile(0, 2, 1)))


@pytest.fixture(scope="module")
def jpeg_svs(svs_slides) -> tuple[SlideReader, Path]:  # type: ignore[no-untyped-def]
    path, generated = svs_slides["jpeg"]
    return open_slide(BytesReader(generated.data)), path


@pytest.mark.parametrize(("level", "x", "y", "w", "h"), [
    (0, 0, 0, 520, 400),  # the whole level
    (0, 100, 90, 300, 200),  # crosses tile boundaries
    (0, 127, 127, 2, 2),  # four tiles, two pixels each way
    (1, 37, 11, 150, 170),
    (2, 0, 0, 130, 100),
])
def test_read_region_matches_openslide(jpeg_svs, level: int, x: int, y: int, w: int,
                                       h: int) -> None:  # type: ignore[no-untyped-def]
    slide, path = jpeg_svs
    ours = np.asarray(read_region(slide, level, x=x, y=y, width=w, height=h))
    assert ours.shape == (h, w, 3)
    assert psnr(ours, openslide_reference(path)(level, x, y, w, h)) >= 45


def test_read_region_outside_is_white_inside_matches(jpeg_svs) -> None:  # type: ignore
    slide, path = jpeg_svs
    info = slide.level(1)
    region = np.asarray(read_region(slide, 1, x=info.width - 50, y=-20, width=100, height=80))
    inside = region[20:, :50]
    reference = openslide_reference(path)(1, info.width - 50, 0, 50, 60)
    assert psnr(inside, reference) >= 45
    assert (region[:20] == 255).all() and (region[:, 50:] == 255).all()
    far = np.asarray(read_region(slide, 0, x=10_000, y=10_000, width=16, height=16))
    assert (far == 255).all()


def test_edge_tiles_are_cropped(jpeg_svs) -> None:  # type: ignore[no-untyped-def]
    slide, _ = jpeg_svs
    info = slide.level(0)
    assert (info.tiles_x, info.tiles_y) == (5, 4)
    assert slide.read_tile(0, 4, 3).size == (520 - 512, 400 - 384)
    assert slide.read_tile(0, 4, 0).size == (8, 128)
    assert slide.read_tile(0, 0, 3).size == (128, 16)
    assert slide.read_tile(0, 3, 2).size == (128, 128)
    full = slide.decode_tile(0, slide.read_raw_tile(0, 4, 3))
    assert full.size == (128, 128)  # decode_tile is uncropped


def test_invalid_levels_and_tiles(jpeg_svs) -> None:  # type: ignore[no-untyped-def]
    slide, _ = jpeg_svs
    for level in (-1, 3, 99):
        with pytest.raises(InvalidLevel):
            slide.level(level)
        with pytest.raises(InvalidLevel):
            slide.read_tile(level, 0, 0)
    for x, y in ((5, 0), (0, 4), (-1, 0), (0, -1)):
        with pytest.raises(TileOutOfBounds):
            slide.read_raw_tile(0, x, y)
    for w, h in ((0, 10), (10, -1), (10_000, 10_000)):
        with pytest.raises(InvalidParameter):
            read_region(slide, 0, x=0, y=0, width=w, height=h)


def test_best_level_for_downsample(jpeg_svs) -> None:  # type: ignore[no-untyped-def]
    slide, path = jpeg_svs
    import openslide

    reference = openslide.OpenSlide(str(path))
    for ds in (0.5, 1, 1.9, 2, 3.99, 4, 100):
        assert slide.best_level_for_downsample(ds) == reference.get_best_level_for_downsample(ds)


def test_raw_tile_is_exactly_the_stored_bytes(svs_slides) -> None:  # type: ignore
    import tifffile

    path, generated = svs_slides["jp2k-ycbcr"]
    slide = open_slide(BytesReader(generated.data))
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[2]  # level 1 (IFD 1 is the thumbnail), 3x2 tiles
        offset, count = page.dataoffsets[4], page.databytecounts[4]  # type: ignore[union-attr]
    assert slide.read_raw_tile(1, 1, 1) == generated.data[offset : offset + count]
