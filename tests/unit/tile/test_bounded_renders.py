"""Bounded heavy renders (issues 11.4 and 15.4), checked by counted work, never by time:

- a 16384 px single-level slide's thumbnail decodes each level-0 tile once, DCT-scaled to 1/8,
  into a canvas no larger than the limits say; every later thumbnail size and quality, and
  every Deep Zoom level no larger than the overview, decodes no tile at all (in this process
  and, through the host cache, in another);
- requests the file makes too costly are refused with 415 naming the limit, before reading;
- heavy renders are capped per process (bounded wait, then 503 with Retry-After) while cached
  and native tiles are still served."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.fakes import CountingReader
from tests.fixtures.single_level import block_means, expected_means, single_level_slide
from tests.fixtures.threads import run_together
from wsi_streamer import limits
from wsi_streamer.errors import LimitExceeded, Overloaded
from wsi_streamer.format.tiff.slide import TiffSlide
from wsi_streamer.io.block_cache import BlockStore
from wsi_streamer.io.storage import SlidePage
from wsi_streamer.slide import region
from wsi_streamer.slide.registry import SlideRegistry
from wsi_streamer.tile import service as service_module
from wsi_streamer.tile.cache import TileCache
from wsi_streamer.tile.gate import HeavyGate
from wsi_streamer.tile.service import TileService

SIDE, TILE = 16384, 256
TILES = (SIDE // TILE) ** 2


class Slides:
    """A ``Storage`` of slides held in memory, each behind a ``CountingReader``."""

    def __init__(self, slides: dict[str, bytes]) -> None:
        self.readers = {name: CountingReader(data, f"mem://{name}#1")
                        for name, data in slides.items()}

    def open(self, slide_id: str) -> CountingReader:
        return self.readers[slide_id]

    def open_probed(self, slide_id: str, head: int, tail: int
                    ) -> tuple[CountingReader, list[tuple[int, bytes]]]:
        return self.readers[slide_id], []

    def list_slides(self, **_: object) -> SlidePage:
        return SlidePage(tuple(self.readers), None)

    def check(self) -> str:
        return "memory"

    def bytes_read(self) -> int:
        return sum(n for reader in self.readers.values() for _, n in reader.calls)


class Decodes:
    """Counts ``TiffSlide.decode_tile`` calls: how many, at which ``reduce_to``, and the
    pixels they produced; ``gate`` (when set) blocks overview decodes until released."""

    def __init__(self) -> None:
        self.calls = 0
        self.pixels = 0
        self.reduced: set[tuple[int, int] | None] = set()
        self.entered = threading.Event()
        self.release: threading.Event | None = None
        self._lock = threading.Lock()

    def wrap(self, original: Any) -> Any:
        def decode_tile(slide: TiffSlide, level: int, data: bytes,
                        reduce_to: tuple[int, int] | None = None) -> Image.Image:
            if reduce_to is not None and self.release is not None:
                self.entered.set()
                assert self.release.wait(15), "the test never released the overview build"
            image = original(slide, level, data, reduce_to)
            with self._lock:
                self.calls += 1
                self.pixels += image.width * image.height
                self.reduced.add(reduce_to)
            return image
        return decode_tile


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Decodes:
    counter = Decodes()
    monkeypatch.setattr(TiffSlide, "decode_tile", counter.wrap(TiffSlide.decode_tile))
    return counter


@pytest.fixture
def canvases(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    sizes: list[tuple[int, int]] = []
    original = region._canvas

    def counting(size: tuple[int, int]) -> Image.Image:
        sizes.append(size)
        return original(size)

    monkeypatch.setattr(region, "_canvas", counting)
    return sizes


def make_service(tmp_path: Path, storage: Slides, **kwargs: Any) -> TileService:
    registry = SlideRegistry(storage, BlockStore(64 * 1024, 1 << 27))  # type: ignore[arg-type]
    return TileService(registry, TileCache(str(tmp_path / "tiles"), 1 << 28), **kwargs)


@pytest.fixture
def big() -> Slides:
    return Slides({"big.tif": single_level_slide(SIDE, SIDE, TILE)})


def test_single_level_thumbnail_decodes_each_tile_once_at_one_eighth(
        tmp_path: Path, big: Slides, decodes: Decodes,
        canvases: list[tuple[int, int]]) -> None:
    tiles = make_service(tmp_path, big)
    first = tiles.thumbnail("big.tif", 512)
    assert first.data is not None
    assert decodes.calls == TILES  # every level-0 tile, once
    assert decodes.reduced == {(TILE // 8, TILE // 8)}  # DCT-scaled (8x) while decoding
    assert decodes.pixels == SIDE * SIDE // 64
    assert max(w * h for w, h in canvases) <= limits.SERVICE_CANVAS_PIXELS
    thumb = np.asarray(Image.open(__import__("io").BytesIO(first.data)).convert("RGB"))
    assert thumb.shape == (512, 512, 3)
    assert np.abs(block_means(thumb) - expected_means()).max() < 4

    # Other sizes and qualities, and every Deep Zoom level up to the overview's 2048 px:
    # resampled from the overview, no tile decoded, nothing read.
    read_before = big.bytes_read()
    for max_size, quality in ((64, 80), (300, 70), (2048, 90), (511, 80), (512, 95)):
        assert tiles.thumbnail("big.tif", max_size, quality).data is not None
    dz = tiles.deep_zoom(tiles.slide("big.tif"))
    for dz_level in range(0, 12):  # level 11 is 2048 px
        cols, rows = dz.tile_grid(dz_level)
        for col, row in {(0, 0), (cols - 1, rows - 1), (cols // 2, rows // 2)}:
            assert tiles.dzi_tile("big.tif", dz_level, col, row).data is not None
    assert decodes.calls == TILES and big.bytes_read() == read_before
    assert tiles.overviews.stats.built == 1

    # Deep Zoom level 12 (4096 px, scale 4) is read from level 0: 256 px at scale 4 are at
    # most 5x5 level-0 tiles, DCT-scaled to 1/4.
    tiles.dzi_tile("big.tif", 12, 3, 3)
    assert TILES < decodes.calls <= TILES + 25
    assert (TILE // 4, TILE // 4) in decodes.reduced


def test_another_process_derives_from_the_host_cache(tmp_path: Path, big: Slides,
                                                     decodes: Decodes) -> None:
    make_service(tmp_path, big).thumbnail("big.tif", 256)
    assert decodes.calls == TILES
    other = make_service(tmp_path, big)  # same host cache directory, new process state
    assert other.thumbnail("big.tif", 100).data is not None
    assert other.dzi_tile("big.tif", 9, 1, 1).data is not None
    assert decodes.calls == TILES
    assert other.overviews.stats.loaded == 1 and other.overviews.stats.built == 0


def test_concurrent_thumbnails_build_one_overview(tmp_path: Path, big: Slides,
                                                  decodes: Decodes) -> None:
    tiles = make_service(tmp_path, big)
    results = run_together(lambda size: tiles.thumbnail("big.tif", size), list(range(200, 216)))
    assert all(not isinstance(r, BaseException) and r.data for r in results), results
    assert decodes.calls == TILES and tiles.overviews.stats.built == 1


def test_overview_tile_budget_is_a_415_before_reading(tmp_path: Path, big: Slides,
                                                      decodes: Decodes) -> None:
    tiles = make_service(tmp_path, big)
    tiles.overviews.max_tiles = TILES - 1
    tiles.slide("big.tif")  # opened: what follows is the request's own reading
    read_before = big.bytes_read()
    with pytest.raises(LimitExceeded, match="MAX_OVERVIEW_TILES") as caught:
        tiles.thumbnail("big.tif", 256)
    assert caught.value.limit == "MAX_OVERVIEW_TILES"
    with pytest.raises(LimitExceeded, match="MAX_OVERVIEW_TILES"):
        tiles.dzi_tile("big.tif", 8, 0, 0)
    assert decodes.calls == 0
    assert big.bytes_read() - read_before < 128 * 1024  # the offset arrays at most


def test_deep_zoom_tile_budget_is_a_415(tmp_path: Path, big: Slides, decodes: Decodes,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    tiles = make_service(tmp_path, big)
    monkeypatch.setattr(service_module, "MAX_TILES_PER_REQUEST", 3)
    with pytest.raises(LimitExceeded, match="MAX_TILES_PER_REQUEST"):
        tiles.dzi_tile("big.tif", 14, 1, 1)  # the full level: 254 px + overlap over 4 tiles
    assert decodes.calls == 0
    assert tiles.dzi_tile("big.tif", 14, 0, 0).data is not None  # 255 px in one tile


@pytest.fixture
def two_big() -> Slides:
    data = single_level_slide(SIDE, SIDE, TILE)
    return Slides({"a.tif": data, "b.tif": data})


def test_heavy_renders_are_capped_and_tiles_still_served(
        tmp_path: Path, two_big: Slides, decodes: Decodes) -> None:
    tiles = make_service(tmp_path, two_big, gate=HeavyGate(1, wait_s=0.3, retry_after=7))
    cached = tiles.tile("a.tif", 0, 5, 5)
    assert not cached.cache_hit
    decodes.release = threading.Event()
    building = threading.Thread(target=tiles.thumbnail, args=("a.tif", 256), daemon=True)
    building.start()
    try:
        assert decodes.entered.wait(15), "the overview build never started"
        assert tiles.gate.stats.running == 1
        # While it runs: a cached tile is a hit, a native tile is decoded (never gated) ...
        assert tiles.tile("a.tif", 0, 5, 5).cache_hit
        before = decodes.calls
        assert tiles.tile("b.tif", 0, 1, 2).data is not None
        assert decodes.calls == before + 1
        # ... and a second heavy render waits at most wait_s, then gets Overloaded.
        with pytest.raises(Overloaded) as caught:
            tiles.thumbnail("b.tif", 256)
        assert caught.value.retry_after == 7 and tiles.gate.stats.refused == 1
    finally:
        decodes.release.set()
    building.join(15)
    assert not building.is_alive()
    assert tiles.gate.stats.peak == 1 and tiles.gate.stats.running == 0
    assert tiles.thumbnail("b.tif", 256).data is not None  # the slot is free again


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[Any]:
    from wsi_streamer import create_app
    from wsi_streamer.config import Config

    slides = tmp_path / "slides"
    slides.mkdir()
    (slides / "big.tif").write_bytes(single_level_slide(SIDE, SIDE, TILE))
    app = create_app(Config(slides_dir=str(slides), tile_cache_dir=str(tmp_path / "tc")))
    yield app


def test_http_statuses(app_client: Any, decodes: Decodes) -> None:
    from wsi_streamer.server.services import services

    client = app_client.test_client()
    assert client.get("/tiles/big.tif/0/0/0.jpg").status_code == 200
    tiles = services(app_client).tiles
    tiles.gate.wait_s = 0.05
    with tiles.gate.slot("test"), tiles.gate.slot("test"):  # every slot taken
        busy = client.get("/slides/big.tif/thumbnail?max_size=256")
        assert busy.status_code == 503 and busy.get_json()["error"] == "overloaded"
        assert busy.headers["Retry-After"] == str(limits.RETRY_AFTER_S)
        cached = client.get("/tiles/big.tif/0/0/0.jpg")
        assert cached.status_code == 200 and cached.headers["X-Tile-Cache-Hit"] == "true"
    tiles.overviews.max_tiles = 100
    refused = client.get("/slides/big.tif/thumbnail?max_size=256")
    assert refused.status_code == 415, refused.get_json()
    assert "MAX_OVERVIEW_TILES" in refused.get_json()["message"]
    assert decodes.calls == 1
