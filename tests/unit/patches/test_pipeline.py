"""PatchPipeline's schedule (wsistream's semantics) and what it does better, on generated
slides read from local files."""

from __future__ import annotations

import copy
import itertools
import json
import os
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from wsi_streamer.patches import (
    ComposeTransforms,
    GridSampler,
    HEDColorAugmentation,
    HSVPatchFilter,
    NoPatchesError,
    OtsuTissueDetector,
    PatchFilter,
    PatchPipeline,
    RandomFlipRotate,
    RandomResizedCrop,
    RandomSampler,
    SlideHandle,
    TissueDetector,
    ViewConfig,
)
from wsi_streamer.patches.pipeline import default_io_threads
from wsi_streamer.patches.tissue.detectors import Downsample, normalize_downsample

FAST = {"thumbnail_size": (512, 512)}


class RejectAll(PatchFilter):
    def accept(self, patch: np.ndarray) -> bool:
        return False


class RejectOdd(PatchFilter):
    """Rejects patches whose top-left pixel sum is odd: about half, deterministically."""

    def accept(self, patch: np.ndarray) -> bool:
        return int(patch[0, 0].sum()) % 2 == 0


def run(paths: list[str], cache_dir: str, **kwargs: object) -> list:  # type: ignore[type-arg]
    args = {**FAST, "sampler": RandomSampler(64), "seed": 1, "cache_dir": cache_dir, **kwargs}
    return list(PatchPipeline(paths, **args))  # type: ignore[arg-type]


def test_interleaving_first_results_come_from_distinct_slides(island_paths, cache_dir):
    results = run(island_paths, cache_dir, pool_size=4, patches_per_slide=5)
    first = [r.coordinate.slide_path for r in results[:4]]
    assert len(set(first)) == 4


def test_exact_budget_per_slide_without_cycle(island_paths, cache_dir):
    results = run(island_paths, cache_dir, pool_size=2, patches_per_slide=7)
    counts = Counter(r.coordinate.slide_path for r in results)
    assert counts == {p: 7 for p in island_paths}
    assert all(r.image.shape == (64, 64, 3) and r.image.dtype == np.uint8 for r in results)


def test_filtered_reads_consume_the_budget(island_paths, cache_dir):
    pipe = PatchPipeline(island_paths, **FAST, sampler=RandomSampler(64), seed=2,
                         patches_per_slide=10, patch_filter=RejectOdd(), cache_dir=cache_dir)
    results = list(pipe)
    stats = pipe.stats_dict()
    assert stats["pipeline/patches_extracted"] == len(results)
    assert stats["pipeline/patches_extracted"] + stats["pipeline/patches_filtered"] == 40
    assert 0 < len(results) < 40


def test_reject_everything_terminates(island_paths, cache_dir):
    pipe = PatchPipeline(island_paths, **FAST, sampler=RandomSampler(64), seed=2,
                         patches_per_slide=5, patch_filter=RejectAll(), cache_dir=cache_dir)
    assert list(pipe) == []
    assert pipe.stats_dict()["pipeline/patches_filtered"] == 20


def test_reject_everything_with_cycle_raises_no_patches(island_paths, cache_dir):
    pipe = PatchPipeline(island_paths[:2], **FAST, sampler=RandomSampler(64), seed=2,
                         patches_per_slide=3, patch_filter=RejectAll(), cycle=True,
                         cache_dir=cache_dir)
    with pytest.raises(NoPatchesError, match="filtered"):
        list(pipe)


def test_cycling_revisits_with_new_coordinates(island_paths, cache_dir):
    pipe = PatchPipeline(island_paths[:1], **FAST, sampler=RandomSampler(64), seed=3,
                         patches_per_slide=5, cycle=True, cache_dir=cache_dir)
    stream = iter(pipe)
    first = [(r.coordinate.x, r.coordinate.y) for r in (next(stream) for _ in range(5))]
    second = [(r.coordinate.x, r.coordinate.y) for r in (next(stream) for _ in range(5))]
    assert first != second
    assert pipe.stats_dict()["pipeline/slides_processed"] == 2


def test_without_replacement_is_unique_then_reshuffled(island_paths, cache_dir):
    sampler = RandomSampler(256)
    pipe = PatchPipeline(island_paths[:1], **FAST, sampler=sampler, seed=4,
                         patches_per_slide=1000, cycle=True, cache_dir=cache_dir,
                         replacement="without_replacement")
    stream = iter(pipe)
    first_pass = []
    for result in stream:
        first_pass.append((result.coordinate.x, result.coordinate.y))
        if pipe.stats_dict()["pipeline/slides_processed"] > 1:
            break
    # The pool's size is what the first visit yielded before the slide came back.
    total = len(first_pass) - 1
    assert total > 5
    assert len(set(first_pass[:total])) == total
    second = [first_pass[-1]] + [(r.coordinate.x, r.coordinate.y)
                                 for _, r in zip(range(total - 1), stream, strict=False)]
    assert set(second) == set(first_pass[:total])
    assert second != first_pass[:total]


def test_without_replacement_rejects_duplicates_and_unsupported(island_paths, cache_dir):
    with pytest.raises(ValueError, match="duplicate"):
        PatchPipeline([island_paths[0], island_paths[0]], replacement="without_replacement",
                      cache_dir=cache_dir)
    with pytest.raises(TypeError, match="GridSampler"):
        PatchPipeline(island_paths, sampler=GridSampler(64),
                      replacement="without_replacement", cache_dir=cache_dir)


def test_same_seed_same_patches_in_a_fresh_process(island_paths, cache_dir):
    ours = run(island_paths, cache_dir, patches_per_slide=4, slide_sampling="random",
               transforms=RandomFlipRotate(), seed=11)
    code = (
        "import sys, hashlib\n"
        "from wsi_streamer.patches import PatchPipeline, RandomSampler, RandomFlipRotate\n"
        f"pipe = PatchPipeline({island_paths!r}, thumbnail_size=(512, 512),"
        " sampler=RandomSampler(64), patches_per_slide=4, slide_sampling='random',"
        f" transforms=RandomFlipRotate(), seed=11, cache_dir={cache_dir!r})\n"
        "for r in pipe:\n"
        "    c = r.coordinate\n"
        "    print(c.slide_path, c.x, c.y, hashlib.sha1(r.image.tobytes()).hexdigest())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[3]).stdout.split("\n")
    import hashlib

    mine = [f"{r.coordinate.slide_path} {r.coordinate.x} {r.coordinate.y} "
            f"{hashlib.sha1(r.image.tobytes()).hexdigest()}" for r in ours]
    assert mine == [line for line in out if line]
    other = run(island_paths, cache_dir, patches_per_slide=4, seed=12)
    assert [(r.coordinate.x, r.coordinate.y) for r in other] != [
        (r.coordinate.x, r.coordinate.y) for r in ours]


def test_components_are_deep_copied_never_mutated(island_paths, cache_dir):
    sampler = RandomSampler(64, seed=5)
    state = copy.deepcopy(sampler.rng.bit_generator.state)
    pipe = PatchPipeline(island_paths, **FAST, sampler=sampler, seed=1,
                         patches_per_slide=3, cache_dir=cache_dir)
    list(pipe)
    assert pipe.sampler is not sampler
    assert sampler.rng.bit_generator.state == state


def test_sparse_slide_delivers_its_whole_budget(sparse_slide, cache_dir):
    pipe = PatchPipeline([sparse_slide], **FAST, sampler=RandomSampler(128), seed=1,
                         patches_per_slide=50, cache_dir=cache_dir)
    results = list(pipe)
    assert len(results) == 50
    assert min(r.tissue_fraction for r in results) >= 0.4
    assert 0.002 < pipe.stats_dict()["pipeline/mean_tissue_fraction"] < 0.03


def test_white_slide_yields_nothing_and_cycle_raises_fast(white_slide, cache_dir):
    assert run([white_slide], cache_dir) == []
    args = {**FAST, "sampler": RandomSampler(64), "seed": 1, "cache_dir": cache_dir}
    pipe = PatchPipeline([white_slide, white_slide], cycle=True, **args)  # type: ignore[arg-type]
    with pytest.raises(NoPatchesError, match="white.svs"):
        list(pipe)
    # Fast = counted work, not a time: one pass over the two paths (2 seen), with room for a
    # background open of the next; a spinning cycle would process them again and again.
    stats = pipe.stats_dict()
    assert 2 <= stats["pipeline/slides_processed"] <= 4, stats
    assert stats["io/slide_opens"] <= 4, stats


def test_broken_slide_is_counted_and_the_stream_goes_on(island_paths, tmp_path, cache_dir):
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"II*\x00" + b"\x00" * 100)
    pipe = PatchPipeline([str(broken), *island_paths[:2]], **FAST, sampler=RandomSampler(64),
                         patches_per_slide=3, seed=1, cache_dir=cache_dir)
    results = list(pipe)
    assert len(results) == 6
    assert pipe.stats_dict()["pipeline/slides_failed"] == 1


def test_broken_slides_only_with_cycle_raise(tmp_path, cache_dir):
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"not a tiff at all")
    with pytest.raises(NoPatchesError, match="opened"):
        run([str(broken)], cache_dir, cycle=True)


def test_construction_errors_name_the_item(tmp_path, cache_dir):
    with pytest.raises(FileNotFoundError, match="nowhere.svs"):
        PatchPipeline([str(tmp_path / "nowhere.svs")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        PatchPipeline(str(tmp_path / "empty"))


@pytest.mark.parametrize("kwargs, name", [
    ({"pool_size": 0}, "pool_size"), ({"patches_per_slide": 0}, "patches_per_slide"),
    ({"patches_per_visit": 0}, "patches_per_visit"), ({"slide_sampling": "x"}, "slide_sampling"),
    ({"replacement": "x"}, "replacement"), ({"tissue_mask_cache_size": -1},
                                            "tissue_mask_cache_size"),
    ({"prefetch": 0}, "prefetch"), ({"io_threads": 0}, "io_threads"),
    ({"on_error": "x"}, "on_error"), ({"thumbnail_size": (0, 5)}, "thumbnail_size"),
])
def test_invalid_arguments_name_themselves(island_paths, kwargs, name):
    with pytest.raises(ValueError, match=name):
        PatchPipeline(island_paths, **kwargs)


def test_io_threads_default_follows_the_storage(island_paths, cache_dir):
    """Local slides: as many reads in flight as this process has CPUs (local reads wait on
    nothing; more threads only contend); object URLs: 16, to hide each request's latency;
    an explicit value always wins."""
    cpus = len(os.sched_getaffinity(0))
    assert PatchPipeline(island_paths, cache_dir=cache_dir).io_threads == max(2, cpus)
    assert default_io_threads([*island_paths, "s3://bucket/slide.svs"]) == 16
    assert default_io_threads(["memory://slide_1.svs"]) == 16  # a user backend's scheme
    assert default_io_threads([f"file://{island_paths[0]}"]) == max(2, cpus)
    assert PatchPipeline(island_paths, cache_dir=cache_dir, io_threads=7).io_threads == 7


def test_folder_source_gives_every_slide(island_dir, cache_dir):
    pipe = PatchPipeline(str(island_dir), **FAST, sampler=GridSampler(300, tissue_threshold=0),
                         patches_per_slide=1000, cache_dir=cache_dir)
    results = list(pipe)
    assert len({r.coordinate.slide_path for r in results}) == 4
    assert all(r.image.shape == (300, 300, 3) for r in results)


def test_reads_outside_the_slide_are_white_and_exactly_shaped(island_paths):
    with SlideHandle(island_paths[0]) as slide:
        patch = slide.read_region(2048 - 100, -50, 300, 200, level=0)
        assert patch.shape == (200, 300, 3)
        assert (patch[:, 100:] == 255).all() and (patch[:50] == 255).all()
        coarse = slide.read_region(2048 - 64, 1536 - 64, 50, 50, level=2)
        assert coarse.shape == (50, 50, 3) and (coarse[4:, 4:] == 255).all()
        resized = slide.read_region(0, 0, 448, 448, level=0, out_size=(224, 224))
        assert resized.shape == (224, 224, 3)


def test_host_cache_second_pipeline_detects_nothing(island_paths, cache_dir):
    first = PatchPipeline(island_paths, **FAST, patches_per_slide=2, seed=1, cache_dir=cache_dir,
                          sampler=RandomSampler(64))
    list(first)
    assert first.stats_dict()["io/detections"] == 4
    second = PatchPipeline(island_paths, **FAST, patches_per_slide=2, seed=1,
                           cache_dir=cache_dir, sampler=RandomSampler(64))
    list(second)
    stats = second.stats_dict()
    assert stats["io/detections"] == 0 and stats["io/mask_cache_hits"] == 4
    assert stats["io/structure_cache_hits"] == 4
    other = PatchPipeline(island_paths, **FAST, patches_per_slide=2, seed=1,
                          cache_dir=cache_dir, sampler=RandomSampler(64),
                          tissue_detector=OtsuTissueDetector(blur_ksize=5))
    list(other)
    assert other.stats_dict()["io/detections"] == 4  # another configuration, another mask


def test_hsv_filter_runs_in_the_pipeline(island_paths, cache_dir):
    pipe = PatchPipeline(island_paths, **FAST, sampler=RandomSampler(64), seed=1,
                         patches_per_slide=5, patch_filter=HSVPatchFilter(), cache_dir=cache_dir)
    results = list(pipe)
    stats = pipe.stats_dict()
    assert stats["pipeline/patches_extracted"] + stats["pipeline/patches_filtered"] == 20
    assert len(results) == stats["pipeline/patches_extracted"]


class Stripes(TissueDetector):
    """Tissue in vertical stripes: level-0 columns ``x`` with ``(x // 64) % 4 == 0``, so any
    box 256·k level-0 px wide holds exactly ``1/4`` tissue wherever it starts, while a 64 px
    box holds anything from 0 to 1."""

    def detect(self, thumbnail: np.ndarray, downsample: Downsample = (1.0, 1.0)) -> np.ndarray:
        dx, _ = normalize_downsample(downsample)
        assert dx == 4.0, dx  # 2048 px slide, 512 px thumbnail: one mask column = 4 px
        columns = (np.arange(thumbnail.shape[1]) * 4 // 64) % 4 == 0
        return np.broadcast_to(columns, thumbnail.shape[:2]).copy()


@pytest.mark.parametrize(("sampler", "level", "fraction"), [
    (RandomSampler(64, level=1, tissue_threshold=0.2), 1, 0.25),  # 64 px x ds 4 = 256
    (RandomSampler(64, target_mpp=2.0, tissue_threshold=0.2), 1, 0.25),  # 128 px, ds 4
    (RandomSampler(64, level=0, tissue_threshold=0.0), 0, None),  # level 0: 64 px itself
])
def test_tissue_fraction_is_over_the_patch_level0_footprint(island_paths, cache_dir, sampler,
                                                           level, fraction):
    """``PatchResult.tissue_fraction`` is measured over the area the patch covers on the slide
    (``patch_size`` x the level's downsample, in level-0 pixels), not over ``patch_size``
    level-0 pixels (1/ds² of it)."""
    results = run(island_paths[:1], cache_dir, sampler=sampler, tissue_detector=Stripes(),
                  patches_per_slide=20)
    assert len(results) == 20
    assert {r.coordinate.level for r in results} == {level}
    if fraction is not None:
        assert {round(r.tissue_fraction, 6) for r in results} == {fraction}
    else:  # 64 level-0 px: 16 mask columns at any offset, so 0 to 1 by steps of 1/16
        assert all(r.tissue_fraction == (sum(((r.coordinate.x // 4 + i) * 4 // 64) % 4 == 0
                                             for i in range(16)) / 16) for r in results)


class RejectCalls(PatchFilter):
    """Rejects the reads numbered in ``reject`` (1-based, in call order), accepts the rest."""

    def __init__(self, reject: set[int]) -> None:
        self.reject, self.calls = reject, 0

    def accept(self, patch: np.ndarray) -> bool:
        self.calls += 1
        return self.calls not in self.reject


def test_a_yielded_patch_resets_the_slides_that_gave_nothing(island_paths, cache_dir):
    """Two slides visited in turn, one read each (one read thread, so reads are filtered in
    schedule order): A gives nothing in pass 1, B in pass 2, and a patch comes between. No
    pass gave nothing from every slide, so the cycle goes on; a streak that a yielded patch
    does not reset holds both slides after pass 2 and ends the stream with NoPatchesError."""
    pipe = PatchPipeline(island_paths[:2], **FAST, sampler=RandomSampler(64), seed=1,
                         patches_per_slide=1, pool_size=1, prefetch=1, io_threads=1,
                         cycle=True, patch_filter=RejectCalls({1, 4}), cache_dir=cache_dir)
    results = list(itertools.islice(pipe, 10))
    assert len(results) == 10
    assert pipe.stats_dict()["pipeline/patches_filtered"] == 2


def test_a_slide_without_valid_position_is_not_a_failed_slide(white_slide, island_paths,
                                                              cache_dir):
    """A white slide has no valid position: nothing is read, and that is "no valid patch
    position", not "every read failed" (a failed slide is dropped from later passes and
    counted in slides_failed)."""
    pipe = PatchPipeline([white_slide, white_slide], **FAST, sampler=RandomSampler(64), seed=1,
                         cycle=True, cache_dir=cache_dir)
    with pytest.raises(NoPatchesError, match="no valid patch position") as caught:
        list(pipe)
    assert "read failed" not in str(caught.value)
    assert pipe.stats_dict()["pipeline/slides_failed"] == 0
    mixed = PatchPipeline([white_slide, island_paths[0]], **FAST, sampler=RandomSampler(64),
                          seed=1, patches_per_slide=2, cache_dir=cache_dir)
    assert len(list(mixed)) == 2
    stats = mixed.stats_dict()
    assert stats["pipeline/slides_failed"] == 0 and stats["pipeline/patch_errors"] == 0


def first_draws(component: object) -> tuple[float, ...]:
    rng = component.rng  # type: ignore[attr-defined]
    return tuple(copy.deepcopy(rng).random(4))  # the component's own stream is not consumed


def test_every_random_component_has_its_own_stream(island_paths, cache_dir):
    """Sampler, transforms, shared transforms and each view's crop and transforms are seeded
    from distinct children of the pipeline's seed: none replays another's numbers (a
    transform seeded from the sampler's stream would flip exactly when the sampler moves)."""
    pipe = PatchPipeline(island_paths, **FAST, sampler=RandomSampler(64), seed=3,
                         transforms=ComposeTransforms([HEDColorAugmentation(),
                                                       RandomFlipRotate()]),
                         cache_dir=cache_dir)
    assert pipe.transforms is not None
    parts = [pipe.sampler, *pipe.transforms.transforms]  # type: ignore[attr-defined]
    single = PatchPipeline(island_paths, **FAST, sampler=RandomSampler(64), seed=3,
                           transforms=HEDColorAugmentation(), cache_dir=cache_dir)
    parts.append(single.transforms)
    views = [ViewConfig(name, crop=RandomResizedCrop(32, scale=(0.5, 1.0)),
                        transforms=HEDColorAugmentation()) for name in "ab"]
    other = PatchPipeline(island_paths, **FAST, sampler=RandomSampler(64), seed=3, views=views,
                          shared_transforms=HEDColorAugmentation(), cache_dir=cache_dir)
    assert other.views is not None
    parts += [other.shared_transforms,
              *(v.crop for v in other.views), *(v.transforms for v in other.views)]
    draws = [first_draws(p) for p in parts]
    assert len(set(draws)) == len(draws), draws
    assert first_draws(pipe.sampler) == first_draws(other.sampler)  # same seed, same role


def _child_coordinates(pipe: PatchPipeline, out: int) -> None:
    """In a forked child: the first patches' coordinates, written to ``out``; never returns."""
    try:
        coords = [(r.coordinate.slide_path, r.coordinate.x, r.coordinate.y)
                  for r in itertools.islice(pipe, 6)]
        os.write(out, json.dumps(coords).encode())
    finally:
        os._exit(0)


def forked_coordinates(pipe: PatchPipeline) -> list[object]:
    read, write = os.pipe()
    with warnings.catch_warnings():  # other tests' threads: fork is safe for what runs here
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        os.close(read)
        _child_coordinates(pipe, write)
    os.close(write)
    with os.fdopen(read, "rb") as pipe_out:
        data = pipe_out.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and data, "the forked child failed"
    return [tuple(c) for c in json.loads(data)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_copies_of_an_unseeded_pipeline_draw_their_own_patches(island_paths,
                                                                      cache_dir):
    """seed=None: each forked process (DataLoader workers) draws fresh entropy at its first
    iteration, so forked workers do not replay each other's patches; with a seed they do
    (reproducible)."""
    unseeded = PatchPipeline(island_paths, **FAST, sampler=RandomSampler(64), seed=None,
                             patches_per_slide=2, cache_dir=cache_dir)
    first, second = forked_coordinates(unseeded), forked_coordinates(unseeded)
    assert len(first) == len(second) == 6
    assert first != second
    seeded = PatchPipeline(island_paths, **FAST, sampler=RandomSampler(64), seed=4,
                           patches_per_slide=2, cache_dir=cache_dir)
    assert forked_coordinates(seeded) == forked_coordinates(seeded)
