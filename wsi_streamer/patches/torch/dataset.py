"""``WsiStreamDataset``: an ``IterableDataset`` over ``PatchPipeline`` for ``DataLoader``
workers and ``torchrun`` ranks (wsistream's, except as follows; ranks, shards and seeds are
drawn in ``ranks``):

- Sharding: each loader iteration splits the slides disjointly over (rank, worker), the
  union being every slide exactly once. The split is a permutation drawn from
  ``split_seed(seed, epoch, iteration)``, the same on every rank, so it changes per epoch.
  With fewer slides than (rank, worker) slots an endless stream feeds every slot (slot s
  reads slide ``s % n`` of the permutation, shared); a finite one leaves the extra slots
  empty, each with a warning.
- A stream that can never yield raises ``NoPatchesError`` in the main process: the last
  worker of the iteration whose shard can never yield raises it (the DataLoader re-raises
  it), with every such worker's reasons; the others end with a warning.
- Seeding: the pipeline of (rank, worker) takes ``stream_seed(seed, rank, worker, epoch,
  iteration)`` = ``SeedSequence(entropy=seed, spawn_key=(0, rank, worker, epoch,
  iteration))`` (the split: ``spawn_key=(1, epoch, iteration)``; a ``SeedSequence`` seed
  prefixes its own spawn key). ``iteration`` counts loader iterations since the last
  ``set_epoch``: 0 when ``set_epoch`` is called before each one (the ``DistributedSampler``
  convention; do so under DDP, where ranks must agree), and a new ``iter(loader)`` without
  it gets a new split and stream, with persistent workers or not. Workers recognise their
  iteration by the DataLoader's base seed (drawn from torch's RNG at each ``iter(loader)``)
  and their own count of iterations (persistent workers). ``seed=None``: streams take fresh
  OS entropy, the split still uses seed 0 (ranks must agree on it).
- Statistics and the epoch live in a shared folder (``stats``): exact, 64-bit, never
  blocking a worker, the same with ``fork``, ``spawn`` and ``forkserver`` workers.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Generator, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from ...limits import PIPELINE_OPEN_BUDGET_S, PIPELINE_OPEN_PATIENCE_S
from ..backends import SlideBackend, StreamingBackend
from ..datasets import DatasetAdapter
from ..filters import PatchFilter
from ..pipeline import DEFAULT, PatchPipeline
from ..sampling.base import PatchSampler
from ..tissue import TissueDetector
from ..transforms import PatchTransform
from ..types import NoPatchesError, PatchResult, SlideMetadata
from ..views import ViewConfig
from .ranks import (
    PathsLike,
    RankPartition,
    SeedLike,
    dist_rank_world,
    rank_and_world_size,
    shard_slides,
    stream_seed,
)
from .resume import ActiveStream, Elastic, ResumableDataset, ResumePlan
from .stats import PipelineRecorder, SharedState

logger = logging.getLogger(__name__)


def image_tensor(image: np.ndarray, output_dtype: str) -> torch.Tensor:
    """HWC (or HW) array -> contiguous CHW tensor: uint8 as is, or float32 (uint8 / 255,
    float images unscaled). ``ValueError`` for a non-uint8 image with ``"uint8"``."""
    chw = np.moveaxis(image if image.ndim == 3 else image[:, :, None], -1, 0)
    if output_dtype == "uint8":
        if image.dtype != np.uint8:
            raise ValueError(f"output_dtype='uint8' needs uint8 images, got dtype "
                             f"{image.dtype}: drop NormalizeTransform (or any float transform) "
                             "and normalise the batch on the device, or use "
                             "output_dtype='float32'")
        return torch.from_numpy(np.array(chw, order="C"))
    out = np.empty(chw.shape, np.float32)
    if image.dtype == np.uint8:
        np.divide(chw, np.float32(255), out=out)
    else:
        out[...] = chw
    return torch.from_numpy(out)


def patch_to_item(result: PatchResult, output_dtype: str = "float32") -> dict[str, Any]:
    """Collate-ready dict: metadata strings (``""``, ``extra`` as JSON), ``image`` or one
    tensor per view, then ``x, y, level, patch_size, mpp`` (-1.0 if unknown),
    ``tissue_fraction``. Every key is always present."""
    coord = result.coordinate
    meta = result.slide_metadata
    item: dict[str, Any] = meta.to_flat_dict() if meta is not None else (
        SlideMetadata.empty_dict())
    item["slide_path"] = coord.slide_path
    if result.views is not None:
        for name, view in result.views.items():
            item[name] = image_tensor(view, output_dtype)
    else:
        assert result.image is not None
        item["image"] = image_tensor(result.image, output_dtype)
    item.update(x=int(coord.x), y=int(coord.y), level=int(coord.level),
                patch_size=int(coord.patch_size),
                mpp=float(coord.mpp) if coord.mpp is not None else -1.0,
                tissue_fraction=float(result.tissue_fraction))
    return item


class WsiStreamDataset(ResumableDataset, IterableDataset[dict[str, Any]]):
    """``PatchPipeline``'s arguments (defaults ``cycle=True``, ``slide_sampling="random"``)
    plus ``output_dtype`` ("float32": uint8 / 255; "uint8": a quarter of the bytes to move,
    normalise on the device). Yields ``patch_to_item`` dicts. See the module for sharding,
    seeding and epochs; the arguments are validated (and an ``s3://`` prefix listed) here."""

    def __init__(self, slide_paths: PathsLike,
                 backend: SlideBackend | StreamingBackend | None = None,
                 tissue_detector: TissueDetector | None = None,
                 sampler: PatchSampler | None = None, patch_filter: PatchFilter | None = None,
                 transforms: PatchTransform | None = None,
                 dataset_adapter: DatasetAdapter | None = None, pool_size: int = 8,
                 patches_per_slide: int = 100, patches_per_visit: int = 1, cycle: bool = True,
                 replacement: str = "with_replacement", slide_sampling: str = "random",
                 seed: SeedLike = None, views: list[ViewConfig] | None = None,
                 shared_transforms: PatchTransform | None = None,
                 tissue_mask_cache_size: int = 0, output_dtype: str = "float32",
                 thumbnail_size: tuple[int, int] = (2048, 2048), *,
                 storage_options: Mapping[str, Any] | None = None,
                 cache_dir: str | None = DEFAULT, prefetch: int | None = None,
                 io_threads: int | None = None, on_error: str = "skip",
                 open_timeout: float | None = PIPELINE_OPEN_BUDGET_S,
                 open_patience: float | None = PIPELINE_OPEN_PATIENCE_S) -> None:
        if output_dtype not in ("float32", "uint8"):
            raise ValueError(f"output_dtype must be 'float32' or 'uint8', got {output_dtype!r}")
        self._kwargs: dict[str, Any] = dict(
            backend=backend, tissue_detector=tissue_detector, sampler=sampler,
            patch_filter=patch_filter, transforms=transforms, dataset_adapter=dataset_adapter,
            thumbnail_size=thumbnail_size, slide_sampling=slide_sampling, pool_size=pool_size,
            patches_per_slide=patches_per_slide, patches_per_visit=patches_per_visit,
            cycle=cycle, replacement=replacement, views=views,
            shared_transforms=shared_transforms, tissue_mask_cache_size=tissue_mask_cache_size,
            storage_options=storage_options, cache_dir=cache_dir, prefetch=prefetch,
            io_threads=io_threads, on_error=on_error, open_timeout=open_timeout,
            open_patience=open_patience)
        probe = PatchPipeline(slide_paths, seed=0, **self._kwargs)  # validates, resolves
        self.slide_paths: list[str] = list(probe.slide_paths)
        self._partition = ((slide_paths.rank, slide_paths.world_size)
                           if isinstance(slide_paths, RankPartition) else None)
        self.seed, self.cycle, self.output_dtype = seed, cycle, output_dtype
        self._shared = SharedState(len(dict.fromkeys(self.slide_paths)))
        self._epoch = 0
        self._iterations = 0  # iter() calls in this process (with persistent workers: epochs)
        self._captured = dist_rank_world()
        self._index: dict[str, int] | None = None
        self._active: ActiveStream | None = None  # the stream of this process's last iter()
        self._pending: dict[str, Any] | None = None  # a stream state to continue
        self._elastic: Elastic | None = None  # a merged epoch to continue
        self._skip: tuple[int, int, int] | None = None  # skip_steps: (epoch, steps, batch)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_captured"] = dist_rank_world() or self._captured
        state["_index"] = None
        state["_iterations"] = 0
        state["_active"] = None
        return state

    # --- epochs, statistics ------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next loader iterations (seen by persistent workers too)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self._epoch = epoch
        self._shared.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self._epoch

    def stats_dict(self) -> dict[str, int | float]:
        """The pipelines' ``stats_dict`` summed over every worker (and this process) since
        ``reset_stats``; counts are exact once the workers have yielded or ended."""
        return self._shared.stats_dict()

    def reset_stats(self) -> None:
        """Restart the counts (exact when called between loader iterations)."""
        self._shared.reset()

    # --- sharding ----------------------------------------------------------------------------
    def rank_and_world_size(self) -> tuple[int, int]:
        if self._partition is not None:
            return self._partition
        found = dist_rank_world() or self._captured
        if found is not None:
            return found
        return rank_and_world_size()

    def slides_for(self, rank: int, world_size: int, worker: int, num_workers: int,
                   epoch: int, iteration: int = 0) -> list[str]:
        """The slides of (rank, worker) in (epoch, iteration)."""
        if self._partition is not None:  # the ranks are split already
            return shard_slides(self.slide_paths, worker, num_workers, self.seed, epoch,
                                iteration, self.cycle)
        return shard_slides(self.slide_paths, rank * num_workers + worker,
                            world_size * num_workers, self.seed, epoch, iteration, self.cycle)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()  # looked up per call: patchable, as wsistream's
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        cv2 = sys.modules.get("cv2")  # a user's (albumentations'): never imported here
        if info is not None and cv2 is not None:
            cv2.setNumThreads(0)  # its thread pool deadlocks in forked workers
        rank, world = self.rank_and_world_size()
        self._iterations += 1
        # One loader iteration: its workers share the DataLoader's base seed (drawn per
        # iter(loader)) and, when persistent, their count of iterations.
        base = getattr(info, "seed", None)  # a stand-in WorkerInfo may lack it
        identity = (f"w{base - worker}:{self._iterations}" if base is not None
                    else f"m{os.getpid()}:{self._iterations}")
        try:
            epoch, iteration = self._shared.claim_iteration(identity)
        except OSError as exc:
            logger.warning("shared epoch state unusable (%s): epoch %d, iteration %d",
                           exc, self._epoch, self._iterations - 1)
            epoch, iteration = self._epoch, self._iterations - 1
        epoch, iteration, worker, plan = self._resume_plan(rank, world, worker, num_workers,
                                                           epoch, iteration)
        self._active = ActiveStream(epoch, iteration, rank, world, worker, num_workers)
        slides = self.slides_for(rank, world, worker, num_workers, epoch, iteration)
        seed = stream_seed(self.seed, rank, worker, epoch, iteration)
        logger.debug("rank %d/%d worker %d/%d epoch %d.%d: %d slides", rank, world, worker,
                     num_workers, epoch, iteration, len(slides))
        if not slides and plan is None:  # fewer slides than (rank x worker) slots, finite
            logger.warning("rank %d worker %d has no slide (%d slides for %d rank x worker "
                           "slots, cycle=False reads each slide once): it yields nothing",
                           rank, worker, len(self.slide_paths), world * num_workers)
        return self._stream(slides, seed, (identity, worker, num_workers), plan)

    def _stream(self, slides: list[str], seed: np.random.SeedSequence | None,
                slot: tuple[str, int, int], plan: ResumePlan | None = None
                ) -> Iterator[dict[str, Any]]:
        first = [] if plan is None else [path for path, _ in plan.first_pass or ()]
        if not slides and not first:
            return
        if plan is not None and plan.pipeline_state is not None and self.seed is None:
            seed = None  # an unseeded stream resumes with the entropy it had (its state's)
        pipeline = PatchPipeline(slides or first, seed=seed, **self._kwargs)
        if plan is not None:
            plan.apply(pipeline)
        if self._active is not None:
            self._active.pipeline = pipeline
        if self._index is None:  # slide -> its byte in the shared "seen" map
            self._index = {path: i for i, path in enumerate(dict.fromkeys(self.slide_paths))}
        recorder = PipelineRecorder(self._shared.writer(), pipeline, self._index)
        run = iter(pipeline)
        yielded = 0
        skip = plan.skip if plan is not None else 0
        try:
            for result in run:
                if skip:  # skip_steps: trained on before the restart
                    skip -= 1
                    continue
                item = patch_to_item(result, self.output_dtype)
                recorder.record()
                yielded += 1
                yield item
            if not yielded:
                logger.warning("a finite stream of %d slide(s) ended with 0 patches (slides "
                               "processed %d, failed %d)", len(slides),
                               pipeline.stats.slides_processed, pipeline.stats.slides_failed)
        except NoPatchesError as exc:
            self._shard_never_yields(slot, str(exc))
        finally:
            if isinstance(run, Generator):
                run.close()  # stops the pipeline's threads before the last count
            recorder.record()

    def _shard_never_yields(self, slot: tuple[str, int, int], message: str) -> None:
        """A worker's endless stream can never yield: it ends with a warning while others
        go on; the last worker of the iteration raises ``NoPatchesError`` with every
        worker's reasons (the DataLoader re-raises it in the main process)."""
        identity, worker, num_workers = slot
        try:
            ended = self._shared.shard_ended(identity, worker, num_workers, message)
        except OSError:
            ended = [message]
        if ended is None:
            logger.warning("worker %d of %d can never yield; it ends, the others go on: %s",
                           worker, num_workers, message)
            return
        reasons = ended[0] if len(ended) == 1 else "; ".join(
            f"worker {i}: {m}" for i, m in enumerate(ended))
        raise NoPatchesError(f"the stream can never yield: {reasons}")
