"""Issue 13 (format side): associated images decoded from their strips and the ICC profile,
through the TIFF driver, against OpenSlide and tifffile; bounded, and refused clearly."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.fixtures.icc import SWAPPED
from tests.fixtures.slides import make_svs
from wsi_streamer.errors import AssociatedImageNotFound, InvalidTiff, LimitExceeded
from wsi_streamer.format import drivers
from wsi_streamer.format.tiff import strips
from wsi_streamer.format.tiff.ifd import IfdEntry
from wsi_streamer.io.range_reader import BytesReader
from wsi_streamer.slide.reader import open_slide


def reference_pages(data: bytes) -> dict[str, np.ndarray]:
    """The label (subfile 1), macro (subfile 9) and thumbnail (IFD 1) as tifffile reads them."""
    import io

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        pages = list(tif.pages)
        found = {"thumbnail": pages[1].asarray()}  # type: ignore[union-attr]
        for page in pages:
            if page.subfiletype == 1:  # type: ignore[union-attr]
                found["label"] = page.asarray()  # type: ignore[union-attr]
            elif page.subfiletype == 9:  # type: ignore[union-attr]
                found["macro"] = page.asarray()  # type: ignore[union-attr]
    return found


@pytest.fixture(scope="module")
def svs() -> bytes:
    return make_svs(800, 600, levels=2, tile=256, icc_profile=SWAPPED).data


def test_names_pixels_and_profile_of_a_generated_svs(svs: bytes) -> None:
    slide = open_slide(BytesReader(svs))
    assert slide.info.associated == ("thumbnail", "label", "macro")
    assert slide.info.has_icc_profile and slide.icc_profile() == SWAPPED
    for name, expected in reference_pages(svs).items():
        image = slide.associated_image(name)
        assert image.mode == "RGB" and image.size == (expected.shape[1], expected.shape[0])
        assert np.array_equal(np.asarray(image), expected[..., :3]), name  # LZW exactly


def test_the_real_svs_equals_openslide(shared_slides: Path) -> None:
    openslide = pytest.importorskip("openslide")
    path = shared_slides / "CMU-1-Small-Region.svs"
    slide = open_slide(str(path))
    reference = openslide.OpenSlide(str(path))
    assert set(slide.info.associated) == set(reference.associated_images)
    assert not slide.info.has_icc_profile and slide.icc_profile() is None
    for name in slide.info.associated:
        ours = np.asarray(slide.associated_image(name))
        assert np.array_equal(ours, np.asarray(reference.associated_images[name].convert("RGB")))


def test_an_unknown_name_is_not_found(svs: bytes) -> None:
    slide = open_slide(BytesReader(svs))
    with pytest.raises(AssociatedImageNotFound):
        slide.associated_image("overview")


def test_limits_are_checked_before_reading(svs: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    reader = BytesReader(svs)
    slide = open_slide(reader)
    monkeypatch.setattr(strips, "MAX_ASSOCIATED_PIXELS", 100)
    with pytest.raises(LimitExceeded, match="MAX_ASSOCIATED_PIXELS"):
        slide.associated_image("macro")
    monkeypatch.setattr(strips, "MAX_ASSOCIATED_PIXELS", 1 << 24)
    monkeypatch.setattr(strips, "MAX_ASSOCIATED_BYTES", 10)
    with pytest.raises(LimitExceeded, match="MAX_ASSOCIATED_BYTES"):
        slide.associated_image("label")


def test_strips_past_the_end_are_invalid(svs: bytes) -> None:
    slide = open_slide(BytesReader(svs))
    label = next(a for a in slide.structure.associated if a.name == "label")  # type: ignore[attr-defined]
    short = dataclasses.replace(label, rows_per_strip=1)  # counts no longer match the rows
    with pytest.raises(InvalidTiff):
        strips.read_strip_image(slide.reader, slide.structure.tiff, short)  # type: ignore[attr-defined]
    end = len(svs) - 10  # three strips of 100 bytes starting 10 bytes before the end
    beyond = dataclasses.replace(
        label, strip_offsets=IfdEntry(273, 4, 3, struct.pack("<3I", end, end, end), -1),
        strip_byte_counts=IfdEntry(279, 4, 3, struct.pack("<3I", 100, 100, 100), -1))
    with pytest.raises(InvalidTiff, match="past the end"):
        strips.read_strip_image(slide.reader, slide.structure.tiff, beyond)  # type: ignore[attr-defined]


def test_associated_images_and_profile_survive_the_structure_cache(svs: bytes) -> None:
    parsed = drivers.parse(BytesReader(svs))
    again = drivers.decode(drivers.encode(parsed))
    assert again == parsed
    assert again.open(BytesReader(svs)).icc_profile() == SWAPPED
