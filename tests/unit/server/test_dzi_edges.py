"""Every Deep Zoom level a stock client derives from ``/slides/{id}/dzi`` can be fetched to
its last column and row, with the size OpenSlide's ``DeepZoomGenerator`` gives that tile; one
tile or level past them is a 400 JSON error, never a 500."""

from __future__ import annotations

import io
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openslide import ImageSlide
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from wsi_streamer.config import Config
from wsi_streamer.format.tiff.writer import synthetic_tissue, write_pyramid

CMU = "CMU-1-Small-Region.svs"  # 2220x2967: the real file or its generated twin
NS = "{http://schemas.microsoft.com/deepzoom/2008}"


@pytest.fixture(scope="module")
def slides_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dzi-slides")
    # Three levels (2033x1017, 1017x509, 509x255) and a one-pixel line of one level.
    (root / "odd.tif").write_bytes(write_pyramid(synthetic_tissue(2033, 1017), tile=256,
                                                 min_side=256))
    (root / "line.tif").write_bytes(write_pyramid(synthetic_tissue(1001, 1), tile=128))
    return root


@pytest.fixture(scope="module")
def app_config(slides_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The shared ``client`` fixture's app serves ``slides_dir``."""
    return Config(slides_dir=str(slides_dir),
                  tile_cache_dir=str(tmp_path_factory.mktemp("dzi-cache")))


def _error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.data[:300]
    assert response.is_json and response.json["error"] == code, response.data[:300]


def check_every_level(client: Any, slide_id: str, size: tuple[int, int]) -> None:
    descriptor = client.get(f"/slides/{slide_id}/dzi")
    assert descriptor.status_code == 200
    root = ET.fromstring(descriptor.data)
    found = root.find(f"{NS}Size")
    assert found is not None
    assert (int(found.get("Width", 0)), int(found.get("Height", 0))) == size
    tile, overlap = int(root.get("TileSize", 0)), int(root.get("Overlap", 0))
    ref = DeepZoomGenerator(ImageSlide(Image.new("RGB", size)), tile_size=tile,
                            overlap=overlap, limit_bounds=False)
    base = f"/slides/{slide_id}/dzi_files"
    for level in range(ref.level_count):
        cols, rows = ref.level_tiles[level]
        for col, row in {(cols - 1, rows - 1), (cols - 1, 0), (0, rows - 1)}:
            response = client.get(f"{base}/{level}/{col}_{row}.jpg")
            assert response.status_code == 200, (level, col, row, response.data[:300])
            with Image.open(io.BytesIO(response.data)) as img:
                assert img.size == ref.get_tile_dimensions(level, (col, row)), (level, col, row)
        _error(client.get(f"{base}/{level}/{cols}_0.jpg"), 400, "tile_out_of_bounds")
        _error(client.get(f"{base}/{level}/0_{rows}.jpg"), 400, "tile_out_of_bounds")
    _error(client.get(f"{base}/{ref.level_count}/0_0.jpg"), 400, "invalid_level")


@pytest.mark.parametrize(("slide_id", "size"), [("odd.tif", (2033, 1017)),
                                                 ("line.tif", (1001, 1))])
def test_generated_slides_every_level_to_the_last_tile(client: Any, slide_id: str,
                                                       size: tuple[int, int]) -> None:
    check_every_level(client, slide_id, size)


def test_cmu_small_region_every_level_to_the_last_tile(
        slide_of_kind: Callable[[str], Path], slides_dir: Path, client: Any) -> None:
    shutil.copy(slide_of_kind("aperio"), slides_dir / CMU)
    check_every_level(client, CMU, (2220, 2967))
