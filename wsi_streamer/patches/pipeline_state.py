"""``PatchPipeline``'s resumable state (torchdata's ``Stateful`` protocol: ``state_dict`` /
``load_state_dict``) and the ``without_replacement`` slide pools it records. What a state holds
and how a run is rebuilt from it: ``resume.py``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ResumeStateError
from .resume import (
    PIPELINE_KIND,
    STATE_VERSION,
    PoolState,
    RunState,
    SlidePool,
    describe_config,
    digest,
    pool_seed,
    run_from_json,
    seed_from_json,
    seed_to_json,
)
from .rng import generators
from .slots import Opened
from .types import PatchCoordinate

if TYPE_CHECKING:
    from .engine import StreamRun
    from .sampling.base import PatchSampler
    from .stats import PipelineStats
    from .transforms import PatchTransform
    from .views import ViewConfig


class ResumableState:
    """Mixed into ``PatchPipeline`` (which sets these attributes)."""

    seed: int | np.random.SeedSequence | None
    slide_paths: list[str]
    sampler: PatchSampler
    transforms: PatchTransform | None
    shared_transforms: PatchTransform | None
    views: list[ViewConfig] | None
    backend: Any
    tissue_detector: Any
    patch_filter: Any
    thumbnail_size: tuple[int, int]
    slide_sampling: str
    pool_size: int
    patches_per_slide: int
    patches_per_visit: int
    cycle: bool
    replacement: str
    _root: np.random.SeedSequence
    _order_rng: np.random.Generator
    _failed: set[str]
    _open_failures: dict[str, int]
    _coordinate_pools: dict[str, SlidePool]
    _pool_marks: dict[str, tuple[SlidePool, int]]
    _saved_pools: dict[str, PoolState]
    _run: StreamRun | None
    _resume: tuple[RunState | None, list[Any]] | None
    _stats: PipelineStats

    def _seed_all(self) -> None:
        raise NotImplementedError

    def _consumer_generators(self) -> list[np.random.Generator]:
        """The generators drawn from in the consuming thread (transforms and views)."""
        found = generators(self.transforms) + generators(self.shared_transforms)
        for view in self.views or ():
            found += generators(view.crop) + generators(view.transforms)
        return found

    def _set_consumer_states(self, states: list[Any]) -> None:
        found = self._consumer_generators()
        if len(found) != len(states):
            raise ResumeStateError(f"the saved state has {len(states)} transform generators, "
                                   f"this pipeline {len(found)}")
        for generator, state in zip(found, states, strict=True):
            generator.bit_generator.state = state

    def recipe_digest(self) -> str:
        """A fingerprint of everything that shapes the stream of patches (components and
        schedule arguments; not ``prefetch``, ``io_threads`` or storage settings). Computed
        once (components are copies the pipeline never changes)."""
        return self._fingerprints()[1]

    def _fingerprints(self) -> tuple[str, str]:
        """(sources, recipe) digests, cached: a state is taken after every batch."""
        cached = self.__dict__.get("_digests")
        if cached is None:
            cached = (digest("\n".join(self.slide_paths)), digest(describe_config([
                type(self.backend).__name__, self.tissue_detector, self.sampler,
                self.patch_filter, self.transforms, self.shared_transforms, self.views,
                self.thumbnail_size, self.slide_sampling, self.pool_size,
                self.patches_per_slide, self.patches_per_visit, self.cycle,
                self.replacement])))
            self.__dict__["_digests"] = cached
        return cached

    def state_dict(self) -> dict[str, Any]:
        """The stream as of the last ``PatchResult`` handed out (patches planned or read
        ahead are not counted: a resumed pipeline plans them again). JSON-serialisable,
        versioned, a few hundred bytes plus one small record per slide pool; never images.
        torchdata's ``Stateful`` protocol."""
        run = self._run
        return {"version": STATE_VERSION, "kind": PIPELINE_KIND,
                "sources": self._fingerprints()[0],
                "recipe": self.recipe_digest(), "seed": seed_to_json(self._root),
                "run": run.state() if run is not None else None,
                "transforms": [dict(g.bit_generator.state)
                               for g in self._consumer_generators()],
                "stats": self._stats.handed_out()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Make the next iteration continue ``state``'s run (``state_dict``'s output).
        ``ResumeStateError`` when it is of another version, other sources, another recipe or
        another seed (a pipeline made with ``seed=None`` takes the saved seed)."""
        kind = state.get("kind") if isinstance(state, Mapping) else None
        if kind != PIPELINE_KIND:
            raise ResumeStateError(f"not a PatchPipeline state (kind {kind!r})")
        if state.get("version") != STATE_VERSION:
            raise ResumeStateError(f"pipeline state version {state.get('version')!r}; this "
                                   f"release reads version {STATE_VERSION}")
        if state.get("sources") != self._fingerprints()[0]:
            raise ResumeStateError("the saved state is of other sources (another slide list "
                                   f"than these {len(self.slide_paths)} slides)")
        if state.get("recipe") != self.recipe_digest():
            raise ResumeStateError("the saved state is of another recipe (sampler, detector, "
                                   "filter, transforms, views or schedule arguments differ)")
        try:
            saved_seed = seed_from_json(state["seed"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ResumeStateError(f"malformed pipeline state: seed: {exc}") from exc
        if self.seed is None:
            self.seed = saved_seed
            self._seed_all()
        elif seed_to_json(saved_seed) != seed_to_json(self._root):
            raise ResumeStateError("the saved state is of another seed")
        run = None if state.get("run") is None else run_from_json(state["run"])
        if run is not None:
            self._saved_pools = dict(run.pools)
            self._coordinate_pools.clear()
            self._pool_marks.clear()
        transforms = state.get("transforms")
        if not isinstance(transforms, list):
            raise ResumeStateError("malformed pipeline state: transforms")
        self._resume = (run, transforms)
        if state.get("stats") is not None:  # absent in an earlier release's states
            try:
                self._stats.continue_from(state["stats"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ResumeStateError(f"malformed pipeline state: stats: {exc}") from exc

    def pool_states(self) -> dict[str, PoolState]:
        """Each slide pool's cycle, shuffle and pops consumed (restored ones not yet rebuilt
        included)."""
        out = dict(self._saved_pools)
        for path, (slide_pool, pops) in self._pool_marks.items():
            out[path] = PoolState(slide_pool.seed, slide_pool.cycle, slide_pool.pool.draws,
                                  pops)
        return out

    def adopt_pools(self, pools: Mapping[str, PoolState]) -> None:
        """Continue these slides' pools (from another stream's state) when next opened."""
        self._saved_pools.update({path: pool for path, pool in pools.items()
                                  if path not in self._coordinate_pools})

    def order_state(self) -> dict[str, Any]:
        return dict(self._order_rng.bit_generator.state)

    def set_order_state(self, state: dict[str, Any]) -> None:
        self._order_rng.bit_generator.state = state

    def failures(self) -> tuple[set[str], dict[str, int]]:
        return self._failed, self._open_failures

    def consumed_from_pool(self, path: str, position: tuple[SlidePool, int]) -> None:
        self._pool_marks[path] = position

    def slide_pool(self, opened: Opened) -> SlidePool:
        """The slide's pool: kept from its last open (reshuffled, next cycle, once exhausted
        when cycling), rebuilt from a restored state, or built (cycle 0)."""
        assert opened.handle is not None and opened.mask is not None
        path = opened.path
        current = self._coordinate_pools.get(path)
        saved = self._saved_pools.pop(path, None) if current is None else None
        if saved is not None:
            base: Any = self.sampler.build_coordinate_pool(opened.handle, opened.mask,
                                                           np.random.default_rng(0))
            rng = np.random.default_rng(pool_seed(saved.seed, path, saved.cycle))
            current = SlidePool(base.redrawn(rng, saved.draws), rng, saved.seed, saved.cycle)
            for _ in range(saved.pops):
                current.pool.pop(rng)
            self._pool_marks[path] = (current, saved.pops)
        elif current is None:
            rng = np.random.default_rng(pool_seed(self._root, path, 0))
            current = SlidePool(self.sampler.build_coordinate_pool(opened.handle, opened.mask,
                                                                   rng), rng, self._root, 0)
        elif current.pool.exhausted and self.cycle:
            cycle = current.cycle + 1
            rng = np.random.default_rng(pool_seed(current.seed, path, cycle))
            current = SlidePool(current.pool.reshuffled(rng), rng, current.seed, cycle)
        self._coordinate_pools[path] = current
        return current


def drain(slide_pool: SlidePool) -> Iterator[PatchCoordinate]:
    pool, rng = slide_pool.pool, slide_pool.rng
    while not pool.exhausted:
        coord = pool.pop(rng)
        if coord is None:
            return
        yield coord
