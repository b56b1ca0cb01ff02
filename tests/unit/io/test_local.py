"""LocalStorage/LocalReader: confinement to the root, exact reads, identity, listing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wsi_streamer.errors import InvalidSlideId, ReadPastEnd, SlideNotFound, StorageError
from wsi_streamer.io.local import LocalStorage
from wsi_streamer.io.range_reader import BytesReader, RangeReader, track_request
from wsi_streamer.io.storage import validate_slide_id


@pytest.fixture
def root(tmp_path: Path) -> Path:
    slides = tmp_path / "slides"
    (slides / "sub" / "deeper").mkdir(parents=True)
    (slides / ".hidden").mkdir()
    (slides / "a.svs").write_bytes(b"A" * 100)
    (slides / "b.tif").write_bytes(bytes(range(256)))
    (slides / "notes.txt").write_text("not a slide")
    (slides / "sub" / "c.tiff").write_bytes(b"C")
    (slides / "sub" / "deeper" / "d.SVS").write_bytes(b"D")
    (slides / ".hidden" / "e.svs").write_bytes(b"E")
    (tmp_path / "secret.svs").write_bytes(b"secret")
    return slides


def test_reads_exact_ranges(root: Path) -> None:
    reader = LocalStorage(str(root)).open("b.tif")
    assert isinstance(reader, RangeReader)
    assert reader.size == 256
    assert reader.read(10, 5) == bytes(range(10, 15))
    assert reader.read(256, 0) == b""
    assert reader.identity.startswith("file://b.tif#")


@pytest.mark.parametrize(("offset", "length"), [(250, 7), (-1, 2), (300, 1), (0, -1)])
def test_reads_past_end_are_errors(root: Path, offset: int, length: int) -> None:
    reader = LocalStorage(str(root)).open("b.tif")
    with pytest.raises(ReadPastEnd):
        reader.read(offset, length)


def test_short_read_of_a_file_that_shrank_is_an_error(root: Path) -> None:
    reader = LocalStorage(str(root)).open("b.tif")
    (root / "b.tif").write_bytes(b"x")
    with pytest.raises(StorageError, match="short read"):
        reader.read(0, 100)


def test_identity_changes_with_content(root: Path) -> None:
    storage = LocalStorage(str(root))
    before = storage.open("a.svs").identity
    (root / "a.svs").write_bytes(b"B" * 101)
    assert storage.open("a.svs").identity != before


def test_nested_ids(root: Path) -> None:
    assert LocalStorage(str(root)).open("sub/deeper/d.SVS").read(0, 1) == b"D"


@pytest.mark.parametrize("slide_id", [
    "../secret.svs", "sub/../../secret.svs", "/etc/passwd", "a.svs\0", "sub//c.tiff",
    "./a.svs", "sub\\c.tiff", "", "x" * 2000, "sub/./c.tiff", "a\x7f.svs"])
def test_invalid_ids_are_refused(root: Path, slide_id: str) -> None:
    with pytest.raises(InvalidSlideId):
        LocalStorage(str(root)).open(slide_id)
    with pytest.raises(SlideNotFound):  # InvalidSlideId is reported as not found
        validate_slide_id(slide_id)


def test_absolute_path_to_existing_file_inside_root_is_refused(root: Path) -> None:
    with pytest.raises(InvalidSlideId):
        LocalStorage(str(root)).open(str(root / "a.svs"))


def test_symlink_escaping_the_root_is_not_found(root: Path) -> None:
    os.symlink(root.parent / "secret.svs", root / "link.svs")
    os.symlink(root.parent, root / "up")
    storage = LocalStorage(str(root))
    for slide_id in ("link.svs", "up/secret.svs"):
        with pytest.raises(SlideNotFound):
            storage.open(slide_id)


def test_symlink_inside_the_root_is_served(root: Path) -> None:
    os.symlink(root / "a.svs", root / "alias.svs")
    assert LocalStorage(str(root)).open("alias.svs").read(0, 1) == b"A"


def test_missing_file_and_directory_are_not_found(root: Path) -> None:
    storage = LocalStorage(str(root))
    for slide_id in ("missing.svs", "sub", "sub/deeper"):
        with pytest.raises(SlideNotFound):
            storage.open(slide_id)


def test_listing_filters_sorts_and_pages(root: Path) -> None:
    storage = LocalStorage(str(root))
    page = storage.list_slides()
    assert page.slides == ("a.svs", "b.tif", "sub/c.tiff", "sub/deeper/d.SVS")
    assert page.next_cursor is None
    assert storage.list_slides(prefix="sub/").slides == ("sub/c.tiff", "sub/deeper/d.SVS")
    assert storage.list_slides(search="D.svs").slides == ("sub/deeper/d.SVS",)
    first = storage.list_slides(limit=2)
    assert first.slides == ("a.svs", "b.tif") and first.next_cursor == "b.tif"
    rest = storage.list_slides(limit=2, cursor=first.next_cursor)
    assert rest.slides == ("sub/c.tiff", "sub/deeper/d.SVS") and rest.next_cursor is None


def test_check(root: Path, tmp_path: Path) -> None:
    assert str(root) in LocalStorage(str(root)).check()
    with pytest.raises(StorageError):
        LocalStorage(str(tmp_path / "nope")).check()


def test_requests_are_counted_globally_and_per_request(root: Path) -> None:
    storage = LocalStorage(str(root))
    reader = storage.open("b.tif")
    with track_request() as stats:
        reader.read(0, 10)
        reader.read(20, 5)
    reader.read(0, 1)
    assert (stats.requests, stats.bytes) == (2, 15)
    assert storage.stats.snapshot()["requests"] == 3


def test_bytes_reader_counts_and_refuses_past_end() -> None:
    reader = BytesReader(b"0123456789")
    assert reader.read(2, 3) == b"234"
    with pytest.raises(ReadPastEnd):
        reader.read(8, 3)
    assert reader.stats.requests == 1 and reader.stats.bytes == 3


def test_look_alike_sibling_folder_is_outside_the_root(tmp_path: Path) -> None:
    """``slides-private`` starts with ``slides``: a prefix check without the separator would
    serve it through a symlinked file or folder."""
    slides, private = tmp_path / "slides", tmp_path / "slides-private"
    slides.mkdir()
    private.mkdir()
    (private / "x.svs").write_bytes(b"private")
    (slides / "ok.svs").write_bytes(b"ok")
    os.symlink("../slides-private/x.svs", slides / "link.svs")
    os.symlink("../slides-private", slides / "priv")
    storage = LocalStorage(str(slides))
    assert storage.open("ok.svs").read(0, 2) == b"ok"
    for slide_id in ("link.svs", "priv/x.svs"):
        with pytest.raises(SlideNotFound):
            storage.open(slide_id)
    # Through the root given with a trailing separator, or as a symlink to it: the same.
    os.symlink(slides, tmp_path / "alias")
    for root in (f"{slides}{os.sep}", str(tmp_path / "alias")):
        for slide_id in ("link.svs", "priv/x.svs"):
            with pytest.raises(SlideNotFound):
                LocalStorage(root).open(slide_id)
