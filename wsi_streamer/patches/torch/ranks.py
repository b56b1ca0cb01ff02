"""Ranks, shards and seeds of the torch layer, in one place: ``rank_and_world_size``
(``torch.distributed``, else ``RANK`` / ``WORLD_SIZE``), wsistream's static
``partition_slides_by_rank``, and the per-(epoch, iteration) split ``shard_slides`` and
``stream_seed`` that ``WsiStreamDataset`` draws (see ``dataset``)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..sources import S3Options, resolve_slide_paths

SeedLike = int | np.random.SeedSequence | None
PathsLike = str | os.PathLike[str] | Iterable[str | os.PathLike[str]]


def _root(seed: SeedLike) -> np.random.SeedSequence:
    return seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)


def stream_seed(seed: SeedLike, rank: int, worker: int, epoch: int,
                iteration: int = 0) -> np.random.SeedSequence:
    """The pipeline seed of (rank, worker) in (epoch, iteration); fresh entropy if None."""
    if seed is None:
        return np.random.SeedSequence()
    root = _root(seed)
    return np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, 0, rank, worker,
                                                           epoch, iteration))


def split_seed(seed: SeedLike, epoch: int, iteration: int = 0) -> np.random.SeedSequence:
    root = _root(0 if seed is None else seed)
    return np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, 1, epoch,
                                                           iteration))


def shard_slides(paths: list[str], shard: int, num_shards: int, seed: SeedLike, epoch: int,
                 iteration: int = 0, feed_every_shard: bool = False) -> list[str]:
    """Shard ``shard`` of ``num_shards``: every ``num_shards``-th position of a permutation
    drawn from ``split_seed``, in list order. Shards are disjoint (by position) and cover
    ``paths``; sizes differ by at most one. With fewer slides than shards, shards
    ``len(paths)`` and up are empty, unless ``feed_every_shard`` (endless streams): shard
    ``s`` then reads slide ``order[s % len(paths)]``, shared with other shards."""
    order = np.random.default_rng(split_seed(seed, epoch, iteration)).permutation(len(paths))
    if feed_every_shard and 0 < len(paths) < num_shards:
        return [paths[int(order[shard % len(paths)])]]
    return [paths[int(i)] for i in np.sort(order[shard::num_shards])]


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def dist_rank_world() -> tuple[int, int] | None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None


def rank_and_world_size() -> tuple[int, int]:
    """``torch.distributed``'s when initialised, else ``RANK`` / ``WORLD_SIZE``, else (0, 1)."""
    found = dist_rank_world()
    rank, world = found if found else (_env_int("RANK", 0), _env_int("WORLD_SIZE", 1))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, world_size={world})")
    return rank, world


class RankPartition(list[str]):
    """The slides of one rank, as ``partition_slides_by_rank`` returns them. Given one,
    ``WsiStreamDataset`` splits it over its workers only (the rank split is done)."""

    def __init__(self, paths: Iterable[str], rank: int, world_size: int) -> None:
        super().__init__(paths)
        self.rank, self.world_size = rank, world_size


def partition_slides_by_rank(slide_paths: PathsLike, rank: int | None = None,
                             world_size: int | None = None, *,
                             storage_options: Mapping[str, Any] | None = None
                             ) -> RankPartition:
    """wsistream's static split: slides ``rank::world_size`` of the resolved list (rank and
    world size from ``torch.distributed``, ``RANK`` / ``WORLD_SIZE`` when None).
    ``WsiStreamDataset`` does not need it (it re-draws its split each epoch); it accepts the
    result and then splits over workers only. ``RuntimeError`` if a rank gets no slide."""
    paths = resolve_slide_paths(slide_paths, options=S3Options.from_mapping(storage_options))
    found_rank, found_world = rank_and_world_size() if rank is None or world_size is None \
        else (rank, world_size)
    rank = found_rank if rank is None else rank
    world_size = found_world if world_size is None else world_size
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    mine = paths[rank::world_size]
    if not mine:
        raise RuntimeError(f"rank {rank} got 0 slides ({len(paths)} slides over "
                           f"{world_size} ranks)")
    return RankPartition(mine, rank, world_size)
