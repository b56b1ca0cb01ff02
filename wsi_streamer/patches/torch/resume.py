"""``WsiStreamDataset``'s resumable state: torchdata's ``Stateful`` protocol, so that
``torchdata.stateful_dataloader.StatefulDataLoader`` checkpoints and restores each worker's
stream exactly, and the elastic form (``merge_states``) that continues an epoch on another
number of ranks or workers.

A (rank, worker) stream's state is its (epoch, iteration), its place in the topology and its
pipeline's ``state_dict`` (``pipeline_state.py``). Restored on the same topology, the stream
goes on exactly (same slides, coordinates and pixels). Restored on another one, the budget
each slide had left in the current pass of its old stream (attempts not yet consumed) is
split over the new streams as their first pass (``PatchPipeline.first_pass``), with the
``without_replacement`` pools as they stood; then each new stream goes on with its own
shard (``cycle=True``) or ends (``cycle=False``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ...errors import ResumeStateError
from ..pipeline import PatchPipeline
from ..resume import (
    STATE_VERSION,
    PoolState,
    RunState,
    describe_config,
    digest,
    run_from_json,
    seed_to_json,
)

DATASET_KIND = "wsi_streamer.patches.WsiStreamDataset"
MERGED_KIND = "wsi_streamer.patches.WsiStreamDataset.merged"
# Arguments that do not shape the stream (a resume may change them).
NOT_RECIPE = ("storage_options", "cache_dir", "prefetch", "io_threads", "on_error",
              "open_timeout", "open_patience", "backend")


@dataclass
class ActiveStream:
    """The stream this process's last ``iter(dataset)`` runs."""

    epoch: int
    iteration: int
    rank: int
    world_size: int
    worker: int
    num_workers: int
    pipeline: PatchPipeline | None = None


@dataclass
class ResumePlan:
    """What a new stream takes from a saved state: its pipeline's state (same topology), or
    a first pass of (slide, budget left) and slide pools (elastic)."""

    pipeline_state: Mapping[str, Any] | None = None
    first_pass: tuple[tuple[str, int], ...] | None = None
    pools: dict[str, PoolState] = field(default_factory=dict)
    skip: int = 0  # items to drop first (a plain DataLoader's resume, ``skip_steps``)

    def apply(self, pipeline: PatchPipeline) -> None:
        if self.pipeline_state is not None:
            pipeline.load_state_dict(self.pipeline_state)
        if self.first_pass is not None:
            pipeline.first_pass = self.first_pass
            pipeline.adopt_pools(self.pools)


@dataclass
class Elastic:
    """A merged epoch to continue: (slide, budget left) in dataset order, slide pools."""

    epoch: int
    iteration: int
    remaining: list[tuple[str, int]]
    pools: dict[str, PoolState]


def find_dataset_states(state: Any) -> list[dict[str, Any]]:
    """Every ``WsiStreamDataset`` stream state inside ``state`` (a ``StatefulDataLoader``
    state with any number of workers, a list of them, or dataset states), depth first."""
    found: list[dict[str, Any]] = []
    if isinstance(state, Mapping):
        if state.get("kind") == DATASET_KIND:
            found.append(dict(state))
        elif state.get("kind") == MERGED_KIND:
            found.extend(dict(s) for s in state.get("slots", ()))
        else:
            for value in state.values():
                found.extend(find_dataset_states(value))
    elif isinstance(state, (list, tuple)):
        for value in state:
            found.extend(find_dataset_states(value))
    return found


def merge_states(states: Sequence[Any]) -> dict[str, Any]:
    """One state of a whole old topology from the ``StatefulDataLoader.state_dict()`` of
    each of its ranks (rank order), for ``WsiStreamDataset.load_state_dict`` on any new one.
    ``ResumeStateError`` unless every (rank, worker) stream is there exactly once and all
    are of one dataset, one epoch and one topology."""
    slots = [s for s in find_dataset_states(list(states)) if s.get("rank") is not None]
    if not slots:
        raise ResumeStateError("no WsiStreamDataset stream state in the states given (were "
                               "they taken from a StatefulDataLoader that had started?)")
    first = slots[0]
    keys = ("version", "sources", "recipe", "seed", "epoch", "iteration", "world_size",
            "num_workers")
    for slot in slots:
        differ = [k for k in keys if slot.get(k) != first.get(k)]
        if differ:
            raise ResumeStateError(f"the states are not of one dataset, epoch and topology: "
                                   f"{', '.join(differ)} differ")
    grid = sorted((int(s["rank"]), int(s["worker"])) for s in slots)
    world, workers = int(first["world_size"]), int(first["num_workers"])
    expected = [(r, w) for r in range(world) for w in range(workers)]
    if grid != expected:
        raise ResumeStateError(f"{len(grid)} stream states for {world} rank(s) x {workers} "
                               f"worker(s): each (rank, worker) is needed exactly once")
    ordered = sorted(slots, key=lambda s: (int(s["rank"]), int(s["worker"])))
    return {"version": STATE_VERSION, "kind": MERGED_KIND, "slots": ordered}


def fingerprint(slide_paths: list[str], kwargs: Mapping[str, Any], output_dtype: str,
                seed: Any) -> dict[str, Any]:
    recipe = {k: v for k, v in kwargs.items() if k not in NOT_RECIPE}
    recipe["backend"] = type(kwargs.get("backend")).__name__
    recipe["output_dtype"] = output_dtype
    root = None if seed is None else seed_to_json(
        seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed))
    return {"sources": digest("\n".join(slide_paths)), "recipe": digest(describe_config(recipe)),
            "seed": root}


def check_fingerprint(state: Mapping[str, Any], mine: Mapping[str, Any]) -> None:
    if state.get("version") != STATE_VERSION:
        raise ResumeStateError(f"dataset state version {state.get('version')!r}; this "
                               f"release reads version {STATE_VERSION}")
    if state.get("sources") != mine["sources"]:
        raise ResumeStateError("the saved state is of other sources (another slide list)")
    if state.get("recipe") != mine["recipe"]:
        raise ResumeStateError("the saved state is of another recipe (components, schedule "
                               "arguments or output_dtype differ)")
    if state.get("seed") != mine["seed"]:
        raise ResumeStateError("the saved state is of another seed")


def pass_order(shard: list[str], run: RunState, slide_sampling: str) -> list[str]:
    """The slides of ``run``'s current pass, in its order (as the engine drew them)."""
    if run.passed.explicit is not None:
        return [path for path, _ in run.passed.explicit]
    paths = [p for p in shard if p not in run.passed.failed]
    if slide_sampling != "random":
        return paths
    rng = np.random.default_rng()
    rng.bit_generator.state = run.passed.order_state
    return [paths[int(i)] for i in rng.permutation(len(paths))]


def budgets_left(shard: list[str], state: Mapping[str, Any], patches_per_slide: int,
                 slide_sampling: str) -> tuple[dict[str, int], dict[str, PoolState]]:
    """Per slide of one old stream, the attempts it had left (those of its pool's slots,
    whatever pass queued them: an endless stream's pool may still hold slides of the
    previous pass, and those of the current pass still queued), and its pools."""
    pipeline = state.get("pipeline")
    if pipeline is None or pipeline.get("run") is None:
        return {path: patches_per_slide for path in shard}, {}
    run = run_from_json(pipeline["run"])
    if run.finished:
        return {}, run.pools
    order = pass_order(shard, run, slide_sampling)
    budget = dict(run.passed.explicit or ())
    left: dict[str, int] = {}
    for path in order[len(order) - run.left:]:
        left[path] = left.get(path, 0) + budget.get(path, patches_per_slide)
    for slot in run.slots:
        full = budget.get(slot.path, patches_per_slide) if slot.budget is None else slot.budget
        done = slot.entry.done if slot.entry is not None else 0
        left[slot.path] = left.get(slot.path, 0) + full - done
    return {path: n for path, n in left.items() if n > 0}, run.pools


class ResumableDataset:
    """``WsiStreamDataset``'s state methods (mixed in; it sets these attributes)."""

    slide_paths: list[str]
    seed: Any
    output_dtype: str
    _kwargs: dict[str, Any]
    _epoch: int
    _active: ActiveStream | None
    _pending: dict[str, Any] | None
    _elastic: Elastic | None
    _skip: tuple[int, int, int] | None

    def set_epoch(self, epoch: int) -> None:
        raise NotImplementedError

    def slides_for(self, rank: int, world_size: int, worker: int, num_workers: int,
                   epoch: int, iteration: int = 0) -> list[str]:
        raise NotImplementedError

    def _fingerprint(self) -> dict[str, Any]:
        """Sources, recipe and seed digests, computed once (a state is taken per batch)."""
        cached: dict[str, Any] | None = self.__dict__.get("_digests")
        if cached is None:
            cached = fingerprint(self.slide_paths, self._kwargs, self.output_dtype, self.seed)
            self.__dict__["_digests"] = cached
        return cached

    def state_dict(self) -> dict[str, Any]:
        """The stream of this process's current iteration as of its last item handed out
        (torchdata's ``Stateful``: ``StatefulDataLoader`` takes it in each worker after each
        batch): epoch, iteration, (rank, worker) and topology, and the pipeline's state.
        JSON-serialisable, a few KB; never images."""
        state: dict[str, Any] = {"version": STATE_VERSION, "kind": DATASET_KIND,
                                 **self._fingerprint()}
        active = self._active
        if active is None:
            return {**state, "epoch": self._epoch, "rank": None, "pipeline": None}
        return {**state, "epoch": active.epoch, "iteration": active.iteration,
                "rank": active.rank, "world_size": active.world_size,
                "worker": active.worker, "num_workers": active.num_workers,
                "pipeline": (active.pipeline.state_dict() if active.pipeline is not None
                             else None)}

    def load_state_dict(self, state: Any) -> None:
        """Continue a saved stream at the next ``iter``. ``state``: one stream's state
        (``StatefulDataLoader`` passes each worker its own; same topology: exact), or the
        ``StatefulDataLoader.state_dict()`` of every old rank, in rank order (or
        ``merge_states`` of them): the epoch goes on on this topology, each slide's budget
        left in it consumed once in total. ``ResumeStateError`` for a state of other
        sources, another recipe or seed, or an incomplete set of streams."""
        mine = self._fingerprint()
        if isinstance(state, Mapping) and state.get("kind") == DATASET_KIND:
            check_fingerprint(state, mine)
            self._epoch = int(state["epoch"])
            self._pending = dict(state) if state.get("rank") is not None else None
            return
        merged = merge_states(state if isinstance(state, (list, tuple)) else [state])
        slots = merged["slots"]
        check_fingerprint(slots[0], mine)
        remaining: dict[str, int] = {}
        pools = {}
        patches = int(self._kwargs["patches_per_slide"])
        for slot in slots:
            shard = self.slides_for(slot["rank"], slot["world_size"], slot["worker"],
                                    slot["num_workers"], slot["epoch"], slot["iteration"])
            left, slot_pools = budgets_left(shard, slot, patches,
                                            self._kwargs["slide_sampling"])
            for path, n in left.items():
                remaining[path] = remaining.get(path, 0) + n
            pools.update(slot_pools)
        order = [(path, remaining[path]) for path in dict.fromkeys(self.slide_paths)
                 if path in remaining]
        epoch, iteration = int(slots[0]["epoch"]), int(slots[0]["iteration"])
        self._elastic = Elastic(epoch, iteration, order, pools)
        self._pending = None
        self.set_epoch(epoch)

    merge_states = staticmethod(merge_states)

    def skip_steps(self, steps: int, batch_size: int) -> None:
        """Resume with a plain ``DataLoader`` from a step count: the next iteration of the
        current epoch (``set_epoch`` first) drops the items of its first ``steps`` batches
        of ``batch_size`` (a DataLoader takes batch ``j`` from worker ``j % num_workers``,
        so each worker knows its share; the new loader's worker ``w`` acts as worker
        ``(w + steps) % num_workers``, whose batch was next). Exact while no worker's
        stream has ended before step ``steps``, but those patches are read again (the cost
        of ``steps``): with ``StatefulDataLoader`` and ``load_state_dict`` nothing is. Call
        it before ``iter(loader)``."""
        for name, value, low in (("steps", steps, 0), ("batch_size", batch_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self._skip = (self._epoch, steps, batch_size)

    def _resume_plan(self, rank: int, world: int, worker: int, num_workers: int,
                     epoch: int, iteration: int) -> tuple[int, int, int, ResumePlan | None]:
        """The (epoch, iteration) this stream runs, the worker it acts as (``skip_steps``:
        the loader's first worker acts as the one whose batch was next) and what it
        resumes, if anything."""
        pending, self._pending = self._pending, None
        if pending is not None:
            saved = (pending["rank"], pending["world_size"], pending["worker"],
                     pending["num_workers"])
            if saved != (rank, world, worker, num_workers):
                raise ResumeStateError(
                    f"the saved stream is rank {saved[0]}/{saved[1]} worker {saved[2]}/"
                    f"{saved[3]}, this one rank {rank}/{world} worker {worker}/{num_workers}: "
                    "on another topology, pass every old rank's state (merge_states)")
            return (int(pending["epoch"]), int(pending["iteration"]), worker,
                    ResumePlan(pipeline_state=pending["pipeline"]))
        skip = self._skip
        if skip is not None and (skip[0], 0) == (epoch, iteration):
            if torch.utils.data.get_worker_info() is None:
                self._skip = None
            steps, batch_size = skip[1], skip[2]
            worker = (worker + steps) % num_workers
            mine = (steps - worker + num_workers - 1) // num_workers if steps > worker else 0
            return epoch, iteration, worker, ResumePlan(skip=mine * batch_size)
        elastic = self._elastic
        if elastic is None or (elastic.epoch, elastic.iteration) != (epoch, iteration):
            return epoch, iteration, worker, None
        if torch.utils.data.get_worker_info() is None:
            self._elastic = None  # this process's dataset: continued once
        slot, slots = rank * num_workers + worker, world * num_workers
        share = tuple(elastic.remaining[slot::slots])
        pools = {path: elastic.pools[path] for path, _ in share if path in elastic.pools}
        return epoch, iteration, worker, ResumePlan(first_pass=share, pools=pools)
