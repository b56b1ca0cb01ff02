"""DICOM focal planes, optical paths and concatenations, on series rewritten in the run from
the generated ``CMU-1-Small-Region`` series (``tests/fixtures/dicom.py``): the plane and path
a series id selects (``<series>@z=<index>,path=<identifier>``) are the ones served, equal to
wsidicom's read of that plane and path; a level split into a concatenation of two objects
reads as one, every tile equal to wsidicom's."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures.dicom import WSIDICOM_WARNING, open_wsidicom
from wsi_streamer.errors import ImageNotInSeries, UnsupportedFormat
from wsi_streamer.slide import open_slide

pydicom = pytest.importorskip("pydicom", reason="pydicom is not installed (the dicom extra)")
pytestmark = WSIDICOM_WARNING


def _planes_series(dicom_series: Any, tmp_path: Path, organisation: str, paths: int = 2
                   ) -> tuple[Path, list]:
    from tests.fixtures.dicom import make_planes_series

    return make_planes_series(dicom_series("jpeg"), tmp_path / organisation, organisation,
                              paths)


@pytest.mark.parametrize(("organisation", "paths"), [
    ("TILED_FULL", 1), ("TILED_FULL", 2), ("TILED_SPARSE", 2)])
def test_the_selected_focal_plane_and_optical_path_are_served(dicom_series, tmp_path,
                                                              organisation, paths):
    """Every plane and path against the pixels written there, and against wsidicom but for
    TILED_FULL with two optical paths: wsidicom orders those by a set of their identifiers
    (differently from run to run), not by the Optical Path Sequence as PS3.3 C.7.6.17.3
    orders the frames."""
    from wsidicom.geometry import Point

    from tests.fixtures.dicom import PATHS, PLANES_Z, plane_tile

    folder, tiles = _planes_series(dicom_series, tmp_path, organisation, paths)
    oracle_agrees = organisation == "TILED_SPARSE" or paths == 1
    oracle = open_wsidicom(folder).levels[0]
    default = open_slide(str(folder))
    assert default.info.focal_planes == PLANES_Z
    assert default.info.optical_paths == PATHS[:paths]
    assert default.info.selection == "z=0,path=0"
    assert default.level_count == 2  # both levels hold the first plane and path
    for z in range(2):
        for p in range(paths):
            slide = open_slide(f"{folder}@z={z},path={PATHS[p]}")
            assert slide.info.selection == f"z={z},path={PATHS[p]}"
            assert slide.level_count == (2 if (z, p) == (0, 0) else 1)  # level 4: one plane
            for index in range(4):
                x, y = index % 2, index // 2
                ours = np.asarray(slide.read_tile(0, x, y))
                h, w = ours.shape[:2]
                assert np.array_equal(ours, plane_tile(tiles[index], z, p)[:h, :w])
                if oracle_agrees:
                    theirs = oracle.get_tile(Point(x, y), z=PLANES_Z[z], path=PATHS[p])
                    assert np.array_equal(ours, np.asarray(theirs.convert("RGB"))), (z, p)
                if (z, p) == (0, 0):
                    assert np.array_equal(ours, np.asarray(default.read_tile(0, x, y)))
    assert np.array_equal(np.asarray(open_slide(f"{folder}@z=1").read_tile(0, 0, 0)),
                          np.asarray(open_slide(f"{folder}@z=1,path=0").read_tile(0, 0, 0)))


def test_a_selection_the_series_does_not_hold_is_refused_naming_what_it_holds(
        dicom_series, tmp_path):
    folder, _ = _planes_series(dicom_series, tmp_path, "TILED_SPARSE")
    with pytest.raises(ImageNotInSeries, match=r"z=2 .*focal planes z=0: 0 um, z=1: 2.5 um"):
        open_slide(f"{folder}@z=2")
    with pytest.raises(ImageNotInSeries, match=r"optical path '3'.*optical paths 0, 7"):
        open_slide(f"{folder}@path=3")
    with pytest.raises(UnsupportedFormat, match="expected z=<focal plane index>"):
        open_slide(f"{folder}@focus=1")


def test_a_concatenated_level_reads_as_one_instance(dicom_series, tmp_path):
    from wsidicom.geometry import Point

    from tests.fixtures.dicom import make_concatenated

    folder = tmp_path / "concatenated"
    shutil.copytree(dicom_series("jpeg"), folder)
    original = open_slide(str(folder))
    first, second = make_concatenated(folder, 35, 20)  # level 1: 5 x 7 tiles
    slide = open_slide(str(folder))
    oracle = open_wsidicom(folder).levels[1]
    assert slide.level_count == 5
    geometry = slide.level(1)
    for y in range(geometry.tiles_y):
        for x in range(geometry.tiles_x):
            ours = np.asarray(slide.read_tile(1, x, y))
            assert np.array_equal(ours, np.asarray(oracle.get_tile(Point(x, y)).convert("RGB")))
            assert np.array_equal(ours, np.asarray(original.read_tile(1, x, y)))
    part = pydicom.dcmread(second)
    part.ConcatenationFrameOffsetNumber = 19  # overlaps the first part's frames
    part.save_as(second, enforce_file_format=True)
    with pytest.raises(UnsupportedFormat, match="part 2 of 2 does not follow part 1"):
        open_slide(str(folder))
    second.unlink()
    with pytest.raises(UnsupportedFormat, match="1 parts of a concatenation of 2"):
        open_slide(str(folder))


def test_only_key_value_pairs_after_the_last_at_are_a_selection():
    from wsi_streamer.io.series import split_selection

    assert split_selection("idc/s1@z=1,path=7") == ("idc/s1", "z=1,path=7")
    assert split_selection("a@b/s1@path=R") == ("a@b/s1", "path=R")
    for plain in ("idc/case@2", "idc/s1@", "@z=1", "idc/s1@z=", "x.svs"):
        assert split_selection(plain) == (plain, "")
