"""WsiStreamDataset under real DataLoader worker processes (fork, spawn, forkserver) on
generated local slides: sharding, budgets, seeding and epochs, exact non-blocking statistics,
items and collation, MonitoredLoader, benchmark_throughput. The torchrun tests (ranks over
S3) are in test_torch_ddp.py."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import (  # noqa: E402
    DataLoader,
    IterableDataset,
    default_collate,
    get_worker_info,
)

from tests.fixtures.patch_slides import write_islands_svs  # noqa: E402
from wsi_streamer.patches import (  # noqa: E402
    NoPatchesError,
    NormalizeTransform,
    PatchCoordinate,
    PatchPipeline,
    PatchResult,
    PatchTransform,
    RandomResizedCrop,
    RandomSampler,
    TCGAAdapter,
    ViewConfig,
)
from wsi_streamer.patches.torch import (  # noqa: E402
    MonitoredLoader,
    WsiStreamDataset,
    benchmark_throughput,
    partition_slides_by_rank,
    patch_to_item,
    shard_slides,
    stream_seed,
)

FAST: dict[str, Any] = {"thumbnail_size": (512, 512), "prefetch": 8, "io_threads": 4}
ITEM_KEYS = ["slide_path", "dataset_name", "patient_id", "tissue_type", "cancer_type",
             "sample_type", "extra"]
COORD_KEYS = ["x", "y", "level", "patch_size", "mpp", "tissue_fraction"]


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Five 1024x768 SVS slides (mpp 0.25, downsamples 1 and 4), tissue islands on white."""
    folder = tmp_path_factory.mktemp("torch-slides")
    return [str(write_islands_svs(folder, f"slide-{i}.svs", width=1024, height=768, seed=i,
                                  downsamples=(1, 4))) for i in range(5)]


@pytest.fixture
def cache_dir(tmp_path: Path) -> str:
    return str(tmp_path / "host-cache")


def make(paths: list[str], cache_dir: str, **kwargs: Any) -> WsiStreamDataset:
    args = {**FAST, "sampler": RandomSampler(64), "cache_dir": cache_dir, **kwargs}
    return WsiStreamDataset(paths, **args)


class Tagged(IterableDataset):  # type: ignore[type-arg]
    """Adds the DataLoader worker id to every item."""

    def __init__(self, inner: WsiStreamDataset) -> None:
        self.inner = inner

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        for item in self.inner:
            item["worker"] = info.id if info is not None else -1
            yield item


class CountingTransform(PatchTransform):
    """Appends a line per call to a file named after the process: ground truth for
    ``patches_extracted`` (the pipeline counts a patch right after its transforms)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __call__(self, image: np.ndarray) -> np.ndarray:
        with open(os.path.join(self.folder, str(os.getpid())), "a") as f:
            f.write("x\n")
        return image


def rows(batches: Any) -> list[tuple[Any, ...]]:
    out = []
    for batch in batches:
        workers = batch.get("worker", [-1] * len(batch["slide_path"]))
        workers = workers.tolist() if isinstance(workers, torch.Tensor) else workers
        out += zip(batch["slide_path"], batch["x"].tolist(), batch["y"].tolist(),
                   batch["level"].tolist(), workers, strict=True)
    return out


def take(loader: Any, n: int) -> list[Any]:
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == n:
            break
    return batches


@pytest.mark.parametrize(("context", "persistent"), [("fork", False), ("spawn", True)])
def test_two_workers_split_the_slides_with_exact_budgets_and_stats(slides, cache_dir, context,
                                                                   persistent):
    dataset = make(slides, cache_dir, cycle=False, patches_per_slide=3, seed=7)
    loader = DataLoader(Tagged(dataset), batch_size=4, num_workers=2,
                        multiprocessing_context=context, persistent_workers=persistent)
    got = rows(loader)
    workers_of = defaultdict(set)
    for slide, *_, worker in got:
        workers_of[slide].add(worker)
    assert all(len(w) == 1 for w in workers_of.values())  # a slide is one worker's
    assert {w for ws in workers_of.values() for w in ws} == {0, 1}
    assert Counter(r[0] for r in got) == {p: 3 for p in slides}
    stats = dataset.stats_dict()
    assert stats["pipeline/patches_extracted"] == 15
    assert stats["pipeline/slides_processed"] == 5
    assert stats["pipeline/slides_unique"] == 5
    assert stats["pipeline/mpp_0.25"] == 15
    assert stats["io/slide_opens"] >= 5 and stats["io/requests"] > 0
    assert 0 < stats["pipeline/min_tissue_fraction"] <= stats["pipeline/max_tissue_fraction"]
    again = rows(loader)  # a second pass adds exactly as much
    assert len(again) == 15
    assert dataset.stats_dict()["pipeline/patches_extracted"] == 30
    dataset.reset_stats()
    assert dataset.stats_dict()["pipeline/patches_extracted"] == 0
    assert dataset.stats_dict()["pipeline/slides_unique"] == 0


def test_uint8_is_float32_times_255_exactly_and_pinning_works(slides, cache_dir):
    out = {}
    for dtype in ("float32", "uint8"):
        dataset = make(slides, cache_dir, cycle=False, patches_per_slide=2, seed=3,
                       output_dtype=dtype)
        with pytest.warns(UserWarning, match="pin_memory") if not torch.cuda.is_available() \
                else _nothing():
            loader = DataLoader(dataset, batch_size=3, num_workers=2, pin_memory=True)
            batches = list(loader)
        out[dtype] = {key: image for b in batches
                      for key, image in zip(rows([b]), b["image"], strict=True)}
    assert out["float32"].keys() == out["uint8"].keys() and len(out["uint8"]) == 10
    for key, u8 in out["uint8"].items():
        f32 = out["float32"][key]
        assert u8.dtype == torch.uint8 and u8.is_contiguous() and u8.shape == (3, 64, 64)
        assert f32.dtype == torch.float32 and 0 <= float(f32.min()) <= float(f32.max()) <= 1
        assert torch.equal(f32 * 255, u8.to(torch.float32))


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.filterwarnings("ignore:This DataLoader will create 4 worker processes")
def test_more_workers_than_slides(slides, cache_dir, capfd):
    two = slides[:2]
    finite = make(two, cache_dir, cycle=False, patches_per_slide=4, seed=1)
    # The workers' log lines reach the captured stderr (fd 2, shared with forked workers).
    handler = logging.StreamHandler(sys.stderr)
    worker_log = logging.getLogger("wsi_streamer.patches.torch.dataset")
    worker_log.addHandler(handler)
    try:
        got = rows(DataLoader(Tagged(finite), batch_size=2, num_workers=4))
    finally:
        worker_log.removeHandler(handler)
    assert Counter(r[0] for r in got) == {p: 4 for p in two}
    assert len({r[-1] for r in got}) == 2  # finite: two workers had a slide, two had none
    said = capfd.readouterr().err  # ... and the two without one are not silent
    assert said.count("has no slide (2 slides for 4 rank x worker slots") == 2, said
    endless = make(two, cache_dir, patches_per_slide=4, seed=1)
    got = rows(take(DataLoader(Tagged(endless), batch_size=4, num_workers=4), 12))
    assert len(got) == 48
    assert len({r[-1] for r in got}) == 4  # endless: every worker is fed (slides shared)
    assert {len(endless.slides_for(0, 1, w, 4, 0)) for w in range(4)} == {1}


def never_yields(paths: list[str], cache_dir: str, **kwargs: Any) -> WsiStreamDataset:
    """uni's CLAM detector (a_t=100 x 512^2 px) finds no tissue on 1024x768 slides."""
    from wsi_streamer.patches.recipes import uni

    return WsiStreamDataset(paths, **{**uni(), **FAST, "cache_dir": cache_dir, **kwargs})


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes")
@pytest.mark.parametrize("workers", [0, 1, 3])
def test_an_endless_stream_that_never_yields_raises_in_the_main_process(slides, cache_dir,
                                                                         workers):
    dataset = never_yields(slides[:2], cache_dir, seed=3)
    loader = DataLoader(dataset, batch_size=4, num_workers=workers)
    with pytest.raises(NoPatchesError, match="can never yield.*no tissue|no tissue"):
        next(iter(MonitoredLoader(loader, dataset=dataset)))
    with pytest.raises(NoPatchesError):
        for _ in loader:  # a plain loop does not end quietly either
            pass


def test_a_finite_stream_of_zero_patches_says_so(slides, cache_dir, caplog):
    dataset = never_yields(slides[:1], cache_dir, seed=3, cycle=False)
    with caplog.at_level("WARNING"):
        assert list(MonitoredLoader(DataLoader(dataset, batch_size=4))) == []
    assert "ended with 0 patches" in caplog.text and "without a batch" in caplog.text


@pytest.mark.parametrize("context", ["fork", "forkserver"])
def test_stats_are_exact_after_an_early_break(slides, cache_dir, tmp_path, context):
    calls = tmp_path / "calls"
    calls.mkdir()
    dataset = make(slides, cache_dir, seed=5, patches_per_slide=4,
                   transforms=CountingTransform(str(calls)))
    loader = DataLoader(dataset, batch_size=4, num_workers=2, multiprocessing_context=context)
    it = iter(loader)
    for _ in range(3):
        next(it)
    del it  # workers are shut down; what they did is counted
    extracted = sum(len(p.read_text().splitlines()) for p in calls.iterdir())
    assert extracted >= 12
    stats = dataset.stats_dict()
    assert stats["pipeline/patches_extracted"] == extracted
    assert stats["pipeline/mpp_0.25"] == extracted


@pytest.mark.parametrize("persistent", [False, True])
def test_new_iteration_new_stream_and_set_epoch_replays(slides, cache_dir, persistent):
    dataset = make(slides, cache_dir, seed=11, patches_per_slide=5)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, persistent_workers=persistent)
    first = rows(take(loader, 3))
    second = rows(take(loader, 3))
    assert first != second and set(first) != set(second)
    dataset.set_epoch(0)  # (epoch 0, first iteration) again: the same stream
    assert rows(take(loader, 3)) == first
    dataset.set_epoch(1)
    assert set(rows(take(loader, 3))).isdisjoint(first)
    fresh = make(slides, cache_dir, seed=11, patches_per_slide=5)
    assert rows(take(DataLoader(fresh, batch_size=4, num_workers=2), 3)) == first


def test_no_two_rank_worker_streams_collide_and_shards_cover_all():
    states = {tuple(stream_seed(42, rank, worker, epoch).generate_state(4))
              for rank in range(4) for worker in range(4) for epoch in range(3)}
    assert len(states) == 4 * 4 * 3  # wsistream's seed + rank would collide
    paths = [f"s{i}.svs" for i in range(11)]
    for epoch in range(3):
        shards = [shard_slides(paths, s, 6, 42, epoch) for s in range(6)]
        assert sorted(p for shard in shards for p in shard) == sorted(paths)
        assert {len(s) for s in shards} <= {1, 2}
    assert shard_slides(paths, 0, 6, 42, 0) != shard_slides(paths, 0, 6, 42, 1)
    assert shard_slides(paths, 0, 6, 42, 0) == shard_slides(paths, 0, 6, 42, 0)
    assert shard_slides(paths, 0, 6, None, 0) == shard_slides(paths, 0, 6, None, 0)


def test_partition_by_rank(slides, cache_dir, monkeypatch):
    part = partition_slides_by_rank(slides, rank=1, world_size=2)
    assert list(part) == slides[1::2] and (part.rank, part.world_size) == (1, 2)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert list(partition_slides_by_rank(slides)) == slides[2::3]
    with pytest.raises(RuntimeError, match="got 0 slides"):
        partition_slides_by_rank(slides[:1], rank=1, world_size=2)
    dataset = make(part, cache_dir, seed=1)  # already split by rank: workers only
    assert dataset.rank_and_world_size() == (1, 2)
    shards = [dataset.slides_for(1, 2, w, 2, epoch=0) for w in range(2)]
    assert sorted(shards[0] + shards[1]) == sorted(part)


@pytest.mark.timeout(180)
def test_five_thousand_rotations_nobody_reading_stats(slides, cache_dir):
    dataset = make(slides, cache_dir, seed=2, pool_size=1, patches_per_slide=1,
                   thumbnail_size=(128, 128), tissue_mask_cache_size=8)
    loader = DataLoader(dataset, batch_size=50, num_workers=2)
    assert len(rows(take(loader, 100))) == 5000
    assert dataset.stats_dict()["pipeline/slides_processed"] >= 5000


def test_a_worker_whose_slides_all_fail_ends_and_the_others_go_on(slides, cache_dir,
                                                                   tmp_path):
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"II*\x00" + bytes(4096))
    pair = [slides[0], str(broken)]  # two workers: one slide each
    dataset = make(pair, cache_dir, seed=4, patches_per_slide=3)
    got = rows(take(DataLoader(dataset, batch_size=4, num_workers=2), 10))
    assert len(got) == 40 and {r[0] for r in got} == {slides[0]}
    assert dataset.stats_dict()["pipeline/slides_failed"] >= 1
    finite = make(pair, cache_dir, seed=4, patches_per_slide=3, cycle=False)
    assert Counter(r[0] for r in rows(DataLoader(finite, batch_size=4, num_workers=2))) == {
        slides[0]: 3}


def test_items_views_metadata_and_float_images(slides, cache_dir):
    views = [ViewConfig("global", crop=RandomResizedCrop(48, scale=(0.5, 1.0)), count=2),
             ViewConfig("local", crop=RandomResizedCrop(32, scale=(0.2, 0.5)))]
    dataset = make(slides[:2], cache_dir, seed=1, cycle=False, patches_per_slide=2,
                   views=views, dataset_adapter=TCGAAdapter())
    items = list(dataset)
    assert len(items) == 4
    keys = ITEM_KEYS + ["global_0", "global_1", "local"] + COORD_KEYS
    assert all(list(item) == keys for item in items)
    assert json.loads(items[0]["extra"]).get("parse_error")
    batch = default_collate(items)
    assert batch["global_0"].shape == (4, 3, 48, 48) and batch["local"].shape == (4, 3, 32, 32)
    assert batch["mpp"].dtype == torch.float64 and batch["x"].dtype == torch.int64

    norm = NormalizeTransform((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    floats = list(make(slides[:1], cache_dir, seed=1, cycle=False, patches_per_slide=2,
                       transforms=norm))
    assert floats[0]["image"].dtype == torch.float32 and float(floats[0]["image"].max()) > 1
    with pytest.raises(ValueError, match="uint8"):  # wsistream's error type
        list(make(slides[:1], cache_dir, seed=1, cycle=False, patches_per_slide=2,
                  transforms=norm, output_dtype="uint8"))
    coord = PatchCoordinate(1, 2, 0, 4, None, "a.svs")
    item = patch_to_item(PatchResult(np.zeros((4, 4, 3), np.uint8), coord, 0.5))
    assert list(item) == ITEM_KEYS + ["image"] + COORD_KEYS
    assert item["mpp"] == -1.0 and item["slide_path"] == "a.svs" and item["extra"] == "{}"
    with pytest.raises(ValueError, match="output_dtype"):
        make(slides, cache_dir, output_dtype="float16")


def test_monitored_loader_reports_timings_and_dataset_stats(slides, cache_dir):
    dataset = make(slides[:2], cache_dir, seed=1, patches_per_slide=3)
    monitor = MonitoredLoader(DataLoader(dataset, batch_size=4), dataset=dataset, log_every=3)
    payloads = []
    for step, _batch in enumerate(monitor):
        payload = monitor.mark_step({"step": step})
        if payload is not None:
            payloads.append(payload)
        if step == 5:
            break
    assert len(payloads) == 2 and payloads[-1]["step"] == 5
    assert payloads[0]["loader/patches_per_sec"] > 0
    assert 0 <= payloads[0]["loader/data_fraction"] <= 1
    assert payloads[1]["pipeline/patches_extracted"] >= 24
    assert monitor.lifetime_stats()["loader/batches_per_sec"] > 0
    fresh = MonitoredLoader(DataLoader(dataset, batch_size=4))
    with pytest.raises(RuntimeError, match="mark_step"):
        fresh.mark_step()


def _bench_dataset(cache_dir: str, paths: list[str], pool_size: int, patches_per_slide: int,
                   patches_per_visit: int, seed: int) -> WsiStreamDataset:
    return make(paths, cache_dir, pool_size=pool_size, patches_per_slide=patches_per_slide,
                patches_per_visit=patches_per_visit, seed=seed)


def test_benchmark_throughput_one_rank(slides, cache_dir):
    results = benchmark_throughput(functools.partial(_bench_dataset, cache_dir), slides,
                                   num_workers=[0, 2], pool_size=2, patches_per_slide=10,
                                   batch_size=8, warmup_batches=2, measure_batches=6,
                                   multiprocessing_context="fork", verbose=False)
    assert [r.num_workers for r in results] == [0, 2]
    for r in results:
        assert r.total_patches == 48 and r.effective_sync_throughput > 0
        assert r.effective_sync_throughput == min(r.per_rank_patches_per_sec)
        assert 0 < r.p50_batch_ms <= r.p95_batch_ms
        assert 0 < r.time_to_first_batch_s < 60
        assert r.peak_pss_mb is not None and r.peak_pss_mb > 10
    with pytest.raises(ValueError, match="cycle=True"):  # wsistream's error, before a batch
        benchmark_throughput(functools.partial(_finite_dataset, cache_dir), slides[:1],
                             num_workers=0, batch_size=8, warmup_batches=1,
                             measure_batches=50, verbose=False)


def _finite_dataset(cache_dir: str, paths: list[str], *_: int) -> WsiStreamDataset:
    return make(paths, cache_dir, cycle=False, patches_per_slide=2)


class FakeEvent:
    """Stands in for ``torch.cuda.Event`` on a CPU build: 2 ms between two records."""

    clock = 0.0

    def __init__(self, enable_timing: bool = False) -> None:
        self.at = 0.0

    def record(self, stream: object = None) -> None:
        FakeEvent.clock += 2.0
        self.at = FakeEvent.clock

    def elapsed_time(self, end: FakeEvent) -> float:
        return end.at - self.at


def test_monitored_loader_synchronises_cuda_only_at_log_boundaries(monkeypatch):
    syncs = []
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: syncs.append(device))
    batches = [{"image": torch.zeros(2, 3, 4, 4)} for _ in range(7)]
    monitor = MonitoredLoader(batches, device="cuda", log_every=3)
    payloads = []
    for _batch in monitor:
        payloads.append(monitor.mark_step())
        assert len(syncs) == sum(p is not None for p in payloads)
    assert len(syncs) == 2 and payloads[2] is not None and payloads[5] is not None
    assert payloads[2]["loader/compute_ms"] == pytest.approx(2.0)
    assert payloads[2]["loader/patches_per_sec"] > 0
    assert monitor.lifetime_stats()["loader/compute_ms"] == pytest.approx(2.0)
    assert len(syncs) == 3  # the seventh step, resolved on demand


def test_the_shared_folder_goes_with_the_dataset(slides, cache_dir):
    import gc

    dataset = make(slides[:1], cache_dir, cycle=False, patches_per_slide=1)
    assert len(list(dataset)) == 1
    folder = dataset._shared.folder
    assert os.path.isdir(folder)
    del dataset
    gc.collect()
    assert not os.path.exists(folder)


@pytest.mark.timeout(60)
def test_fork_workers_while_this_process_is_mid_iteration(slides, cache_dir):
    dataset = make(slides, cache_dir, seed=6, patches_per_slide=4)
    here = iter(dataset)  # threads reading, slides open, a stats slot locked
    for _ in range(5):
        next(here)
    finite = make(slides, cache_dir, seed=6, patches_per_slide=4, cycle=False)
    got = rows(DataLoader(finite, batch_size=4, num_workers=2))
    assert Counter(r[0] for r in got) == {p: 4 for p in slides}
    next(here)
    both = rows(take(DataLoader(dataset, batch_size=4, num_workers=2), 2))
    assert len(both) == 8
    del here
    assert dataset.stats_dict()["pipeline/patches_extracted"] >= 14


def test_tissue_fraction_stats_equal_a_plain_pipeline(slides, cache_dir):
    """The dataset's statistics are written as deltas once per item: its mean, min and max
    tissue fraction equal those of a plain PatchPipeline over the same slides and seed (a
    writer re-adding running totals inflates the mean)."""
    dataset = make(slides, cache_dir, cycle=False, patches_per_slide=3, seed=5)
    assert len(list(dataset)) == 15  # in this process: one record per item
    plain = PatchPipeline(slides, **FAST, sampler=RandomSampler(64), cycle=False,
                          patches_per_slide=3, seed=5, cache_dir=cache_dir)
    assert len(list(plain)) == 15
    ours, theirs = dataset.stats_dict(), plain.stats_dict()
    for key in ("mean", "min", "max"):
        name = f"pipeline/{key}_tissue_fraction"
        assert ours[name] == pytest.approx(theirs[name], rel=1e-9, abs=1e-12), name
    assert ours["pipeline/slides_processed"] == theirs["pipeline/slides_processed"] == 5
