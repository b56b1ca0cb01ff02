"""The resumable state of one ``StreamRun``: where the schedule stood at the last patch handed
out, as counters and seeds (never images, never a replay of reads).

The planner runs up to ``prefetch`` patches ahead of the consumer, so each planned ``Task``
carries the ``Mark`` of the planner just before it was planned (pool layout, rotation index,
queue position, pass); the state at a yield is the mark of the first task not yet consumed
(or the planner's own when nothing is ahead). Counters of an entry in the pool (attempts
planned = attempts consumed, reads that succeeded, patches yielded) are read from the entry
itself: every task planned before the mark has been consumed. A slide's coordinate stream is
a function of (pipeline seed, entry ordinal), and a ``without_replacement`` pool of (seed,
slide, cycle, permutations drawn, pops), so a resumed run rebuilds both without reading a
pixel."""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

from ..errors import ResumeStateError

if TYPE_CHECKING:
    from .slots import Entry

STATE_VERSION = 1
PIPELINE_KIND = "wsi_streamer.patches.PatchPipeline"


@dataclass(frozen=True, slots=True)
class PassMark:
    """A pass of the queue: its number, the order generator's state before its permutation
    was drawn (and the failed slides it left out), and how many slides it queued.
    ``explicit``: a pass given as (slide, budget) pairs instead (the first pass of an
    elastic resume: the budgets the old topology left)."""

    number: int
    order_state: dict[str, Any]
    failed: frozenset[str]
    size: int
    explicit: tuple[tuple[str, int], ...] | None = None


class Slot(NamedTuple):
    """A slot of the pool at a mark: its slide, its budget (that of the pass that queued it:
    the pool may still hold slides of the previous pass), what it holds (an open entry, a
    slide still opening (None), or a resumed one still opening: its saved counters), and
    whether the stream stopped waiting for its open (``deferred``)."""

    path: str
    budget: int | None  # None: a state of an earlier release (the current pass's budget)
    entry: Entry | EntryResume | None
    deferred: bool = False


class Mark(NamedTuple):  # a tuple: one is made per planned patch
    """The planner between two tasks. ``slots``: the pool, each a ``Slot``; ``left``: slides
    of the pass still queued."""

    passed: PassMark
    left: int
    slots: tuple[Slot, ...]
    idx: int
    visit: int
    ordinal: int
    open_failures: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class EntryResume:
    """An open slide of the pool to rebuild: its ordinal (its coordinate stream) and the
    attempts it had consumed."""

    ordinal: int
    done: int
    reads_ok: int
    yielded: int


@dataclass
class SlidePool:
    """A slide's ``without_replacement`` pool in its cycle: the generator that shuffled it
    and draws from it, seeded by (``seed``, slide, cycle)."""

    pool: Any
    rng: np.random.Generator
    seed: np.random.SeedSequence
    cycle: int


@dataclass(frozen=True, slots=True)
class PoolState:
    seed: np.random.SeedSequence
    cycle: int
    draws: int | list[int]
    pops: int


@dataclass
class RunState:
    """A parsed run state (``StreamRun(resume=...)``)."""

    passed: PassMark
    left: int
    slots: list[Slot]  # entries as EntryResume
    idx: int
    visit: int
    ordinal: int
    failed: set[str]
    open_failures: dict[str, int]
    pools: dict[str, PoolState] = field(default_factory=dict)
    finished: bool = False


class RunLedger(Protocol):
    """What a resumable run reads and restores of its pipeline's bookkeeping, which outlives
    one run (``PatchPipeline`` is one)."""

    def order_state(self) -> dict[str, Any]:
        """The slide-order generator's state (a copy)."""
        ...

    def set_order_state(self, state: dict[str, Any]) -> None: ...

    def failures(self) -> tuple[set[str], dict[str, int]]:
        """The slides left out of later passes and the failed opens per slide (the live
        objects: a restored run updates them in place)."""
        ...

    def pool_states(self) -> dict[str, PoolState]:
        """Each ``without_replacement`` slide pool as consumed so far."""
        ...

    def consumed_from_pool(self, path: str, position: tuple[SlidePool, int]) -> None:
        """A patch of ``path``'s pool was consumed; the pool stood at ``position``."""
        ...


def slide_key(path: str) -> int:
    """A stable 32-bit key of a slide path (a seed component, the same in every process)."""
    return zlib.crc32(path.encode("utf-8"))


def pool_seed(root: np.random.SeedSequence, path: str, cycle: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, 5, slide_key(path),
                                                           cycle))


def seed_to_json(seq: np.random.SeedSequence) -> dict[str, Any]:
    entropy: Any = seq.entropy
    return {"entropy": [int(e) for e in entropy] if isinstance(entropy, (list, tuple,
                                                                          np.ndarray))
            else int(entropy), "spawn_key": [int(k) for k in seq.spawn_key]}


def seed_from_json(raw: Any) -> np.random.SeedSequence:
    return np.random.SeedSequence(raw["entropy"], spawn_key=tuple(raw["spawn_key"]))


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def describe_config(value: Any, depth: int = 0) -> str:
    """A stable text of a configuration (components by class and public attributes,
    recursively; no object addresses), to fingerprint a recipe."""
    if depth > 6:
        return "..."
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(describe_config(v, depth + 1) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {describe_config(v, depth + 1)}"
                               for k, v in sorted(value.items(), key=lambda kv: repr(kv[0])))
    attrs = getattr(value, "__dict__", None)
    if attrs is None:
        slots = getattr(type(value), "__slots__", ())
        attrs = {name: getattr(value, name) for name in slots if hasattr(value, name)}
    public = {k: v for k, v in attrs.items() if not k.startswith("_")}
    return f"{type(value).__qualname__}({describe_config(public, depth + 1)})"


def mark_to_json(mark: Mark, failed: set[str], pools: dict[str, PoolState],
                 finished: bool) -> dict[str, Any]:
    slots: list[dict[str, Any]] = []
    for path, budget, entry, deferred in mark.slots:
        if entry is not None:  # an open slot: never deferred
            slots.append({"path": path, "budget": budget, "ordinal": entry.ordinal,
                          "done": entry.done, "reads_ok": entry.reads_ok,
                          "yielded": entry.yielded})
        elif deferred:
            slots.append({"path": path, "budget": budget, "deferred": True})
        else:
            slots.append({"path": path, "budget": budget})
    return {
        "pass": {"number": mark.passed.number, "order_state": mark.passed.order_state,
                 "failed": sorted(mark.passed.failed), "size": mark.passed.size,
                 "explicit": None if mark.passed.explicit is None
                 else [list(pair) for pair in mark.passed.explicit]},
        "left": mark.left, "slots": slots, "idx": mark.idx, "visit": mark.visit,
        "ordinal": mark.ordinal, "failed": sorted(failed),
        "open_failures": dict(mark.open_failures),
        "pools": {path: {"seed": seed_to_json(s.seed), "cycle": s.cycle, "draws": s.draws,
                         "pops": s.pops} for path, s in sorted(pools.items())},
        "finished": finished,
    }


def run_from_json(raw: dict[str, Any]) -> RunState:
    """Parse ``mark_to_json``'s output; ``ResumeStateError`` if a field is missing or
    mistyped."""
    try:
        passed = raw["pass"]
        slots: list[Slot] = []
        for slot in raw["slots"]:
            resume = None if "ordinal" not in slot else EntryResume(
                int(slot["ordinal"]), int(slot["done"]), int(slot["reads_ok"]),
                int(slot["yielded"]))
            budget = slot.get("budget")
            slots.append(Slot(str(slot["path"]), None if budget is None else int(budget),
                              resume, bool(slot.get("deferred", False))))
        pools = {str(path): PoolState(seed_from_json(p["seed"]), int(p["cycle"]),
                                      p["draws"] if isinstance(p["draws"], int)
                                      else [int(d) for d in p["draws"]], int(p["pops"]))
                 for path, p in raw["pools"].items()}
        explicit = passed.get("explicit")
        return RunState(
            PassMark(int(passed["number"]), dict(passed["order_state"]),
                     frozenset(passed["failed"]), int(passed["size"]),
                     None if explicit is None
                     else tuple((str(path), int(budget)) for path, budget in explicit)),
            int(raw["left"]), slots, int(raw["idx"]), int(raw["visit"]), int(raw["ordinal"]),
            set(raw["failed"]), {str(k): int(v) for k, v in raw["open_failures"].items()},
            pools, bool(raw["finished"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ResumeStateError(f"malformed pipeline state: {type(exc).__name__}: {exc}"
                               ) from exc
