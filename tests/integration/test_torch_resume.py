"""Preemption: ``WsiStreamDataset`` under torchdata's ``StatefulDataLoader``. A job killed
after step k (SIGKILL to every process of a real ``torchrun``, 2 ranks x 2 workers, gloo) and
resumed from its checkpoint file yields steps k+1..n exactly as an uninterrupted run (slides,
coordinates, levels, mpp, pixel hashes); the same in one process with 0 and 3 workers,
persistent or not; and a 2 x 2 checkpoint continued on 1 rank x 3 workers and on 3 ranks x 1
worker consumes every slide's budget exactly once over the epoch."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from itertools import islice
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchdata")
psutil = pytest.importorskip("psutil")

from torchdata.stateful_dataloader import StatefulDataLoader  # noqa: E402

from tests.conftest import REPO_ROOT  # noqa: E402
from tests.fixtures.patch_slides import write_islands_svs  # noqa: E402
from wsi_streamer.errors import ResumeStateError  # noqa: E402
from wsi_streamer.patches import RandomSampler  # noqa: E402
from wsi_streamer.patches.torch import WsiStreamDataset  # noqa: E402

# torchdata 0.11 calls torch.set_vital, deprecated in torch 2.13; 3 workers on 2 cores warn
pytestmark = [pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning"),
              pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")]
BUDGET = 4
RANK_SCRIPT = '''
import hashlib, json, os, sys, time
import torch.distributed as dist
from torchdata.stateful_dataloader import StatefulDataLoader
from wsi_streamer.patches import RandomSampler
from wsi_streamer.patches.torch import WsiStreamDataset

def rows(batch):
    return [[s, int(x), int(y), int(l), float(m),
             hashlib.sha1(batch["image"][i].numpy().tobytes()).hexdigest()]
            for i, (s, x, y, l, m) in enumerate(zip(batch["slide_path"], batch["x"],
                                                    batch["y"], batch["level"], batch["mpp"]))]

def loader_for(source, cache):
    dataset = WsiStreamDataset(source, sampler=RandomSampler(64), thumbnail_size=(512, 512),
                               pool_size=2, patches_per_slide=4, seed=11, output_dtype="uint8",
                               cache_dir=cache, prefetch=8, io_threads=2)
    return dataset, StatefulDataLoader(dataset, batch_size=3, num_workers=2)

def steps(dataset, loader, upto, out=None):
    dataset.set_epoch(0)
    got = []
    for batch in loader:
        got.append(rows(batch))
        if out is not None:
            out(len(got), loader)
        if len(got) == upto:
            break
    return got

def main():
    source, cache, folder, mode, k, n = sys.argv[1:7]
    k, n = int(k), int(n)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    ckpt = os.path.join(folder, f"ckpt-{rank}.json")
    dataset, loader = loader_for(source, cache)
    if mode == "kill":
        def save(step, loader):
            if step == k:  # the model checkpoint's step: the loader state goes with it
                with open(ckpt + ".tmp", "w") as f:
                    json.dump({"step": step, "loader": loader.state_dict()}, f)
                os.replace(ckpt + ".tmp", ckpt)
        steps(dataset, loader, n, save)
        with open(os.path.join(folder, f"ready-{rank}"), "w") as f:
            f.write("ok")
        time.sleep(600)  # killed here, workers and all
    with open(ckpt) as f:
        saved = json.load(f)
    loader.load_state_dict(saved["loader"])
    resumed = steps(dataset, loader, n - saved["step"])
    fresh_dataset, fresh = loader_for(source, cache)
    reference = steps(fresh_dataset, fresh, n)
    with open(os.path.join(folder, f"rank-{rank}.json"), "w") as f:
        json.dump({"resumed": resumed, "reference": reference}, f)
    dist.barrier()
    dist.destroy_process_group()

main()
'''


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("resume-slides")
    return [str(write_islands_svs(folder, f"case-{i}.svs", width=1024, height=768, seed=i,
                                  downsamples=(1, 4))) for i in range(8)]


def torchrun(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT),
           "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node=2", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def kill_tree(proc: subprocess.Popen[str]) -> int:
    """SIGKILL torchrun and every process under it (ranks run in their own process groups,
    so a group kill would miss them); returns how many were killed."""
    victims = [proc.pid, *(p.pid for p in psutil.Process(proc.pid).children(recursive=True))]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(10)
    assert proc.stdout is not None
    proc.stdout.close()
    return len(victims)


@pytest.mark.timeout(300)
def test_torchrun_sigkill_after_step_k_resumes_steps_k1_to_n_exactly(slides, tmp_path):
    script = tmp_path / "rank_script.py"
    script.write_text(RANK_SCRIPT)
    source, cache, k, n = str(Path(slides[0]).parent), str(tmp_path / "cache"), 2, 5
    args = [str(script), source, cache, str(tmp_path)]
    job = torchrun([*args, "kill", str(k), str(n)], tmp_path)
    try:
        deadline = time.monotonic() + 150
        while not all((tmp_path / f"ready-{r}").exists() for r in range(2)):
            assert job.poll() is None, job.communicate()[0][-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert kill_tree(job) >= 1 + 2 + 2 * 2  # torchrun, 2 ranks, their 4 workers
    finally:
        if job.poll() is None:
            kill_tree(job)
    resumed = torchrun([*args, "resume", str(k), str(n)], tmp_path)
    try:
        out = resumed.communicate(timeout=150)[0]
    finally:
        if resumed.poll() is None:
            kill_tree(resumed)
    assert resumed.returncode == 0, out[-3000:]
    for rank in range(2):
        result = json.loads((tmp_path / f"rank-{rank}.json").read_text())
        assert len(result["reference"]) == n
        assert result["resumed"] == result["reference"][k:]  # slide, x, y, level, mpp, pixels


def make(slides: list[str], tmp_path: Path, **kwargs: Any) -> WsiStreamDataset:
    args: dict[str, Any] = dict(sampler=RandomSampler(64), thumbnail_size=(512, 512),
                                pool_size=2, patches_per_slide=BUDGET, seed=5,
                                output_dtype="uint8", cache_dir=str(tmp_path / "cache"),
                                prefetch=8, io_threads=2)
    args.update(kwargs)
    return WsiStreamDataset(slides, **args)


def rows(batch: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(s, int(x), int(y), int(lv), float(m),
             hashlib.sha1(batch["image"][i].numpy().tobytes()).hexdigest())
            for i, (s, x, y, lv, m) in enumerate(zip(batch["slide_path"], batch["x"],
                                                    batch["y"], batch["level"], batch["mpp"],
                                                    strict=True))]


def steps(dataset: WsiStreamDataset, loader: Any, upto: int | None, epoch: int = 0
          ) -> list[list[tuple[Any, ...]]]:
    dataset.set_epoch(epoch)
    got = []
    for batch in loader:
        got.append(rows(batch))
        if len(got) == upto:
            break
    return got


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("workers", "persistent"), [(0, False), (3, False), (3, True)])
def test_stateful_loader_resumes_exactly(slides, tmp_path, workers, persistent):
    def loader(dataset: WsiStreamDataset) -> StatefulDataLoader:
        return StatefulDataLoader(dataset, batch_size=3, num_workers=workers,
                                  persistent_workers=persistent)

    reference_set = make(slides[:5], tmp_path, cycle=False)
    reference_loader = loader(reference_set)
    reference = steps(reference_set, reference_loader, None)
    reference_next = steps(reference_set, reference_loader, 3, epoch=1)
    k = 4
    first = make(slides[:5], tmp_path, cycle=False)
    first_loader = loader(first)
    assert steps(first, first_loader, k) == reference[:k]
    state = json.loads(json.dumps(first_loader.state_dict()))
    del first_loader
    second = make(slides[:5], tmp_path, cycle=False)
    second_loader = loader(second)
    second_loader.load_state_dict(state)
    tail = steps(second, second_loader, None)
    assert tail == reference[k:]
    # the counts of patches handed out go on from the checkpoint's (each worker's state)
    assert second.stats_dict()["pipeline/patches_extracted"] == sum(map(len, reference))
    assert steps(second, second_loader, 3, epoch=1) == reference_next  # and the next epoch


def old_topology(slides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, k: int,
                 **kwargs: Any) -> tuple[list[Any], Counter[str]]:
    """Two ranks x two workers, each stopped after k steps: their loader states and the
    patches their trainers had, per slide."""
    states, counts = [], Counter[str]()
    kwargs.setdefault("cycle", False)
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        dataset = make(slides, tmp_path, **kwargs)
        loader = StatefulDataLoader(dataset, batch_size=2, num_workers=2)
        for step in steps(dataset, loader, k):
            counts.update(row[0] for row in step)
        states.append(json.loads(json.dumps(loader.state_dict())))
    return states, counts


@pytest.mark.timeout(300)
def test_elastic_resume_on_other_topologies_consumes_each_budget_once(slides, tmp_path,
                                                                      monkeypatch):
    states, before = old_topology(slides, tmp_path, monkeypatch, k=3)
    assert 0 < sum(before.values()) < BUDGET * len(slides)
    for world, workers in ((1, 3), (3, 1)):
        counts = Counter(before)
        for rank in range(world):
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("WORLD_SIZE", str(world))
            dataset = make(slides, tmp_path, cycle=False)
            dataset.load_state_dict(states)  # every old rank's state, in rank order
            dataset.set_epoch(0)
            loader = StatefulDataLoader(dataset, batch_size=2, num_workers=workers)
            for step in steps(dataset, loader, None):
                counts.update(row[0] for row in step)
        assert counts == {path: BUDGET for path in slides}, (world, workers)
    with pytest.raises(ResumeStateError, match="exactly once"):
        WsiStreamDataset.merge_states(states[:1])
    with pytest.raises(ResumeStateError, match="recipe"):
        make(slides, tmp_path, cycle=False, patches_per_slide=5).load_state_dict(states)


def first_passes(slides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 states: list[Any], world: int, workers: int, **kwargs: Any) -> Counter[str]:
    """The patches of every new (rank, worker) stream's first pass (the budgets the old
    topology left; its state lists them), each stream run in this process as its worker
    would run it. With ``patches_per_visit`` = the budget, a stream takes its slides one
    after the other, so its first pass is its first patches."""
    counts = Counter[str]()
    monkeypatch.setenv("WORLD_SIZE", str(world))
    for rank in range(world):
        monkeypatch.setenv("RANK", str(rank))
        for worker in range(workers):
            monkeypatch.setattr(torch.utils.data, "get_worker_info",
                                lambda w=worker: SimpleNamespace(id=w, num_workers=workers))
            dataset = make(slides, tmp_path, **kwargs)
            dataset.load_state_dict(states)
            dataset.set_epoch(0)
            stream = iter(dataset)
            first = next(stream)
            passed = dataset.state_dict()["pipeline"]["run"]["pass"]
            size = sum(n for _, n in passed["explicit"]) if passed["number"] == 0 else 0
            got = [first, *islice(stream, size - 1)] if size else []
            counts.update(item["slide_path"] for item in got)
            stream.close()  # type: ignore[attr-defined]
    return counts


@pytest.mark.timeout(300)
def test_elastic_resume_of_endless_streams_completes_every_pass_begun(slides, tmp_path,
                                                                      monkeypatch):
    """cycle=True: an old stream's pool may still hold a slide of its previous pass when it
    is checkpointed; over old and new topology, each pass an old stream began gives every
    slide of its shard its budget exactly (the new streams' first pass completes them)."""
    endless: dict[str, Any] = dict(cycle=True, patches_per_visit=BUDGET,
                                   open_patience=None)  # no timing in the order
    states, before = old_topology(slides, tmp_path, monkeypatch, k=5, **endless)
    passes: dict[str, int] = {}
    for slot in WsiStreamDataset.merge_states(states)["slots"]:
        shard = make(slides, tmp_path, **endless).slides_for(
            slot["rank"], slot["world_size"], slot["worker"], slot["num_workers"], 0)
        number = slot["pipeline"]["run"]["pass"]["number"]
        passes.update({path: number + 1 for path in shard})
    assert sorted(passes.values()) == [1] * 4 + [2] * 4  # worker 0 of each rank: 2 passes
    for world, workers in ((1, 3), (3, 1)):
        counts = before + first_passes(slides, tmp_path, monkeypatch, states, world, workers,
                                       **endless)
        assert counts == {path: BUDGET * passes[path] for path in slides}, (world, workers)


@pytest.mark.timeout(300)
def test_elastic_pools_repeat_no_grid_position(slides, tmp_path, monkeypatch):
    pools = dict(replacement="without_replacement", sampler=RandomSampler(256))
    states, _ = old_topology(slides[:4], tmp_path, monkeypatch, k=2, **pools)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    dataset = make(slides[:4], tmp_path, cycle=False, **pools)
    dataset.load_state_dict(states)
    positions = [row[:3] for step in steps(dataset, StatefulDataLoader(dataset, batch_size=2),
                                           None) for row in step]
    assert positions and len(positions) == len(set(positions))


@pytest.mark.timeout(300)
def test_plain_dataloader_resumes_from_a_step_count(slides, tmp_path):
    from torch.utils.data import DataLoader

    reference_set = make(slides[:5], tmp_path)  # endless
    reference = steps(reference_set, DataLoader(reference_set, batch_size=3, num_workers=2), 9)
    resumed = make(slides[:5], tmp_path)
    resumed.set_epoch(0)
    resumed.skip_steps(5, batch_size=3)
    assert steps(resumed, DataLoader(resumed, batch_size=3, num_workers=2), 4) == reference[5:]


@pytest.mark.timeout(300)
def test_an_unseeded_dataset_resumes_with_its_own_entropy(slides, tmp_path):
    first = make(slides[:5], tmp_path, seed=None)
    loader = StatefulDataLoader(first, batch_size=3)
    first.set_epoch(0)
    stream = iter(loader)
    for _ in range(2):
        next(stream)
    state = json.loads(json.dumps(loader.state_dict()))
    going_on = [rows(next(stream)) for _ in range(3)]
    second = make(slides[:5], tmp_path, seed=None)
    resumed = StatefulDataLoader(second, batch_size=3)
    resumed.load_state_dict(state)
    assert steps(second, resumed, 3) == going_on
