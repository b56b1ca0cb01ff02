"""The OpenSlide driver never closes a handle inside a read: ``close`` during reads (registry
eviction) is deferred to the last of them, and a later read opens a new handle. A fake
OpenSlide stands in so that the read can be held open while ``close`` runs."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from wsi_streamer.format import openslide_driver
from wsi_streamer.format.openslide_driver import OpenSlideReader, OpenSlideStructure
from wsi_streamer.io.local import LocalReader


class FakeHandle:
    opened: list[FakeHandle] = []
    inside = threading.Event()
    release = threading.Event()

    def __init__(self, path: str) -> None:
        self.closed = False
        self.opened.append(self)

    def read_region(self, location: tuple[int, int], level: int,
                    size: tuple[int, int]) -> Image.Image:
        self.inside.set()
        assert self.release.wait(30)
        assert not self.closed, "read on a closed handle (use after free)"
        return Image.new("RGBA", size, (10, 20, 30, 255))

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> OpenSlideReader:
    FakeHandle.opened, FakeHandle.inside, FakeHandle.release = [], threading.Event(), \
        threading.Event()
    monkeypatch.setattr(openslide_driver, "_openslide",
                        lambda: SimpleNamespace(OpenSlide=FakeHandle))
    path = tmp_path / "a.ndpi"
    path.write_bytes(b"fake")
    structure = OpenSlideStructure("fake", ((1024, 1024, 1.0),), (), ())
    return OpenSlideReader(LocalReader(str(path), "a.ndpi"), structure)


def test_close_during_a_read_waits_for_it(reader: OpenSlideReader) -> None:
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(reader.read_tile(0, 0, 0)))
    worker.start()
    assert FakeHandle.inside.wait(30)
    reader.close()  # the registry evicts the slide while the read is inside OpenSlide
    assert not FakeHandle.opened[0].closed
    FakeHandle.release.set()
    worker.join(30)
    assert results and results[0].getpixel((0, 0)) == (10, 20, 30)
    assert FakeHandle.opened[0].closed  # closed by the last read


def test_a_read_after_close_opens_a_new_handle(reader: OpenSlideReader) -> None:
    FakeHandle.release.set()
    reader.read_tile(0, 1, 1)
    reader.close()
    assert FakeHandle.opened[0].closed
    reader.read_tile(0, 0, 0)
    assert len(FakeHandle.opened) == 2 and not FakeHandle.opened[1].closed
