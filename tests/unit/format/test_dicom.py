"""The DICOM driver on series made in the run (``tests/fixtures/dicom.py``) from the shared
``CMU-1-Small-Region.svs``: every tile of every level equals wsidicom's decode of the same
frame (JPEG RGB-coded and JFIF, JPEG 2000 with Extended Offset Tables, no offset table), the
associated images, the metadata, the cache codec, and hostile objects refused (415) with the
reason."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures.dicom import WSIDICOM_WARNING, open_wsidicom
from wsi_streamer.errors import LimitExceeded, UnsupportedFormat
from wsi_streamer.format import drivers
from wsi_streamer.format.dicom.structure import DicomStructure
from wsi_streamer.io.block_cache import BlockCache
from wsi_streamer.io.factory import open_url_reader
from wsi_streamer.slide import open_slide

pydicom = pytest.importorskip("pydicom", reason="pydicom is not installed (the dicom extra)")
pytestmark = WSIDICOM_WARNING


@pytest.mark.parametrize("variant", ["jpeg", "jp2k", "walk"])
def test_every_tile_of_every_level_equals_wsidicom(dicom_series, variant):
    from wsidicom.geometry import Point

    folder = dicom_series(variant)
    slide = open_slide(str(folder))
    oracle = open_wsidicom(folder)
    assert slide.format_name == "DICOM"
    assert slide.level_count == len(oracle.levels) == 5
    compared = 0
    for index in range(slide.level_count):
        geometry = slide.level(index)
        level = oracle.levels[index]
        assert (geometry.width, geometry.height) == (level.size.width, level.size.height)
        for y in range(geometry.tiles_y):
            for x in range(geometry.tiles_x):
                ours = np.asarray(slide.read_tile(index, x, y))
                theirs = np.asarray(level.get_tile(Point(x, y)).convert("RGB"))
                assert np.array_equal(ours, theirs), (variant, index, x, y)
                compared += 1
    assert compared == 130 + 35 + 12 + 4 + 1


@pytest.mark.parametrize("variant", ["jpeg", "jp2k"])
def test_level_0_equals_openslide(dicom_series, variant):
    """OpenSlide 4 reads DICOM locally; it refuses this writer's cut edge frames of the
    reduced levels ("Dimensional mismatch reading JPEG"), so level 0 is compared."""
    openslide = pytest.importorskip("openslide", reason="OpenSlide is not installed")
    folder = dicom_series(variant)
    oracle = openslide.OpenSlide(str(next(folder.glob("*.dcm"))))
    slide = open_slide(str(folder))
    for y in range(slide.level(0).tiles_y):
        for x in range(slide.level(0).tiles_x):
            ours = np.asarray(slide.read_tile(0, x, y)).astype(int)
            theirs = np.asarray(oracle.read_region((x * 240, y * 240), 0, (
                ours.shape[1], ours.shape[0])).convert("RGB")).astype(int)
            # JPEG: the same libjpeg-turbo; JPEG 2000: the inverse ICT rounded apart by 1
            assert np.abs(ours - theirs).max() <= (0 if variant == "jpeg" else 1), (x, y)


def test_metadata_and_associated_images(dicom_series):
    folder = dicom_series("jpeg")
    slide = open_slide(str(folder))
    oracle = open_wsidicom(folder)
    assert slide.info.mpp_x == pytest.approx(0.499) and slide.info.mpp_y == pytest.approx(0.499)
    assert slide.info.associated == ("label", "macro", "thumbnail")
    base = max(folder.glob("*.dcm"), key=lambda p: p.stat().st_size)
    profile = pydicom.dcmread(base, stop_before_pixels=True).OpticalPathSequence[0].ICCProfile
    assert slide.info.has_icc_profile and slide.icc_profile() == bytes(profile)
    assert slide.properties["dicom.SeriesInstanceUID"] == str(oracle.uids.series_instance)
    for name, theirs in (("label", oracle.read_label()), ("macro", oracle.read_overview())):
        ours = slide.associated_image(name)
        assert ours.size == theirs.size
        assert np.array_equal(np.asarray(ours), np.asarray(theirs.convert("RGB"))), name


def test_structure_round_trips_through_the_shared_cache_codec(dicom_series):
    reader = BlockCache(open_url_reader(str(dicom_series("jp2k"))))
    parsed = drivers.parse(reader)
    assert isinstance(parsed.structure, DicomStructure)
    again = drivers.decode(drivers.encode(parsed))
    assert again.structure == parsed.structure
    assert np.array_equal(np.asarray(again.open(reader).read_tile(0, 3, 4)),
                          np.asarray(parsed.open(reader).read_tile(0, 3, 4)))


# --- hostile objects ------------------------------------------------------------------------

def _copy(dicom_series: Any, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the JPEG series and its level-0 object."""
    folder = tmp_path / "series"
    shutil.copytree(dicom_series("jpeg"), folder)
    base = max(folder.glob("*.dcm"), key=lambda p: p.stat().st_size)
    return folder, base


def _rewrite(path: Path, **changes: Any) -> None:
    dataset = pydicom.dcmread(path)
    for key, value in changes.items():
        if key == "TransferSyntaxUID":
            dataset.file_meta.TransferSyntaxUID = value
        else:
            setattr(dataset, key, value)
    dataset.save_as(path, enforce_file_format=True)


def test_an_associated_image_it_cannot_decode_is_left_out(dicom_series, tmp_path):
    folder, _ = _copy(dicom_series, tmp_path)
    for path in folder.glob("*.dcm"):
        if pydicom.dcmread(path, stop_before_pixels=True).ImageType[2] == "LABEL":
            _rewrite(path, TransferSyntaxUID="1.2.840.10008.1.2.4.80")
    assert open_slide(str(folder)).info.associated == ("macro", "thumbnail")


@pytest.mark.parametrize(("changes", "reason"), [
    ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"}, "CT Image Storage"),
    ({"TransferSyntaxUID": "1.2.840.10008.1.2.4.80"}, "JPEG-LS"),
    ({"PhotometricInterpretation": "MONOCHROME2"}, "MONOCHROME2"),
    ({"NumberOfFrames": 3}, "lists 130 frames, the header says 3"),
    ({"NumberOfFrames": 140}, "lists 130 frames"),
    ({"TotalPixelMatrixColumns": 10 ** 7}, "MAX_DIMENSION"),
    ({"SeriesInstanceUID": "1.2.3.4"}, "2 DICOM series"),
    ({"DimensionOrganizationType": "3D"}, "dimension organisation '3D'"),
    ({"ConcatenationUID": "1.2.3.5"}, "concatenation part without"),
    ({"Columns": 9000}, "MAX_TILE_SIDE"),
    ({"Columns": 250, "Rows": 250}, "TILE_SIDE_MULTIPLE"),
])
def test_hostile_headers_are_refused_with_the_reason(dicom_series, tmp_path, changes, reason):
    folder, base = _copy(dicom_series, tmp_path)
    _rewrite(base, **changes)
    with pytest.raises(UnsupportedFormat, match=reason.replace("(", r"\(")):
        open_slide(str(folder))


def test_truncated_objects_are_refused(dicom_series, tmp_path):
    folder, base = _copy(dicom_series, tmp_path)
    data = base.read_bytes()
    base.write_bytes(data[: len(data) // 2])  # frames past the end
    with pytest.raises(UnsupportedFormat, match="outside its object"):
        open_slide(str(folder))
    base.write_bytes(data[:1500])  # the header cut short
    with pytest.raises(UnsupportedFormat, match="no Pixel Data"):
        open_slide(str(folder))


def test_a_lying_basic_offset_table_is_refused(dicom_series, tmp_path):
    folder, base = _copy(dicom_series, tmp_path)
    data = bytearray(base.read_bytes())
    pixel = data.index(b"\xe0\x7f\x10\x00OB")
    table = pixel + 12 + 8  # after the element header and the table's item header
    struct.pack_into("<I", data, table + 4, 0xFFFFFF00)  # frame 1 far past the end
    base.write_bytes(bytes(data))
    with pytest.raises(UnsupportedFormat, match="not increasing|outside its object"):
        open_slide(str(folder))


def test_the_head_read_grows_to_the_header_and_no_further(dicom_series, monkeypatch):
    import wsi_streamer.format.dicom.header as header

    folder = dicom_series("jpeg")
    monkeypatch.setattr(header, "MEMBER_HEAD", 512)  # headers are about 2.9 kB
    assert open_slide(str(folder)).level_count == 5  # read again at 1 kB, 2 kB, 4 kB
    monkeypatch.setattr(header, "MAX_DICOM_HEADER", 2048)
    with pytest.raises(LimitExceeded, match="MAX_DICOM_HEADER"):
        open_slide(str(folder))


# --- layouts and codecs made from the series -------------------------------------------------

def _full_tiles(slide: Any, level: int) -> list[np.ndarray]:
    """Every tile of ``level``, full size (edges padded white), row-major."""
    from PIL import Image

    geometry = slide.level(level)
    tiles = []
    for y in range(geometry.tiles_y):
        for x in range(geometry.tiles_x):
            canvas = Image.new("RGB", (geometry.tile_width, geometry.tile_height), "white")
            canvas.paste(slide.read_tile(level, x, y), (0, 0))
            tiles.append(np.asarray(canvas))
    return tiles


def test_tiled_sparse_places_frames_by_position_and_fills_gaps_white(dicom_series, tmp_path):
    from tests.fixtures.dicom import make_sparse

    folder = tmp_path / "sparse"
    shutil.copytree(dicom_series("jpeg"), folder)
    original = open_slide(str(dicom_series("jpeg")))
    make_sparse(folder, 12, {1, 6})  # level 2: 3 x 4 tiles
    slide = open_slide(str(folder))
    oracle = open_wsidicom(folder).levels[2]
    from wsidicom.geometry import Point

    for index in range(12):
        x, y = index % 3, index // 3
        ours = np.asarray(slide.read_tile(2, x, y))
        if index in (1, 6):
            assert (ours == 255).all()
        else:
            assert np.array_equal(ours, np.asarray(original.read_tile(2, x, y)))
            assert np.array_equal(ours, np.asarray(oracle.get_tile(Point(x, y)).convert("RGB")))


@pytest.mark.parametrize("codec", ["native", "htj2k"])
def test_uncompressed_and_htj2k_frames_equal_wsidicom(dicom_series, tmp_path, codec):
    from wsidicom.geometry import Point

    from tests.fixtures.dicom import make_recoded

    folder = tmp_path / codec
    shutil.copytree(dicom_series("jpeg"), folder)
    tiles = _full_tiles(open_slide(str(folder)), 3)  # level 3: 2 x 2 tiles
    make_recoded(folder, 4, tiles, codec)
    slide = open_slide(str(folder))
    oracle = open_wsidicom(folder).levels[3]
    for index in range(4):
        x, y = index % 2, index // 2
        ours = np.asarray(slide.read_tile(3, x, y))
        assert np.array_equal(ours, np.asarray(oracle.get_tile(Point(x, y)).convert("RGB")))
        if codec == "native":
            assert np.array_equal(ours, tiles[index][: ours.shape[0], : ours.shape[1]])


def test_a_series_folder_never_reads_through_a_link_out_of_the_root(dicom_series, tmp_path):
    from wsi_streamer.io.local import LocalStorage
    from wsi_streamer.io.series import SeriesReader

    root = tmp_path / "root"
    shutil.copytree(dicom_series("jpeg"), root / "s")
    secret = tmp_path / "secret.dcm"
    secret.write_bytes(b"x" * 200)
    (root / "s" / "zz.dcm").symlink_to(secret)
    reader = LocalStorage(str(root)).open("s")
    assert isinstance(reader, SeriesReader)
    assert "zz.dcm" not in [m.name for m in reader.members]
    assert open_slide(str(root / "s")).level_count == 5
