"""``benchmark_throughput``: DataLoader patches/s of a dataset factory, on one rank or on
several under ``torch.distributed``, with sound measures (``BenchmarkResult``)."""

from __future__ import annotations

import itertools
import json
import os
import pickle
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, IterableDataset

from .monitor import batch_size_of

# wsistream's factory: (slide_paths, pool_size, patches_per_slide, patches_per_visit, seed)
MakeDataset = Callable[[list[str], int, int, int, int], IterableDataset[Any]]


class PssMonitor:
    """Peak PSS (proportional set size: shared pages split between the processes sharing
    them, so forked workers are not counted N times) of this process and its descendants,
    sampled every ``interval`` s in a thread. ``peak_mb`` is None without psutil."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.peak_mb: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wsi-pss", daemon=True)

    def sample(self) -> float | None:
        try:
            import psutil
        except ImportError:
            return None
        me = psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_full_info().pss
            except (psutil.Error, OSError, AttributeError):
                continue
        return total / 2**20

    def _run(self) -> None:
        while True:
            value = self.sample()
            if value is not None:
                self.peak_mb = max(self.peak_mb or 0.0, value)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PssMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class BenchmarkResult:
    """One configuration. Rates are over the measured window, which starts on every rank
    at one barrier; ``effective_sync_throughput`` is the slowest rank's patches/s times the
    world size (what synchronous DDP gets), ``aggregate_throughput`` the sum over ranks.
    Batch times and memory (peak PSS of a rank's process and its workers; the total sums
    the ranks) are per rank; ``time_to_first_batch_s`` is the slowest rank's."""

    num_workers: int
    world_size: int
    pool_size: int
    patches_per_slide: int
    patches_per_visit: int
    batch_size: int
    per_rank_patches_per_sec: list[float]
    per_rank_batch_times_ms: list[list[float]]
    per_rank_time_to_first_batch_s: list[float]
    per_rank_peak_pss_mb: list[float | None]
    effective_sync_throughput: float
    aggregate_throughput: float
    p50_batch_ms: float
    p95_batch_ms: float
    time_to_first_batch_s: float
    total_patches: int
    window_s: float
    peak_pss_mb: float | None


def _measure(make_dataset: MakeDataset, slides: list[str], cfg: dict[str, Any],
             barrier: Callable[[], None]) -> dict[str, Any]:
    dataset = make_dataset(slides, cfg["pool_size"], cfg["patches_per_slide"],
                           cfg["patches_per_visit"], cfg["seed"])
    if getattr(dataset, "cycle", True) is False:
        raise ValueError("benchmark_throughput needs an endless dataset: make_dataset must "
                         "build it with cycle=True")
    kwargs: dict[str, Any] = {"batch_size": cfg["batch_size"], "num_workers": cfg["num_workers"],
                              "pin_memory": cfg["pin_memory"]}
    if cfg["num_workers"] > 0:
        kwargs.update(persistent_workers=cfg["persistent_workers"],
                      multiprocessing_context=cfg["multiprocessing_context"],
                      prefetch_factor=cfg["prefetch_factor"])
    loader = DataLoader(dataset, **kwargs)
    taken = 0
    times: list[float] = []
    with PssMonitor() as memory:
        t_start = time.perf_counter()
        it = iter(loader)
        try:
            next(it)
            taken, first = 1, time.perf_counter() - t_start
            while taken < cfg["warmup_batches"]:
                next(it)
                taken += 1
            barrier()
            patches = 0
            t0 = time.perf_counter()
            while len(times) < cfg["measure_batches"]:
                tb = time.perf_counter()
                patches += batch_size_of(next(it))
                times.append((time.perf_counter() - tb) * 1000)
            window = time.perf_counter() - t0
        except StopIteration:
            raise RuntimeError(f"the dataset ended after {taken + len(times)} batches: "
                               "benchmark an endless one (cycle=True)") from None
        finally:
            del it
        barrier()
    return {"patches": patches, "window_s": window, "batch_ms": times, "first_s": first,
            "pss_mb": memory.peak_mb}


def _rank_main(rank: int, world: int, port: int, out: str, make_dataset: MakeDataset,
               slides: list[str], cfg: dict[str, Any]) -> None:
    import torch.distributed as dist

    from .ranks import partition_slides_by_rank

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        mine = partition_slides_by_rank(slides, rank, world)
        result = _measure(make_dataset, mine, cfg, dist.barrier)
        with open(os.path.join(out, f"rank-{rank}.json"), "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(make_dataset: MakeDataset, slides: list[str], cfg: dict[str, Any],
         world: int) -> BenchmarkResult:
    if world == 1:
        ranks = [_measure(make_dataset, slides, cfg, lambda: None)]
    else:
        from torch.multiprocessing.spawn import spawn

        with tempfile.TemporaryDirectory(prefix="wsi_streamer-bench-") as out:
            spawn(_rank_main, args=(world, _free_port(), out, make_dataset, slides, cfg),
                  nprocs=world, join=True)  # type: ignore[no-untyped-call]
            ranks = []
            for r in range(world):
                with open(os.path.join(out, f"rank-{r}.json")) as f:
                    ranks.append(json.load(f))
    rates = [r["patches"] / r["window_s"] for r in ranks]
    all_ms = [t for r in ranks for t in r["batch_ms"]]
    pss = [r["pss_mb"] for r in ranks]
    return BenchmarkResult(
        num_workers=cfg["num_workers"], world_size=world, pool_size=cfg["pool_size"],
        patches_per_slide=cfg["patches_per_slide"], patches_per_visit=cfg["patches_per_visit"],
        batch_size=cfg["batch_size"], per_rank_patches_per_sec=rates,
        per_rank_batch_times_ms=[r["batch_ms"] for r in ranks],
        per_rank_time_to_first_batch_s=[r["first_s"] for r in ranks],
        per_rank_peak_pss_mb=pss, effective_sync_throughput=min(rates) * world,
        aggregate_throughput=sum(rates), p50_batch_ms=float(np.percentile(all_ms, 50)),
        p95_batch_ms=float(np.percentile(all_ms, 95)),
        time_to_first_batch_s=max(r["first_s"] for r in ranks),
        total_patches=sum(r["patches"] for r in ranks),
        window_s=max(r["window_s"] for r in ranks),
        peak_pss_mb=None if None in pss else sum(p for p in pss if p is not None))


def _as_list(value: int | Sequence[int]) -> list[int]:
    return [value] if isinstance(value, int) else list(value)


def benchmark_throughput(make_dataset: MakeDataset, slide_paths: Any,
                         num_workers: int | Sequence[int] = 4, world_size: int = 1,
                         pool_size: int | Sequence[int] = 8,
                         patches_per_slide: int | Sequence[int] = 100,
                         patches_per_visit: int | Sequence[int] = 1, batch_size: int = 64,
                         warmup_batches: int = 10, measure_batches: int = 50,
                         prefetch_factor: int | None = 2, persistent_workers: bool = False,
                         pin_memory: bool = False, multiprocessing_context: str | None = None,
                         seed: int = 42, verbose: bool = True, *,
                         storage_options: dict[str, Any] | None = None
                         ) -> list[BenchmarkResult]:
    """wsistream's sweep (every combination of the list arguments) with sound measures (see
    ``BenchmarkResult``). ``make_dataset(slides, pool_size, patches_per_slide,
    patches_per_visit, seed)`` must give an endless dataset; with ``world_size > 1`` it must
    be picklable (a module-level function): ``world_size`` processes are started
    (``torch.multiprocessing.spawn``, gloo on loopback), each given its ``RankPartition``
    (so wsistream's ``WsiStreamDataset`` can be measured the same way). Workers start the
    platform's default way (wsistream's default is "spawn", whose start-up counts in the
    time to first batch). The first batch is never in the measured window (its time is the
    time to first batch), so ``warmup_batches`` counts it and may be 0. Raises ``ValueError``
    for a dataset built with ``cycle=False``, ``RuntimeError`` when there are fewer slides
    than ranks, ``TypeError`` for an unpicklable factory with ``world_size > 1``. Prints one
    line per configuration when ``verbose``."""
    from ..sources import S3Options, resolve_slide_paths

    slides = resolve_slide_paths(slide_paths, options=S3Options.from_mapping(storage_options))
    configs = list(itertools.product(_as_list(num_workers), _as_list(pool_size),
                                     _as_list(patches_per_slide), _as_list(patches_per_visit)))
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if len(slides) < world_size:
        raise RuntimeError(f"All {len(configs)} configurations failed: each of the "
                           f"{world_size} ranks needs a slide, and there are {len(slides)}")
    if warmup_batches < 0 or measure_batches < 1:
        raise ValueError("warmup_batches must be >= 0 and measure_batches >= 1")
    if world_size > 1:
        try:
            pickle.dumps(make_dataset)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise TypeError(f"make_dataset {make_dataset!r} is not picklable: with "
                            "world_size > 1 it goes to spawned processes; define it at "
                            "module level") from exc
    results = []
    for nw, ps, pps, ppv in configs:
        cfg = {"num_workers": nw, "pool_size": ps, "patches_per_slide": pps,
               "patches_per_visit": ppv, "batch_size": batch_size, "seed": seed,
               "warmup_batches": warmup_batches, "measure_batches": measure_batches,
               "prefetch_factor": prefetch_factor, "persistent_workers": persistent_workers,
               "pin_memory": pin_memory, "multiprocessing_context": multiprocessing_context}
        result = _run(make_dataset, slides, cfg, world_size)
        results.append(result)
        if verbose:
            print(_row(result))
    return results


def _row(r: BenchmarkResult) -> str:
    pss = f"{r.peak_pss_mb:.0f} MB" if r.peak_pss_mb is not None else "n/a"
    return (f"workers={r.num_workers} world={r.world_size} pool={r.pool_size} "
            f"pps={r.patches_per_slide} ppv={r.patches_per_visit}: effective "
            f"{r.effective_sync_throughput:.0f}/s, aggregate {r.aggregate_throughput:.0f}/s, "
            f"batch p50 {r.p50_batch_ms:.1f} ms p95 {r.p95_batch_ms:.1f} ms, first batch "
            f"{r.time_to_first_batch_s:.2f} s, PSS {pss}")


def result_json(result: BenchmarkResult) -> str:
    return json.dumps(asdict(result))
