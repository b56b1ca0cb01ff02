"""``PatchPipeline``: wsistream's pipeline (same arguments, defaults, results and statistics)
on our streaming engine (``engine.py``). See ../shared/PATCHES.md for the contract."""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import numpy as np

from .. import budget
from ..errors import WorkAbandoned
from ..io.location import url_scheme
from ..limits import PIPELINE_OPEN_BUDGET_S, PIPELINE_OPEN_PATIENCE_S
from .backends.base import SlideBackend, StreamingBackend, as_streaming
from .backends.native import NativeBackend
from .backends.openslide import OpenSlideBackend
from .datasets import DatasetAdapter
from .engine import MAX_OPEN_ATTEMPTS, Entry, Opened, RunInput, Schedule, StreamRun
from .filters import PatchFilter
from .handle import SlideHandle
from .masks import MaskStore
from .pipeline_state import ResumableState, drain
from .resume import PoolState, RunState, SlidePool
from .rng import child_seq, reseed
from .sampling.base import PatchSampler, plan_read
from .sampling.random import RandomSampler
from .slots import ReadResult
from .sources import (
    NATIVE_EXTENSIONS,
    OPENSLIDE_EXTENSIONS,
    S3Options,
    check_schemes,
    resolve_slide_paths,
)
from .stats import PipelineStats
from .tissue import OtsuTissueDetector, TissueDetector
from .transforms import PatchTransform
from .types import PatchCoordinate, PatchResult, TissueMask
from .views import ViewConfig, apply_views, validate_views

logger = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT = "default"  # cache_dir: the host's default folder (None disables the host cache)
DEFAULT_IO_THREADS = 16  # reads in flight from remote storage: hides +20 ms per request


def default_io_threads(slide_paths: Iterable[str]) -> int:
    """Reads in flight when ``io_threads`` is not given: ``DEFAULT_IO_THREADS`` when a slide is
    an object URL (each read waits on requests; a user backend's scheme too), else the CPUs
    this process may use (local reads wait on nothing, and more threads only contend:
    ``bench.patch_cpu``, docs/training.md)."""
    if any(url_scheme(path) not in (None, "file") for path in slide_paths):
        return DEFAULT_IO_THREADS
    return max(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 2)
DEFAULT_PREFETCH = 32  # patches planned ahead: two rounds of io_threads
DEFAULT_OPEN_AHEAD = 8  # slides of the queue opened in the background
DEFAULT_OPEN_THREADS = 2  # background opens at once: more would take CPU from the first patch


def clone(component: T, name: str) -> T:
    """An independent deep copy (components are never mutated); ``TypeError`` otherwise."""
    try:
        copied = copy.deepcopy(component)
    except Exception as exc:
        raise TypeError(f"{name} ({type(component).__name__}) must support copy.deepcopy()"
                        ) from exc
    if copied is component:
        raise TypeError(f"{name} ({type(component).__name__}) must deep-copy to a new object")
    return copied


def _seconds(name: str, value: Any) -> float | None:
    """Seconds > 0, or None."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not math.isfinite(value) or value <= 0):
        raise ValueError(f"{name} must be seconds > 0 or None, got {value!r}")
    return None if value is None else float(value)


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


class PatchPipeline(ResumableState):
    """Iterating yields ``PatchResult``s. See the module and PATCHES.md for the semantics;
    ``prefetch`` (patches planned ahead), ``io_threads`` (reads in flight), ``cache_dir``
    (host cache of structures and masks; None: off), ``open_timeout`` (seconds one slide
    open may take, ``limits.PIPELINE_OPEN_BUDGET_S``; None: no bound) and ``open_patience``
    (seconds the stream waits for a slow open before serving the pool's other slides,
    ``limits.PIPELINE_OPEN_PATIENCE_S``; None: it always waits, so the order of patches
    never depends on timing) are ours."""

    def __init__(self, slide_paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                 backend: SlideBackend | StreamingBackend | None = None,
                 tissue_detector: TissueDetector | None = None,
                 sampler: PatchSampler | None = None,
                 patch_filter: PatchFilter | None = None,
                 transforms: PatchTransform | None = None,
                 dataset_adapter: DatasetAdapter | None = None,
                 thumbnail_size: tuple[int, int] = (2048, 2048),
                 slide_sampling: str = "sequential", pool_size: int = 8,
                 patches_per_slide: int = 100, patches_per_visit: int = 1,
                 cycle: bool = False, replacement: str = "with_replacement",
                 seed: int | np.random.SeedSequence | None = None,
                 views: list[ViewConfig] | None = None,
                 shared_transforms: PatchTransform | None = None,
                 tissue_mask_cache_size: int = 0, *,
                 storage_options: Mapping[str, Any] | None = None,
                 cache_dir: str | None = DEFAULT, prefetch: int | None = None,
                 io_threads: int | None = None, on_error: str = "skip",
                 open_timeout: float | None = PIPELINE_OPEN_BUDGET_S,
                 open_patience: float | None = PIPELINE_OPEN_PATIENCE_S) -> None:
        if slide_sampling not in ("sequential", "random"):
            raise ValueError(f"slide_sampling must be 'sequential' or 'random', "
                             f"got {slide_sampling!r}")
        if replacement not in ("with_replacement", "without_replacement"):
            raise ValueError(f"replacement must be 'with_replacement' or "
                             f"'without_replacement', got {replacement!r}")
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.open_timeout = _seconds("open_timeout", open_timeout)
        self.open_patience = _seconds("open_patience", open_patience)
        self.pool_size = _positive("pool_size", pool_size)
        self.patches_per_slide = _positive("patches_per_slide", patches_per_slide)
        self.patches_per_visit = _positive("patches_per_visit", patches_per_visit)
        if not isinstance(tissue_mask_cache_size, int) or tissue_mask_cache_size < 0:
            raise ValueError(f"tissue_mask_cache_size must be >= 0, got {tissue_mask_cache_size}")
        if (not isinstance(thumbnail_size, (tuple, list)) or len(thumbnail_size) != 2
                or any(not isinstance(v, int) or v < 1 for v in thumbnail_size)):
            raise ValueError(f"thumbnail_size must be two ints >= 1, got {thumbnail_size!r}")
        self.prefetch = _positive("prefetch", prefetch if prefetch is not None
                                  else DEFAULT_PREFETCH)
        if io_threads is not None:
            self.io_threads = _positive("io_threads", io_threads)
        validate_views(views, transforms, shared_transforms)
        sampler = sampler if sampler is not None else RandomSampler()
        if not callable(getattr(sampler, "sample", None)):
            raise TypeError(f"sampler must be a PatchSampler, got {type(sampler).__name__}")
        if replacement == "without_replacement" and not (
                isinstance(sampler, PatchSampler) and sampler.supports_pool()):
            raise TypeError(f"{type(sampler).__name__} does not support "
                            "replacement='without_replacement' (use RandomSampler or "
                            "MultiMagnificationSampler)")
        self.backend: SlideBackend | StreamingBackend = (
            clone(backend, "backend") if backend is not None else NativeBackend())
        options = S3Options.from_mapping(storage_options)
        self.reader.configure(storage_options=options,
                              cache_dir=None if cache_dir in (None, DEFAULT) else cache_dir,
                              use_cache=cache_dir is not None)
        extensions = (OPENSLIDE_EXTENSIONS if isinstance(self.backend, OpenSlideBackend)
                      else NATIVE_EXTENSIONS)
        self.slide_paths = resolve_slide_paths(
            slide_paths, extensions=extensions, options=options,
            any_scheme=self.reader is not self.backend)
        if self.reader is self.backend:
            check_schemes(self.slide_paths)
        if io_threads is None:
            self.io_threads = default_io_threads(self.slide_paths)
        if replacement == "without_replacement":
            dupes = sorted({p for p in self.slide_paths if self.slide_paths.count(p) > 1})
            if dupes:
                raise ValueError(f"replacement='without_replacement' requires unique slide paths; "
                                 f"duplicates: {dupes}")
        self.tissue_detector = clone(tissue_detector if tissue_detector is not None
                                     else OtsuTissueDetector(), "tissue_detector")
        self.sampler = clone(sampler, "sampler")
        self.patch_filter = clone(patch_filter, "patch_filter") if patch_filter else None
        self.transforms = clone(transforms, "transforms") if transforms else None
        self.shared_transforms = (clone(shared_transforms, "shared_transforms")
                                  if shared_transforms else None)
        self.views = clone(views, "views") if views is not None else None
        self.dataset_adapter = dataset_adapter
        self.thumbnail_size = (int(thumbnail_size[0]), int(thumbnail_size[1]))
        self.slide_sampling, self.replacement, self.cycle = slide_sampling, replacement, cycle
        self.tissue_mask_cache_size = tissue_mask_cache_size
        self.on_error = on_error
        self.open_threads = DEFAULT_OPEN_THREADS
        self.open_ahead = max(self.pool_size, DEFAULT_OPEN_AHEAD)
        self.seed = seed
        self._masks = MaskStore(self.tissue_detector, self.thumbnail_size,
                                tissue_mask_cache_size)
        self._stats = PipelineStats()
        self._failed: set[str] = set()
        self._open_failures: dict[str, int] = {}
        self._coordinate_pools: dict[str, SlidePool] = {}
        self._pool_marks: dict[str, tuple[SlidePool, int]] = {}  # pops consumed per slide
        self._saved_pools: dict[str, PoolState] = {}  # restored, rebuilt when next opened
        self._run: StreamRun | None = None
        self._resume: tuple[RunState | None, list[Any]] | None = None
        self.first_pass: tuple[tuple[str, int], ...] | None = None  # (slide, budget): elastic
        self._pid = os.getpid()
        self._seed_all()

    # --- seeding -----------------------------------------------------------------------------
    def _seed_all(self) -> None:
        """Every stream from one ``SeedSequence``: slide order 0, sampler 1 (the ``n``-th
        slide opened in a run: ``(1, n)``), transforms 2, shared transforms 3, views 4
        (+ index), without-replacement pools 5 (+ slide key, cycle: ``resume.pool_seed``)."""
        if isinstance(self.seed, np.random.SeedSequence):
            root = self.seed
        else:
            root = np.random.SeedSequence(self.seed)
        self._root = root
        self._order_rng = np.random.default_rng(child_seq(root, 0))
        reseed(self.sampler, child_seq(root, 1))
        reseed(self.transforms, child_seq(root, 2))
        reseed(self.shared_transforms, child_seq(root, 3))
        for index, view in enumerate(self.views or ()):
            reseed(view.crop, child_seq(root, 4, index, 0))
            reseed(view.transforms, child_seq(root, 4, index, 1))

    # --- public API --------------------------------------------------------------------------
    @property
    def reader(self) -> StreamingBackend:
        """``backend`` as the engine reads it: itself when it is one of ours, else a
        ``PlainBackend`` around it (one deep copy per open slide, sequential reads)."""
        current = self.__dict__.get("_reader")
        if current is None or current[0] is not self.backend:
            current = (self.backend, as_streaming(self.backend))
            self.__dict__["_reader"] = current
        return current[1]

    def __iter__(self) -> Iterator[PatchResult]:
        if os.getpid() != self._pid:  # inherited through fork: own resources, own streams
            self._pid = os.getpid()
            self._coordinate_pools.clear()
            self._pool_marks.clear()
            if self.seed is None:
                self._seed_all()
        resume, states = self._resume if self._resume is not None else (None, None)
        self._resume = None
        if states is not None:
            self._set_consumer_states(states)
        self._run = StreamRun(self._run_input(resume))
        return iter(self._run)

    def __getstate__(self) -> dict[str, Any]:
        """A copy (pickle, a DataLoader worker under spawn) is the pipeline without its
        running stream: the run holds threads and the engine's view of this object. A copy
        resumes a stream through ``state_dict()`` / ``load_state_dict()``."""
        state = self.__dict__.copy()
        state["_run"] = None
        return state

    def _run_input(self, resume: RunState | None = None) -> RunInput:
        """The engine's view of this pipeline: its schedule now, and its steps."""
        schedule = Schedule(
            slide_paths=tuple(self.slide_paths), pool_size=self.pool_size,
            patches_per_slide=self.patches_per_slide, patches_per_visit=self.patches_per_visit,
            cycle=self.cycle, prefetch=self.prefetch, io_threads=self.io_threads,
            open_threads=self.open_threads, open_ahead=self.open_ahead,
            raise_errors=self.on_error == "raise", open_patience=self.open_patience)
        return RunInput(schedule, stats=lambda: self._stats, slide_order=self.slide_order,
                        open_slide=self.open_for_pool, make_entry=self.make_entry,
                        read_patch=self.read_patch, render=self.render,
                        mark_failed=self.mark_failed, open_failed=self.open_failed,
                        ledger=self, resume=resume, first_pass=self.first_pass)

    @property
    def stats(self) -> PipelineStats:
        self._stats.detections = self._masks.detections
        self._stats.mask_cache_hits = self._masks.hits
        return self._stats

    def stats_dict(self) -> dict[str, int | float]:
        """wsistream's keys plus ``io/*``: storage requests and bytes, block-store hits,
        slide opens, structure and mask host-cache hits, detections."""
        out = self.stats.to_dict()
        out.update(self.reader.io_stats())
        return out

    def reset_stats(self) -> None:
        self._stats = PipelineStats()
        self._masks.hits = self._masks.detections = 0
        self._failed.clear()

    def tissue_mask(self, path: str) -> TissueMask:
        """The mask this pipeline uses for ``path`` (host cache, else detected)."""
        with SlideHandle(path, backend=self.reader) as handle:
            return self._masks.get(handle, self.reader.host_cache)

    def clear_tissue_mask_cache(self) -> None:
        self._masks.clear()

    # --- what the engine calls ---------------------------------------------------------------
    def slide_order(self) -> list[str]:
        paths = [p for p in self.slide_paths if p not in self._failed]
        if self.slide_sampling == "random":
            return [paths[i] for i in self._order_rng.permutation(len(paths))]
        return paths

    def mark_failed(self, path: str) -> None:
        self._failed.add(path)
        self._stats.slides_failed += 1

    def open_failed(self, opened: Opened) -> None:
        self._stats.slides_failed += 1
        self._stats.record_error(opened.path, opened.error or "")
        count = self._open_failures.get(opened.path, 0) + 1
        self._open_failures[opened.path] = count
        if count >= MAX_OPEN_ATTEMPTS:
            self._failed.add(opened.path)

    def open_for_pool(self, path: str, stopped: Callable[[], bool] | None = None) -> Opened:
        """Runs in a background thread: open, mask (host cache or detection), metadata,
        within ``open_timeout`` (``DeadlineExceeded`` at the next thumbnail tile or step past
        it: the slide is skipped with that reason) and until ``stopped()`` (the run closed)."""
        handle: SlideHandle | None = None
        try:
            with budget.within(self.open_timeout, "slide open", stopped):
                handle = SlideHandle(path, backend=self.reader)
                budget.checkpoint()
                mask = self._masks.get(handle, self.reader.host_cache)
                budget.checkpoint()
                metadata = (self.dataset_adapter.parse_metadata(path)
                            if self.dataset_adapter is not None else None)
            return Opened(path, handle, mask, metadata)
        except Exception as exc:  # noqa: BLE001 - counted and skipped by the engine
            log = logger.debug if isinstance(exc, WorkAbandoned) else logger.warning
            log("could not open slide %s: %s", path, exc)
            if handle is not None:
                handle.close()
            return Opened(path, error=f"{type(exc).__name__}: {exc}")

    def make_entry(self, opened: Opened, ordinal: int = 0, skip: int = 0) -> Entry:
        """Runs in the planning thread. The ``ordinal``-th slide opened in a run draws from
        a copy of the sampler seeded ``(1, ordinal)``; ``skip``: coordinates it had already
        drawn (a resumed entry: drawn again, nothing read). ``without_replacement``: the
        slide's pool (``slide_pool``)."""
        assert opened.handle is not None and opened.mask is not None
        slide_pool = None
        if self.replacement == "without_replacement":
            slide_pool = self.slide_pool(opened)
            coords: Iterator[PatchCoordinate] = drain(slide_pool)
        else:
            sampler = copy.copy(self.sampler)
            reseed(sampler, child_seq(self._root, 1, ordinal))
            coords = iter(sampler.sample(opened.handle, opened.mask))
            for _ in range(skip):
                if next(coords, None) is None:
                    break
        self._stats.slides_processed += 1
        self._stats.slides_seen.add(opened.path)
        self._stats.tissue_fractions.update(opened.mask.tissue_fraction)
        if opened.metadata is not None:
            self._stats.count_metadata(opened.metadata.cancer_type, opened.metadata.sample_type)
        return Entry(opened, coords, ordinal, self.patches_per_slide, slide_pool)

    def read_patch(self, opened: Opened, coord: PatchCoordinate) -> ReadResult:
        """Runs in a reader thread: the patch (exactly ``out_size`` square), whether the
        filter accepts it, and the re-reads of ``mpp_override`` views."""
        handle = opened.handle
        assert handle is not None
        out = coord.out_size
        image = handle.read_region(coord.x, coord.y, coord.patch_size, coord.patch_size,
                                   coord.level,
                                   out_size=None if out == coord.patch_size else (out, out))
        accepted = self.patch_filter.accept(image) if self.patch_filter is not None else True
        overrides: dict[str, np.ndarray] = {}
        if accepted and self.views is not None:
            for view in self.views:
                if view.mpp_override is not None:
                    overrides[view.name] = self._read_override(handle, coord, view)
        return image, accepted, overrides

    def render(self, image: np.ndarray, overrides: Mapping[str, np.ndarray]
               ) -> tuple[np.ndarray | None, dict[str, np.ndarray] | None]:
        """Runs in the consuming thread: the patch after ``transforms`` (and no views), or
        no image and the ``views`` (an ``mpp_override`` view from ``overrides``)."""
        if self.views is not None:
            return None, apply_views(self.views, image, self.shared_transforms,
                                     lambda view: overrides[view.name])
        return (self.transforms(image) if self.transforms is not None else image), None

    def _read_override(self, handle: SlideHandle, coord: PatchCoordinate,
                       view: ViewConfig) -> np.ndarray:
        """The same level-0 centre at ``view.mpp_override``, exact mpp (resampled)."""
        props = handle.properties
        if props.mpp is None:
            raise ValueError(f"view {view.name!r} has mpp_override={view.mpp_override} but "
                             f"slide {props.path!r} has no MPP")
        assert view.mpp_override is not None
        plan = plan_read(props, view.patch_size_override or coord.out_size,
                         target_mpp=view.mpp_override)
        ds = props.level_downsamples
        cx = coord.x + coord.patch_size * ds[coord.level] / 2
        cy = coord.y + coord.patch_size * ds[coord.level] / 2
        side = plan.read_size * ds[plan.level]
        x, y = int(round(cx - side / 2)), int(round(cy - side / 2))
        out = None if plan.output_size == plan.read_size else (plan.output_size,) * 2
        return handle.read_region(x, y, plan.read_size, plan.read_size, plan.level,
                                  out_size=out)
