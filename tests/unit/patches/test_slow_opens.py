"""Slide opens that take long (issue 26, item 1): a slow open occupies one opening thread,
never the stream (head-of-line), and an open past ``open_timeout`` is skipped with its
reason. With ``open_patience=None`` the stream waits for every open, so the order of patches
never depends on timing; a resumed run waits for the slides that were open at its state
(issue 24). The slow slide is a real generated slide whose tiles pass a gate
(``tests.fixtures.slow_open``); counted work (patches, tiles), never wall-clock bounds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def keys(stream: Any, n: int | None = None) -> list[tuple[str, int, int]]:
    out = []
    for result in stream:
        out.append((result.coordinate.slide_path, result.coordinate.x, result.coordinate.y))
        if len(out) == n:
            break
    return out


def gated(folder: Path, released: bool, tile_wait_s: float = 0.05) -> GatedBackend:
    """The slow slide's open takes 48 x ``tile_wait_s`` (2.4 s: past the default patience),
    or no time once released."""
    folder.mkdir()
    backend = GatedBackend(folder, SLOW, tile_wait_s=tile_wait_s)
    if released:
        backend.gate.release()
    return backend


def three(paths: list[str], backend: GatedBackend, patience: float | None) -> PatchPipeline:
    return PatchPipeline(paths, backend=backend, sampler=RandomSampler(64),
                         thumbnail_size=THUMBNAIL, pool_size=3, patches_per_slide=6, seed=1,
                         cache_dir=None, open_patience=patience)  # no host cache: slow reopens


def test_open_patience_none_gives_the_same_patches_whatever_the_open_times(
        island_paths, slow_slide, tmp_path):
    paths = [slow_slide, *island_paths[:2]]
    fast = keys(three(paths, gated(tmp_path / "fast", released=True), None))
    backend = gated(tmp_path / "slow", released=False)
    assert keys(three(paths, backend, None)) == fast
    assert backend.gate.tiles >= 48  # every tile of its open was held: the stream waited
    assert fast[0][0] == slow_slide and len(fast) == 18


def test_a_resumed_run_waits_for_the_slides_its_state_had_open(island_paths, slow_slide,
                                                               tmp_path):
    paths = [slow_slide, *island_paths[:2]]
    fast = gated(tmp_path / "fast", released=True)
    full = keys(three(paths, fast, None))
    k = [i for i, key in enumerate(full) if key[0] == slow_slide][1]  # its second patch next
    first = three(paths, fast, None)
    stream = iter(first)
    head = keys(stream, k)
    state = json.loads(json.dumps(first.state_dict()))
    stream.close()  # type: ignore[attr-defined]
    # the slow slide reopens in 2.4 s, the others at once: with a patience of 0.05 s it
    # would be deferred, but the interrupted run had it open, in the rotation
    second = three(paths, gated(tmp_path / "slow", released=False), 0.05)
    second.load_state_dict(state)
    assert head + keys(second) == full


def test_a_deferral_is_kept_in_the_state(island_paths, slow_slide, tmp_path):
    paths = [slow_slide, *island_paths[:2]]
    backend = gated(tmp_path / "held", released=False, tile_wait_s=0.6)
    first = three(paths, backend, 0.05)
    stream = iter(first)
    head = keys(stream, 3)  # the other slides' patches while the slow open is held
    state = json.loads(json.dumps(first.state_dict()))
    backend.gate.release()
    stream.close()  # type: ignore[attr-defined]
    assert slow_slide not in [key[0] for key in head]
    slots = {slot["path"]: slot for slot in state["run"]["slots"]}
    assert slots[slow_slide].get("deferred") is True and "ordinal" not in slots[slow_slide]
    second = three(paths, gated(tmp_path / "open", released=True), 0.05)
    second.load_state_dict(state)
    rest = [key[0] for key in keys(second)]
    assert len(head) + len(rest) == 18 and rest.count(slow_slide) == 6


def test_open_patience_is_validated(island_paths):
    for bad in (0, -1.0, float("nan"), True, "2"):
        with pytest.raises(ValueError, match="open_patience"):
            PatchPipeline(island_paths, open_patience=bad)  # type: ignore[arg-type]
    assert PatchPipeline(island_paths, open_patience=None).open_patience is None
