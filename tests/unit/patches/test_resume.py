"""``PatchPipeline.state_dict`` / ``load_state_dict``: a pipeline stopped after k patches and
resumed from its state yields exactly the patches an uninterrupted one yields from k + 1
(coordinates and pixels), reading only those; the state is small JSON, checked on load."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

import pytest

from wsi_streamer.errors import ResumeStateError
from wsi_streamer.patches import (
    MultiMagnificationSampler,
    NativeBackend,
    PatchPipeline,
    RandomResizedCrop,
    RandomSampler,
    ViewConfig,
)
from wsi_streamer.patches.transforms import HEDColorAugmentation, RandomFlipRotate

READS: Counter[tuple[str, int, int]] = Counter()


class CountingSlide:
    def __init__(self, inner: Any, path: str) -> None:
        self.inner, self.path = inner, path

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def read_region(self, **kwargs: Any) -> Any:
        READS[(self.path, kwargs["x"], kwargs["y"])] += 1
        return self.inner.read_region(**kwargs)


class CountingBackend(NativeBackend):
    """Counts the regions read (x, y of level 0) per slide."""

    def open_slide(self, path: str) -> Any:
        return CountingSlide(super().open_slide(path), path)


def pipeline(paths: list[str], cache_dir: str, **kwargs: Any) -> PatchPipeline:
    args: dict[str, Any] = dict(sampler=RandomSampler(64), thumbnail_size=(512, 512),
                                pool_size=3, patches_per_slide=5, seed=7, cache_dir=cache_dir,
                                transforms=RandomFlipRotate(), prefetch=8, io_threads=4)
    args.update(kwargs)
    return PatchPipeline(paths, **args)


def key(result: Any) -> tuple[Any, ...]:
    images = [result.image] if result.image is not None else list(result.views.values())
    c = result.coordinate
    return (c.slide_path, c.x, c.y, c.level, c.mpp,
            hashlib.sha1(b"".join(i.tobytes() for i in images)).hexdigest())


def take(stream: Any, n: int) -> list[tuple[Any, ...]]:
    out = []
    for result in stream:
        out.append(key(result))
        if len(out) == n:
            break
    return out


CASES = {
    "random-cycle": dict(cycle=True, slide_sampling="random"),
    "finite": dict(cycle=False, patches_per_visit=2),
    "pools": dict(cycle=True, replacement="without_replacement", slide_sampling="random"),
    "multi-pools": dict(cycle=True, replacement="without_replacement",
                        sampler=MultiMagnificationSampler([0.25, 1.0], patch_size=64)),
    "views": dict(cycle=True, transforms=None, shared_transforms=HEDColorAugmentation(),
                  views=[ViewConfig("global", crop=RandomResizedCrop(48, (0.3, 1.0)), count=2)]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_resumed_pipeline_yields_exactly_the_rest(island_paths, cache_dir, case):
    kwargs = CASES[case]
    total = 20 if not kwargs.get("cycle") else 45
    full = take(pipeline(island_paths, cache_dir, **kwargs), total)
    assert len(full) == total
    for k in (0, 1, 7, 19):
        first = pipeline(island_paths, cache_dir, **kwargs)
        stream = iter(first)
        head = take(stream, k) if k else []
        state = json.loads(json.dumps(first.state_dict()))  # JSON, as saved
        stream.close()  # type: ignore[attr-defined]
        second = pipeline(island_paths, cache_dir, **kwargs)
        second.load_state_dict(state)
        assert head + take(second, total - k) == full, (case, k)


def test_resume_reads_only_what_is_left(island_paths, cache_dir):
    kwargs = dict(backend=CountingBackend(), cycle=False, prefetch=4)
    first = pipeline(island_paths, cache_dir, **kwargs)
    stream = iter(first)
    take(stream, 12)
    state = first.state_dict()
    stream.close()  # type: ignore[attr-defined]
    READS.clear()
    second = pipeline(island_paths, cache_dir, **kwargs)
    second.load_state_dict(state)
    rest = list(second)
    assert len(rest) == 20 - 12
    assert sum(READS.values()) == 8  # the remaining patches only: no replay of the 12
    assert len(json.dumps(state)) < 2048
    stats = second.stats_dict()  # the counts of patches handed out go on from the state's
    assert stats["pipeline/patches_extracted"] == 20
    assert sum(v for k, v in stats.items() if k.startswith("pipeline/mpp_")) == 20
    with pytest.raises(ResumeStateError, match="stats"):
        pipeline(island_paths, cache_dir, **kwargs).load_state_dict({**state, "stats": {}})


def test_pools_never_repeat_a_position_within_a_cycle_across_resumes(island_paths,
                                                                       cache_dir):
    kwargs = dict(replacement="without_replacement", sampler=RandomSampler(256),
                  patches_per_slide=7, cycle=False, pool_size=2)
    seen: list[tuple[Any, ...]] = []
    state = None
    while True:  # a resume every 3 patches
        current = pipeline(island_paths, cache_dir, **kwargs)
        if state is not None:
            current.load_state_dict(state)
        stream = iter(current)
        got = take(stream, 3)
        state = json.loads(json.dumps(current.state_dict()))
        stream.close()  # type: ignore[attr-defined]
        seen += got
        if len(got) < 3:
            break
    positions = [(k[0], k[1], k[2]) for k in seen]
    assert len(positions) == len(set(positions))
    assert positions == [(k[0], k[1], k[2]) for k in take(
        pipeline(island_paths, cache_dir, **kwargs), len(positions) + 1)]


def test_a_state_of_other_sources_recipe_seed_or_version_is_refused(island_paths, cache_dir):
    first = pipeline(island_paths, cache_dir)
    stream = iter(first)
    take(stream, 3)
    state = first.state_dict()
    stream.close()  # type: ignore[attr-defined]
    with pytest.raises(ResumeStateError, match="other sources"):
        pipeline(island_paths[:3], cache_dir).load_state_dict(state)
    with pytest.raises(ResumeStateError, match="recipe"):
        pipeline(island_paths, cache_dir, patches_per_slide=6).load_state_dict(state)
    with pytest.raises(ResumeStateError, match="seed"):
        pipeline(island_paths, cache_dir, seed=8).load_state_dict(state)
    with pytest.raises(ResumeStateError, match="version"):
        pipeline(island_paths, cache_dir).load_state_dict({**state, "version": 99})
    with pytest.raises(ResumeStateError, match="malformed"):
        pipeline(island_paths, cache_dir).load_state_dict({**state, "run": {"pass": {}}})
    unseeded = pipeline(island_paths, cache_dir, seed=None)
    unseeded.load_state_dict(state)  # an unseeded pipeline takes the saved seed
    assert unseeded.state_dict()["seed"] == state["seed"]


def test_a_first_pass_of_given_budgets_resumes_exactly(island_paths, cache_dir):
    """An elastic resume's first pass (``first_pass``: each slide's budget left) is followed
    by full passes; the pool holds a slide of the first pass while the next is queued: a
    state taken then keeps that slide's own budget (4, not ``patches_per_slide``)."""
    def make() -> PatchPipeline:
        pipe = pipeline(island_paths[:3], cache_dir, cycle=True, pool_size=2)
        pipe.first_pass = ((island_paths[0], 2), (island_paths[1], 4), (island_paths[2], 1))
        return pipe

    full = take(make(), 24)
    overlaps = 0
    for k in range(4, 11):
        first = make()
        stream = iter(first)
        head = take(stream, k)
        state = json.loads(json.dumps(first.state_dict()))
        stream.close()  # type: ignore[attr-defined]
        run = state["run"]
        overlaps += run["pass"]["number"] == 1 and any(slot["budget"] == 4
                                                       for slot in run["slots"])
        second = make()
        second.load_state_dict(state)
        assert head + take(second, 24 - k) == full, k
    assert overlaps  # some states had the first pass's slide in the second pass's pool


def test_a_state_of_the_first_release_still_loads(island_paths, cache_dir):
    """States taken before slots had budgets and before the counts were carried."""
    full = take(pipeline(island_paths, cache_dir, cycle=False), 20)
    first = pipeline(island_paths, cache_dir, cycle=False)
    stream = iter(first)
    head = take(stream, 7)
    state = json.loads(json.dumps(first.state_dict()))
    stream.close()  # type: ignore[attr-defined]
    del state["stats"]
    for slot in state["run"]["slots"]:
        del slot["budget"]
    second = pipeline(island_paths, cache_dir, cycle=False)
    second.load_state_dict(state)
    assert head + take(second, 20) == full
    assert second.stats_dict()["pipeline/patches_extracted"] == 13


def test_a_pipeline_that_has_run_pickles_without_its_stream(island_paths, cache_dir):
    """The run kept for ``state_dict()`` holds threads and the engine's callables: a copy (a
    spawned DataLoader worker, wsistream's pickling tests) leaves it behind and streams anew."""
    import pickle

    first = pipeline(island_paths, cache_dir, cycle=False)
    expected = take(first, 20)
    copy = pickle.loads(pickle.dumps(first))
    assert copy.state_dict()["run"] is None
    # the same coordinates (each run draws anew); transforms' generators went on in the copy
    assert [k[:5] for k in take(copy, 20)] == [k[:5] for k in expected]
