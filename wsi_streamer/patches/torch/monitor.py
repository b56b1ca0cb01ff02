"""``MonitoredLoader``: where a training loop's time goes (waiting for data vs computing),
and its throughput, without synchronising a CUDA device except at log boundaries."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

logger = logging.getLogger(__name__)


def batch_size_of(batch: Any) -> int:
    """Items in a collated batch: the first dimension of ``image`` (or of the first tensor),
    else the length of the first list."""
    if isinstance(batch, dict):
        values = [batch["image"]] if "image" in batch else list(batch.values())
        for value in values:
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                return int(value.shape[0])
        for value in values:
            if isinstance(value, (list, tuple)):
                return len(value)
    if isinstance(batch, torch.Tensor) and batch.dim() > 0:
        return int(batch.shape[0])
    if isinstance(batch, (list, tuple)) and batch:
        return batch_size_of(batch[0])
    return 1


@dataclass
class _Window:
    wait_ns: int = 0
    compute_ns: int = 0
    wall_ns: int = 0
    steps: int = 0
    patches: int = 0

    def to_dict(self) -> dict[str, float]:
        if not self.steps:
            return {}
        wall_s = max(self.wall_ns / 1e9, 1e-9)
        return {"loader/data_wait_ms": self.wait_ns / 1e6 / self.steps,
                "loader/compute_ms": self.compute_ns / 1e6 / self.steps,
                "loader/step_ms": self.wall_ns / 1e6 / self.steps,
                "loader/data_fraction": self.wait_ns / max(self.wall_ns, 1),
                "loader/batches_per_sec": self.steps / wall_s,
                "loader/patches_per_sec": self.patches / wall_s}


class MonitoredLoader:
    """Wraps a loader: iterate it, call ``mark_step()`` after each training step. Every
    ``log_every`` steps ``mark_step`` returns ``loader/*`` timings (data wait, compute, step,
    data fraction, batches/s, patches/s over the window) plus ``dataset.stats_dict()`` and
    ``extra``; else None. On a CUDA ``device`` compute is timed with events on the current
    stream and the device is synchronised only at those log boundaries."""

    def __init__(self, loader: Any, dataset: Any = None, device: torch.device | str | None = None,
                 log_every: int = 100) -> None:
        if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
            raise ValueError(f"log_every must be an int >= 1, got {log_every!r}")
        self.loader, self.dataset, self.log_every = loader, dataset, log_every
        self.device = torch.device(device) if isinstance(device, str) else device
        self._cuda = self.device is not None and self.device.type == "cuda"
        self._it: Iterator[Any] | None = None
        self._started: int | None = None  # when next() was entered
        self._yielded: int | None = None  # when the batch was returned
        self._event: Any = None
        self._pending: list[tuple[Any, Any]] = []
        self._window, self._life = _Window(), _Window()
        self.steps = 0
        self._batches = 0  # of the current iteration

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> MonitoredLoader:
        self._it = iter(self.loader)
        self._started = self._yielded = self._event = None
        self._batches = 0
        return self

    def __next__(self) -> Any:
        if self._it is None:
            self.__iter__()
        assert self._it is not None
        if self._yielded is not None:  # no mark_step since the last batch: close it now
            self._finish()
        t0 = time.perf_counter_ns()
        try:
            batch = next(self._it)
        except StopIteration:
            if not self._batches:
                logger.warning("the loader ended without a batch: its stream yielded 0 "
                               "patches (an endless stream raises NoPatchesError instead)")
            raise
        self._batches += 1
        t1 = time.perf_counter_ns()
        n = batch_size_of(batch)
        for acc in (self._window, self._life):
            acc.wait_ns += t1 - t0
            acc.patches += n
        self._started, self._yielded = t0, t1
        if self._cuda:
            self._event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            self._event.record(torch.cuda.current_stream(self.device))
        return batch

    def mark_step(self, extra: dict[str, Any] | None = None) -> dict[str, Any] | None:
        if self._yielded is None:
            raise RuntimeError("mark_step() before a batch was taken from the loader")
        self._finish()
        self.steps += 1
        if self.steps % self.log_every:
            return None
        self._resolve_cuda()
        payload: dict[str, Any] = dict(self._window.to_dict())
        if self.dataset is not None and hasattr(self.dataset, "stats_dict"):
            payload.update(self.dataset.stats_dict())
        payload.update(extra or {})
        self._window = _Window()
        return payload

    def lifetime_stats(self) -> dict[str, float]:
        self._resolve_cuda()
        return self._life.to_dict()

    def reset(self) -> None:
        self._window, self._life = _Window(), _Window()
        self.steps = 0
        self._started = self._yielded = self._event = None
        self._pending.clear()

    def _finish(self) -> None:
        assert self._started is not None and self._yielded is not None
        now = time.perf_counter_ns()
        if self._cuda:
            end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            end.record(torch.cuda.current_stream(self.device))
            self._pending.append((self._event, end))
        for acc in (self._window, self._life):
            if not self._cuda:
                acc.compute_ns += now - self._yielded
            acc.wall_ns += now - self._started
            acc.steps += 1
        self._started = self._yielded = self._event = None

    def _resolve_cuda(self) -> None:
        if not self._pending:
            return
        t0 = time.perf_counter_ns()
        torch.cuda.synchronize(self.device)
        waited = time.perf_counter_ns() - t0
        compute = round(sum(a.elapsed_time(b) for a, b in self._pending) * 1e6)
        self._pending.clear()
        for acc in (self._window, self._life):
            acc.compute_ns += compute
            acc.wall_ns += waited
