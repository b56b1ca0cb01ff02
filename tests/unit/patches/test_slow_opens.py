"""Slide opens that take long (issue 26, item 1): a slow open occupies one opening thread,
never the stream (head-of-line), and an open past ``open_timeout`` is skipped with its
reason. The slow slide is a real generated slide whose tiles pass a gate
(``tests.fixtures.slow_open``); counted work (patches, tiles), never wall-clock bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.patch_slides import write_islands_svs
from tests.fixtures.slow_open import GatedBackend
from wsi_streamer.patches import PatchPipeline, RandomSampler

SLOW = "slow.svs"
THUMBNAIL = (512, 512)  # from level 1 (512x384): the slow slide's 48 tiles of 64 px


@pytest.fixture(scope="module")
def slow_slide(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("slow")
    return str(write_islands_svs(folder, SLOW, seed=7, tile=64))


def test_a_slow_open_never_holds_the_other_slides_patches(island_paths, slow_slide, tmp_path,
                                                          cache_dir):
    backend = GatedBackend(tmp_path, SLOW)
    pipe = PatchPipeline([slow_slide, *island_paths], backend=backend,
                         sampler=RandomSampler(64), thumbnail_size=THUMBNAIL, pool_size=5,
                         patches_per_slide=40, seed=1, cache_dir=cache_dir)
    stream = iter(pipe)
    good = 0
    for result in stream:  # the slow slide is the first slot of the pool
        assert result.coordinate.slide_path != slow_slide
        good += 1
        if good == 60:
            break
    assert not backend.gate.opened  # 60 patches while its open was still decoding tiles
    assert backend.gate.tiles < 48
    backend.gate.release()
    rest = [r.coordinate.slide_path for r in stream]
    assert good + len(rest) == 200  # every slide delivers its whole budget, the slow one too
    assert rest.count(slow_slide) == 40
    assert pipe.stats_dict()["pipeline/slides_failed"] == 0


def test_an_open_past_its_budget_is_skipped_with_the_reason(island_paths, slow_slide, tmp_path,
                                                             cache_dir):
    backend = GatedBackend(tmp_path, SLOW, tile_wait_s=1.0)
    pipe = PatchPipeline([slow_slide, *island_paths], backend=backend,
                         sampler=RandomSampler(64), thumbnail_size=THUMBNAIL, pool_size=5,
                         patches_per_slide=10, seed=1, cache_dir=cache_dir, open_timeout=2.0)
    paths = [r.coordinate.slide_path for r in pipe]
    assert len(paths) == 40 and slow_slide not in paths
    reasons = [why for path, why in pipe.stats.recent_errors if path == slow_slide]
    assert reasons and "budget" in reasons[0] and "slide open" in reasons[0], reasons
    assert pipe.stats_dict()["pipeline/slides_failed"] == 1
    assert backend.gate.tiles <= 3  # stopped at the first tile past the budget, not 48


def test_closing_a_run_abandons_the_opens_in_flight(island_paths, slow_slide, tmp_path,
                                                    cache_dir):
    backend = GatedBackend(Path(tmp_path), SLOW)
    pipe = PatchPipeline([*island_paths[:1], slow_slide], backend=backend,
                         sampler=RandomSampler(64), thumbnail_size=THUMBNAIL, pool_size=1,
                         patches_per_slide=2, seed=1, cache_dir=cache_dir)
    stream = iter(pipe)
    next(stream)  # the slow slide is opening in the background meanwhile
    stream.close()  # waits for the opening thread: it stops at its next tile
    assert backend.gate.tiles < 48 and not backend.gate.opened


def test_open_timeout_is_validated(island_paths):
    for bad in (0, -1.0, float("nan"), True, "5"):
        with pytest.raises(ValueError, match="open_timeout"):
            PatchPipeline(island_paths, open_timeout=bad)  # type: ignore[arg-type]
    assert PatchPipeline(island_paths, open_timeout=None).open_timeout is None
