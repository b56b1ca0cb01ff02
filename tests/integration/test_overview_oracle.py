"""Thumbnails and low Deep Zoom levels resampled from the overview still equal OpenSlide's
(``get_thumbnail`` and ``DeepZoomGenerator``) on the Aperio slide CMU-1-Small-Region.svs
(or its generated twin of the same geometry), whose 2967 px long side gives it an overview.
Skipped when OpenSlide is absent."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.images import psnr
from wsi_streamer.io.block_cache import BlockStore
from wsi_streamer.io.local import LocalStorage
from wsi_streamer.slide.registry import SlideRegistry
from wsi_streamer.tile.cache import TileCache
from wsi_streamer.tile.service import TileService

CMU = "CMU-1-Small-Region.svs"


@pytest.fixture
def slides(slide_of_kind: Callable[[str], Path], tmp_path: Path) -> Path:
    folder = tmp_path / "slides"
    folder.mkdir()
    shutil.copyfile(slide_of_kind("aperio"), folder / CMU)
    return folder


@pytest.fixture
def service(slides: Path, tmp_path: Path) -> TileService:
    registry = SlideRegistry(LocalStorage(str(slides)), BlockStore())
    return TileService(registry, TileCache(str(tmp_path / "tc"), 1 << 28))


def decoded(data: bytes | None) -> np.ndarray:
    assert data is not None
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_thumbnails_equal_openslide(service: TileService, slides: Path) -> None:
    openslide = pytest.importorskip("openslide")
    assert service.overviews.geometry(service.slide(CMU)) == (1532, 2048)
    with openslide.OpenSlide(str(slides / CMU)) as oracle:
        for size in (64, 300, 1024, 2048):
            ours = decoded(service.thumbnail(CMU, size, 100).data)
            theirs = np.asarray(oracle.get_thumbnail((size, size)).convert("RGB"))
            assert psnr(ours, theirs) >= 42, size
    assert service.overviews.stats.built == 1


def test_deep_zoom_from_the_overview_equals_openslide(service: TileService,
                                                      slides: Path) -> None:
    pytest.importorskip("openslide")
    from openslide import OpenSlide
    from openslide.deepzoom import DeepZoomGenerator

    with OpenSlide(str(slides / CMU)) as oracle:
        reference = DeepZoomGenerator(oracle, 254, 1)
        for level, col, row in ((11, 1, 1), (11, 4, 5), (10, 0, 0), (10, 2, 2), (9, 0, 0)):
            ours = decoded(service.dzi_tile(CMU, level, col, row, 100).data)
            theirs = np.asarray(reference.get_tile(level, (col, row)).convert("RGB"))
            assert psnr(ours, theirs) >= 40, (level, col, row)
    assert service.overviews.stats.built == 1
