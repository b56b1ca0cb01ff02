"""Issue 13: the colour modes (``tile.color``) with LittleCMS: embed keeps pixels and carries
the slide's profile, srgb converts through it (a swapped-primaries profile turns red green)
and carries sRGB, ignore does neither; a profile LittleCMS refuses is ignored."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from PIL import Image

from tests.fixtures.fakes import FakeStorage
from tests.fixtures.icc import SRGB, SWAPPED
from tests.fixtures.slides import make_svs
from wsi_streamer.format.tiff.slide import TiffSlide
from wsi_streamer.io.block_cache import BlockStore
from wsi_streamer.slide.registry import SlideRegistry
from wsi_streamer.tile.cache import TileCache
from wsi_streamer.tile.color import SRGB_PROFILE, ColorManager
from wsi_streamer.tile.service import TileService

RED = (200, 30, 30)


def red() -> Image.Image:
    return Image.new("RGB", (8, 8), RED)


def test_embed_keeps_pixels_and_carries_the_profile() -> None:
    image, profile = ColorManager("embed").apply(red(), SWAPPED)
    assert image.getpixel((0, 0)) == RED and profile == SWAPPED


def test_srgb_converts_through_the_profile() -> None:
    image, profile = ColorManager("srgb").apply(red(), SWAPPED)
    r, g, b = image.getpixel((3, 3))  # type: ignore[misc]
    assert g > 150 and r < 60 and b < 60, (r, g, b)  # its "red" is sRGB green
    assert profile == SRGB_PROFILE and len(profile) < 1024  # compact
    same, _ = ColorManager("srgb").apply(red(), SRGB)
    assert max(abs(a - b) for a, b in zip(same.getpixel((0, 0)), RED, strict=True)) <= 2  # type: ignore[arg-type]


def test_ignore_and_no_profile_leave_everything() -> None:
    for mode in ("ignore", "embed", "srgb"):
        image, profile = ColorManager(mode).apply(red(), None)
        assert image.getpixel((0, 0)) == RED and profile is None
    image, profile = ColorManager("ignore").apply(red(), SWAPPED)
    assert image.getpixel((0, 0)) == RED and profile is None


def test_an_unreadable_profile_is_ignored_with_one_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    manager = ColorManager("srgb")
    with caplog.at_level(logging.WARNING, "wsi_streamer.tile.color"):
        for _ in range(3):
            image, profile = manager.apply(red(), b"not an ICC profile")
            assert image.getpixel((0, 0)) == RED and profile is None
    assert len(caplog.records) == 1


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="embed, srgb, ignore"):
        ColorManager("vivid")


@pytest.mark.parametrize("mode,profiled,reads", [
    ("ignore", True, 0), ("embed", True, 1), ("srgb", True, 1), ("embed", False, 0)])
def test_the_profile_is_read_only_when_the_mode_uses_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, profiled: bool,
        reads: int) -> None:
    """``ignore`` (or a slide without a profile) never asks the slide for its profile, so no
    storage request is made for it."""
    data = make_svs(512, 384, levels=2, tile=128, associated=False,
                    icc_profile=SWAPPED if profiled else None).data
    calls: list[int] = []
    original = TiffSlide.icc_profile

    def counting(self: TiffSlide) -> bytes | None:
        calls.append(1)
        return original(self)

    monkeypatch.setattr(TiffSlide, "icc_profile", counting)
    registry = SlideRegistry(FakeStorage({"a.svs": data}), BlockStore(4096, 1 << 24))  # type: ignore[arg-type]
    service = TileService(registry, TileCache(str(tmp_path / "tiles"), 1 << 26),
                          color=ColorManager(mode))
    result = service.tile("a.svs", 0, 1, 1)
    assert result.data and len(calls) == reads
    embedded = Image.open(io.BytesIO(result.data)).info.get("icc_profile")
    assert embedded == ({"embed": SWAPPED, "srgb": SRGB_PROFILE}.get(mode) if profiled else None)
