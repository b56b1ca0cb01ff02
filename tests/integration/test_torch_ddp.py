"""WsiStreamDataset under real ``torchrun`` (``python -m torch.distributed.run``, gloo on CPU,
2 ranks x 2 DataLoader workers) over an ``s3://`` prefix on a loopback moto server: the rank
split, distinct streams, epochs, reproducibility in fresh processes, the DDP example, and
``benchmark_throughput`` with two ranks. The slides have identical pixels under different
keys, so two (rank, worker) streams that shared a seed would give the same coordinates."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from tests.conftest import REPO_ROOT, S3Bucket  # noqa: E402
from tests.fixtures.patch_slides import write_islands_svs  # noqa: E402
from wsi_streamer.patches import RandomSampler  # noqa: E402
from wsi_streamer.patches.torch import WsiStreamDataset, benchmark_throughput  # noqa: E402

N_SLIDES = 8
RANK_SCRIPT = '''
import hashlib, json, os, sys
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from wsi_streamer.patches import RandomSampler
from wsi_streamer.patches.torch import WsiStreamDataset

class Tagged(IterableDataset):
    def __init__(self, inner):
        self.inner = inner
    def __iter__(self):
        worker = get_worker_info().id
        for item in self.inner:
            item["worker"] = worker
            yield item

def main():
    source, endpoint, out, seed, cache = sys.argv[1:6]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    dataset = WsiStreamDataset(source, sampler=RandomSampler(64), thumbnail_size=(512, 512),
                               patches_per_slide=3, cycle=False, seed=int(seed),
                               output_dtype="uint8", storage_options={"endpoint_url": endpoint},
                               cache_dir=cache, prefetch=8, io_threads=4)
    loader = DataLoader(Tagged(dataset), batch_size=4, num_workers=2)
    result = {"rank": rank}
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        rows = []
        for batch in loader:
            for i, slide in enumerate(batch["slide_path"]):
                digest = hashlib.sha1(batch["image"][i].numpy().tobytes()).hexdigest()
                rows.append([slide, int(batch["x"][i]), int(batch["y"][i]),
                             int(batch["level"][i]), int(batch["worker"][i]), digest])
        result[str(epoch)] = rows
    result["stats"] = dataset.stats_dict()
    with open(os.path.join(out, f"rank-{rank}.json"), "w") as f:
        json.dump(result, f)
    dist.barrier()
    dist.destroy_process_group()

main()
'''


@pytest.fixture(scope="module")
def local_slides(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("ddp-slides")
    first = write_islands_svs(folder, "case-0.svs", width=1024, height=768, seed=0,
                              downsamples=(1, 4))
    data = first.read_bytes()
    paths = [str(first)]
    for i in range(1, N_SLIDES):
        (folder / f"case-{i}.svs").write_bytes(data)
        paths.append(str(folder / f"case-{i}.svs"))
    return paths


@pytest.fixture
def s3_prefix(s3_bucket: S3Bucket, local_slides: list[str]) -> str:
    for path in local_slides:
        s3_bucket.client.upload_file(path, s3_bucket.name, f"cohort/{Path(path).name}")
    return f"s3://{s3_bucket.name}/cohort/"


def torchrun(args: list[str], tmp_path: Path, timeout: float = 150, ok: bool = True,
             ranks: int = 2) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT),
           "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={ranks}", *args]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert (done.returncode == 0) == ok, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout if ok else done.stdout + done.stderr


def run_ranks(tmp_path: Path, name: str, s3_prefix: str, endpoint: str, seed: int
              ) -> list[dict[str, Any]]:
    script = tmp_path / "rank_script.py"
    script.write_text(RANK_SCRIPT)
    out = tmp_path / name
    out.mkdir()
    torchrun([str(script), s3_prefix, endpoint, str(out), str(seed), str(tmp_path / "cache")],
             tmp_path)
    return [json.loads((out / f"rank-{r}.json").read_text()) for r in range(2)]


@pytest.mark.timeout(300)
def test_torchrun_split_streams_epochs_and_reproducibility(tmp_path, s3_prefix, moto_server):
    first = run_ranks(tmp_path, "first", s3_prefix, moto_server, seed=21)
    every = {f"{s3_prefix}case-{i}.svs" for i in range(N_SLIDES)}
    splits = []
    for epoch in ("0", "1"):
        per_rank = [{row[0] for row in rank[epoch]} for rank in first]
        assert per_rank[0].isdisjoint(per_rank[1]) and per_rank[0] | per_rank[1] == every
        counts = Counter(row[0] for rank in first for row in rank[epoch])
        assert counts == {slide: 3 for slide in every}  # each slide once, its whole budget
        shards = {(rank["rank"], row[4]): set() for rank in first for row in rank[epoch]}
        for rank in first:
            for row in rank[epoch]:
                shards[(rank["rank"], row[4])].add(row[0])
        assert len(shards) == 4  # 2 ranks x 2 workers, all with slides
        splits.append(shards)
        # identical pixels under every key: equal seeds would give equal coordinates
        streams = {key: tuple((row[1], row[2]) for rank in first for row in rank[epoch]
                              if (rank["rank"], row[4]) == key) for key in shards}
        assert len(set(streams.values())) == 4
    assert splits[0] != splits[1]  # set_epoch(1): another split
    coords = [{(row[0], row[1], row[2]) for rank in first for row in rank[e]} for e in "01"]
    assert coords[0] != coords[1]  # and other patches
    assert first[0]["stats"]["pipeline/patches_extracted"] == len(first[0]["0"]) + len(
        first[0]["1"])

    second = run_ranks(tmp_path, "second", s3_prefix, moto_server, seed=21)
    for epoch in ("0", "1"):
        def multiset(run: list[dict[str, Any]], e: str = epoch) -> Counter[tuple[Any, ...]]:
            return Counter((row[0], row[1], row[2], row[3], row[5]) for rank in run
                           for row in rank[e])
        assert multiset(first) == multiset(second)  # coordinates and pixels


@pytest.mark.timeout(300)
def test_train_ddp_example_keeps_replicas_in_sync(tmp_path, s3_prefix, moto_server):
    """Two ranks with a checkpoint every 2 steps, then ``--resume`` on one rank: the last
    checkpoint (epoch 1 step 2) goes on over the new topology (the elastic form)."""
    example = [str(REPO_ROOT / "examples" / "train_ddp.py"), s3_prefix, "--recipe",
               "prov_gigapath", "--s3-endpoint", moto_server, "--epochs", "2", "--steps", "3",
               "--batch-size", "4", "--workers", "2", "--log-every", "3", "--thumbnail-size",
               "512", "--checkpoint", str(tmp_path / "ckpt"), "--save-every", "2"]
    out = torchrun(example, tmp_path)
    assert "parameters in sync across 2 rank(s): True" in out
    assert "epoch 1 step 3" in out
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["rank-0.pt", "rank-1.pt"]
    out = torchrun([*example, "--resume"], tmp_path, ranks=1)
    assert "1 rank(s)" in out and "resumed at epoch 1 step 2" in out
    assert "trained to epoch 1 step 3" in out and "epoch 0" not in out


@pytest.mark.timeout(300)
def test_train_ddp_example_fails_when_no_patch_can_be_read(tmp_path, s3_prefix, moto_server):
    """uni's CLAM detector finds no tissue on these 1024x768 slides: the run fails (it
    exited 0 after "0 patches read by all ranks")."""
    out = torchrun([str(REPO_ROOT / "examples" / "train_ddp.py"), s3_prefix, "--recipe",
                    "uni", "--s3-endpoint", moto_server, "--epochs", "1", "--steps", "3",
                    "--batch-size", "4", "--workers", "2", "--thumbnail-size", "512"],
                   tmp_path, ok=False)
    assert "NoPatchesError" in out and "can never yield" in out
    assert "parameters in sync" not in out


def _bench_dataset(cache_dir: str, paths: list[str], pool_size: int, patches_per_slide: int,
                   patches_per_visit: int, seed: int) -> WsiStreamDataset:
    return WsiStreamDataset(paths, sampler=RandomSampler(64), thumbnail_size=(512, 512),
                            pool_size=pool_size, patches_per_slide=patches_per_slide,
                            patches_per_visit=patches_per_visit, seed=seed,
                            cache_dir=cache_dir, prefetch=8, io_threads=4)


@pytest.mark.timeout(300)
def test_benchmark_two_ranks_one_window(local_slides, tmp_path):
    (result,) = benchmark_throughput(functools.partial(_bench_dataset, str(tmp_path / "c")),
                                     local_slides, num_workers=1, world_size=2, pool_size=2,
                                     patches_per_slide=10, batch_size=8, warmup_batches=2,
                                     measure_batches=5, multiprocessing_context="fork",
                                     verbose=False)
    assert result.world_size == 2 and len(result.per_rank_patches_per_sec) == 2
    assert result.total_patches == 2 * 5 * 8
    assert result.effective_sync_throughput == pytest.approx(
        2 * min(result.per_rank_patches_per_sec))
    assert result.aggregate_throughput >= result.effective_sync_throughput
    assert all(p is not None and p > 10 for p in result.per_rank_peak_pss_mb)
    assert result.time_to_first_batch_s == max(result.per_rank_time_to_first_batch_s)
