"""Image ETags (``tile.service``): one per image key, so the same slide content, level,
position and quality give the same ETag in every process (a hash that Python does not seed
per process), and a different quality, image kind or slide identity (a replaced object)
gives another. A matching ``If-None-Match`` costs no render and no storage read."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.fakes import FakeStorage as Storage
from tests.fixtures.slides import make_svs
from wsi_streamer.io.block_cache import BlockStore
from wsi_streamer.slide.registry import SlideRegistry
from wsi_streamer.tile.cache import TileCache
from wsi_streamer.tile.service import TileService, etag_of

REPO_ROOT = Path(__file__).resolve().parents[3]


@functools.cache
def slide_bytes(seed: int) -> bytes:
    """A 2-level 512x384 SVS in 128 px tiles, written on first use."""
    return make_svs(512, 384, levels=2, tile=128, associated=False, seed=seed).data


def service(storage: Storage, cache_dir: Path, revalidate_s: float = 3600) -> TileService:
    """A service with its own registry and tile cache; ``revalidate_s=0`` checks the slide's
    identity on every request."""
    registry = SlideRegistry(storage, BlockStore(4096, 1 << 24),  # type: ignore[arg-type]
                             revalidate_s=revalidate_s)
    return TileService(registry, TileCache(str(cache_dir), 1 << 26))


@pytest.fixture
def storage() -> Storage:
    return Storage({"a.svs": slide_bytes(1), "b.svs": slide_bytes(1)})


def test_same_key_same_etag_across_services_and_caches(storage: Storage,
                                                       tmp_path: Path) -> None:
    one, two = service(storage, tmp_path / "one"), service(storage, tmp_path / "two")
    first, second = one.tile("a.svs", 0, 1, 1), two.tile("a.svs", 0, 1, 1)
    assert first.etag == second.etag and not first.cache_hit
    hit = one.tile("a.svs", 0, 1, 1)
    assert hit.cache_hit and hit.etag == first.etag and hit.data == first.data
    assert re.fullmatch(r"[0-9a-f]{24}", first.etag)  # quotable as is: no '"' or '\'


def test_etag_is_the_same_in_another_process(storage: Storage, tmp_path: Path) -> None:
    """Not ``hash()``: a worker with another PYTHONHASHSEED must agree (shared caches)."""
    key = "tile:fake://a.svs#1:0:1:1:q80"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", "import sys\nfrom wsi_streamer.tile.service "
                          "import etag_of\nprint(etag_of(sys.argv[1]))", key],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
                         check=True)
    assert out.stdout.strip() == etag_of(key)
    assert service(storage, tmp_path).tile("a.svs", 0, 1, 1).etag == etag_of(key)


def test_etag_changes_with_quality_position_level_and_kind(storage: Storage,
                                                           tmp_path: Path) -> None:
    svc = service(storage, tmp_path)
    etags = [svc.tile("a.svs", 0, 1, 1).etag, svc.tile("a.svs", 0, 1, 1, quality=95).etag,
             svc.tile("a.svs", 0, 1, 2).etag, svc.tile("a.svs", 0, 2, 1).etag,
             svc.tile("a.svs", 1, 1, 1).etag, svc.thumbnail("a.svs", 100).etag,
             svc.thumbnail("a.svs", 100, quality=95).etag, svc.thumbnail("a.svs", 101).etag,
             svc.dzi_tile("a.svs", 9, 1, 1).etag, svc.dzi_tile("a.svs", 9, 1, 1, 95).etag]
    assert len(set(etags)) == len(etags)
    assert svc.tile("a.svs", 0, 1, 1, quality=80).etag == etags[0]  # the default, spelled


def test_etag_changes_with_slide_identity(storage: Storage, tmp_path: Path) -> None:
    """Same bytes under another id, or the object replaced (even by identical bytes): the
    identity differs, so the ETag does (a client's copy of the old object is not current)."""
    svc = service(storage, tmp_path, revalidate_s=0)
    before = svc.tile("a.svs", 0, 1, 1)
    assert svc.tile("b.svs", 0, 1, 1).etag != before.etag
    storage.replace("a.svs", slide_bytes(1))
    same_bytes = svc.tile("a.svs", 0, 1, 1)
    assert same_bytes.etag != before.etag and same_bytes.data == before.data
    storage.replace("a.svs", slide_bytes(2))
    new = svc.tile("a.svs", 0, 1, 1)
    assert new.etag not in (before.etag, same_bytes.etag) and new.data != before.data


def test_matching_if_none_match_renders_and_reads_nothing(storage: Storage,
                                                          tmp_path: Path) -> None:
    etag = service(storage, tmp_path / "warm").tile("a.svs", 0, 1, 1).etag
    cold = service(storage, tmp_path / "cold")  # nothing cached: a 304 must not render
    cold.slide("a.svs")  # opened (structure read) before counting
    reads, opens = storage.reads(), len(storage.readers)
    for header in (f'"{etag}"', f'W/"{etag}"', "*", f'"nope", "{etag}"'):
        result = cold.tile("a.svs", 0, 1, 1, if_none_match=header)
        assert result.data is None and result.etag == etag, header
    assert (storage.reads(), len(storage.readers), cold.stats.rendered) == (reads, opens, 0)
    assert cold.tile("a.svs", 0, 1, 1, if_none_match='"nope"').data is not None
    assert cold.stats.rendered == 1  # (a small slide: its open already read every byte)


def test_a_render_that_finds_the_image_cached_meanwhile_is_a_cache_hit(
        storage: Storage, tmp_path: Path) -> None:
    """The image stored between a request's first lookup and its render (by another process,
    or by a flight of this one that ended in between): served from the cache, not rendered,
    and reported as a hit (the access log's ``cache_hit``), as the stats count it."""
    svc = service(storage, tmp_path)
    first = svc.tile("a.svs", 0, 1, 1)
    lookups = 0
    real_get = svc.cache.get

    def late(key: str) -> bytes | None:  # the first lookup misses: stored just after it
        nonlocal lookups
        lookups += 1
        return None if lookups == 1 else real_get(key)

    svc.cache.get = late  # type: ignore[method-assign]
    again = svc.tile("a.svs", 0, 1, 1)
    assert lookups == 2 and again.data == first.data
    assert again.cache_hit and (svc.stats.rendered, svc.stats.cache_hits) == (1, 1)
