"""What the engine's pool holds: slides opening in the background (``Pending``), open
slides with their schedule counters (``Entry``), planned reads (``Task``), and the streak of
slides that gave nothing (``Streak``)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .handle import SlideHandle
from .types import PatchCoordinate, SlideMetadata, TissueMask

if TYPE_CHECKING:
    from .resume import EntryResume, Mark, SlidePool

# a read's outcome: the patch, whether the filter accepts it, the ``mpp_override`` views' reads
ReadResult = tuple[np.ndarray, bool, dict[str, np.ndarray]]

@dataclass
class Opened:
    """A slide ready for the pool (or why it is not)."""

    path: str
    handle: SlideHandle | None = None
    mask: TissueMask | None = None
    metadata: SlideMetadata | None = None
    error: str | None = None


@dataclass
class Entry:
    """A slide in the pool: ``ordinal`` numbers the run's entries (its coordinate stream);
    ``budget``: attempts before it retires; ``slide_pool``: its ``without_replacement`` pool."""

    opened: Opened
    coords: Iterator[PatchCoordinate]
    ordinal: int = 0
    budget: int = 0
    slide_pool: SlidePool | None = None
    planned: int = 0
    done: int = 0
    reads_ok: int = 0
    yielded: int = 0
    retired: bool = False  # left the pool; closed once its reads are done
    logged_error: bool = False


@dataclass
class Task:
    """A planned read; ``mark``: the planner just before it (``resume.Mark``); ``pool_pos``:
    its slide pool and the pops taken once it was drawn."""

    entry: Entry
    coord: PatchCoordinate
    mark: Mark | None = None
    pool_pos: tuple[SlidePool, int] | None = None
    future: Future[ReadResult] | None = None


@dataclass
class Pending:
    """A slide of the queue or the pool whose open runs (or will run) in the background;
    ``deferred``: the stream stopped waiting for it (``limits.PIPELINE_OPEN_PATIENCE_S``)."""

    path: str
    future: Future[Opened] | None = None
    deferred: bool = False
    resume: EntryResume | None = None  # a resumed run's entry, rebuilt when opened
    budget: int = 0  # attempts of its entry: its pass's, set when it joins the pool


@dataclass
class Streak:
    """Slides that gave nothing since the last yielded patch, and why. Once it holds every
    slide, a cycling stream can never yield again (``NoPatchesError``)."""

    reasons: dict[str, str] = field(default_factory=dict)

    def add(self, path: str, why: str) -> None:
        self.reasons.setdefault(path, why)


def no_patches_message(reasons: dict[str, str]) -> str:
    items = sorted(reasons.items())
    shown = "; ".join(f"{path}: {why}" for path, why in items[:10])
    more = f" (and {len(items) - 10} more)" if len(items) > 10 else ""
    return f"a full pass over {len(items)} slide(s) yielded no patch: {shown}{more}"

