"""Progress of a long command (``patches bench``, ``patches preview``, the ``bench`` runners)
on stderr, one home for all of them.

On a terminal: a tqdm bar (tqdm comes with the ``patches`` extra; without it, the lines below).
Otherwise (a CI log, ``nohup``, a pipe): one plain line every ``every_s`` seconds (default
``WSI_PROGRESS_S``, else 10) and one at the end, never carriage-return redraws. The first
update after a quiet interval prints; nothing is printed by a timer of its own, so a command
that makes no progress prints nothing new (its own deadlines say why). Not thread-safe: one
thread updates it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TextIO

PROGRESS_ENV = "WSI_PROGRESS_S"
DEFAULT_EVERY_S = 10.0


def every_s_from(environ: Mapping[str, str]) -> float:
    """Seconds between progress lines: ``WSI_PROGRESS_S`` (>= 0) or 10.

    Raises ``ValueError`` naming the variable for anything else."""
    raw = environ.get(PROGRESS_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_EVERY_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ValueError(f"{PROGRESS_ENV}={raw!r}: expected seconds >= 0")
    return value


class Progress:
    """``with Progress("bench", total=1000, unit="patch") as progress: progress.update()``.

    ``total`` may be ``None`` (unknown). ``stream`` defaults to ``sys.stderr``; ``bar``
    (default: whether ``stream`` is a terminal) picks the tqdm bar; ``clock`` is seconds."""

    def __init__(self, label: str, total: int | None = None, unit: str = "item", *,
                 stream: TextIO | None = None, every_s: float | None = None,
                 bar: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_s if every_s is not None else every_s_from(os.environ)
        self.clock = clock
        self.done = 0
        self.start = self.said = clock()
        self._bar: Any = None
        if bar if bar is not None else _is_terminal(self.stream):
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=total, desc=label, unit=unit, file=self.stream)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self.clock()
        if now - self.said >= self.every_s:
            self.said = now
            self._line(now, "")

    def close(self, failed: bool = False) -> None:
        """The bar's last state, or the closing line (count, rate and seconds); none when
        ``failed`` (the command's one error line says what happened)."""
        if self._bar is not None:
            self._bar.close()
        elif not failed:
            now = self.clock()
            self._line(now, f" in {now - self.start:.1f} s")

    def _line(self, now: float, tail: str) -> None:
        of = f"/{self.total}" if self.total is not None else ""
        rate = self.done / max(now - self.start, 1e-9)
        units = self.unit + ("es" if self.unit.endswith(("ch", "sh", "s", "x")) else "s")
        print(f"{self.label}: {self.done}{of} {units}, {rate:.1f}/s{tail}",
              file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(failed=exc is not None)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
