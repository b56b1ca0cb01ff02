"""Files beyond a parse-time limit of ``wsi_streamer.limits`` are answered 415
``unsupported_format`` naming the limit, on every route, never a 400 or a 500; the app keeps
serving a good slide."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.images import abbreviated_jpeg_tiles, tissue
from tests.fixtures.slides import make_svs
from tests.fixtures.tiffpack import Field, pack_tiff, payload_offset, tiled_fields
from wsi_streamer import create_app
from wsi_streamer.config import Config


@functools.cache
def jpeg() -> tuple[bytes, bytes]:
    """JPEGTables and one abbreviated 32x32 tile, encoded on first use."""
    tables, (tile,) = abbreviated_jpeg_tiles([tissue(32, 32, 1)], 80, rgb=True)
    return tables, tile


def one_level(width: int, height: int, tile: int, more: list[list[Field]] | None = None
              ) -> bytes:
    tables, tile_data = jpeg()
    grid = -(-width // tile) * -(-height // tile)
    fields = tiled_fields(width, height, tile, [payload_offset()] * grid,
                          [len(tile_data)] * grid, tables=tables)
    return pack_tiff([fields] + (more or []), payload=tile_data)


def filler(entries: int) -> list[Field]:
    return [Field(256, 3, [16]), Field(257, 3, [16])] + [
        Field(40000 + i, 3, [i]) for i in range(entries - 2)]


# name -> (how to build it, the limit it exceeds): built when the slides folder is written.
FILES = {
    "tile-8.tif": (lambda: one_level(64, 64, 8), "MIN_TILE_SIDE"),
    "tile-100.tif": (lambda: one_level(300, 300, 100), "TILE_SIDE_MULTIPLE"),
    "entries-80k.tif": (lambda: one_level(64, 64, 32, [filler(4000) for _ in range(20)]),
                        "MAX_TOTAL_ENTRIES"),
}


@pytest.fixture(scope="module")
def app_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The shared ``client`` fixture's app serves ``FILES`` and a good slide."""
    root = tmp_path_factory.mktemp("limits")
    for name, (build, _) in FILES.items():
        (root / name).write_bytes(build())
    make_svs(600, 400, levels=2, tile=256, associated=False).write(root, "good.svs")
    return Config(slides_dir=str(root), tile_cache_dir=str(tmp_path_factory.mktemp("tc")))


@pytest.mark.parametrize("name", sorted(FILES))
def test_limit_is_named_with_415(client: Any, name: str) -> None:
    limit = FILES[name][1]
    for url in (f"/slides/{name}", f"/tiles/{name}/0/0/0.jpg",
                f"/slides/{name}/thumbnail?max_size=128", f"/slides/{name}/dzi_files/0/0_0.jpg"):
        response = client.get(url)
        body = response.get_json()
        assert response.status_code == 415, (url, body)
        assert body["error"] == "unsupported_format" and limit in body["message"], body
    assert client.get("/tiles/good.svs/0/0/0.jpg").status_code == 200


def test_real_aperio_tiles_are_within_the_rules(shared_slides: Path,
                                                tmp_path: Path) -> None:
    """Its own app (the shared slides folder, not the module's ``app_config``)."""
    if not (shared_slides / "CMU-1-Small-Region.svs").is_file():
        pytest.skip(f"CMU-1-Small-Region.svs is not in {shared_slides}")
    app = create_app(Config(slides_dir=str(shared_slides), tile_cache_dir=str(tmp_path)))
    for name in ("CMU-1-Small-Region.svs", "openslide-small.svs"):
        if (shared_slides / name).is_file():
            assert app.test_client().get(f"/tiles/{name}/0/0/0.jpg").status_code == 200, name
