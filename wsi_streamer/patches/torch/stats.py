"""What the processes of one ``WsiStreamDataset`` share: exact statistics and the epoch.

It is a folder (under ``/dev/shm`` when there is one and it has room, else the temporary
folder) made by the process that constructs the dataset and removed when that process's
dataset is collected; it travels to DataLoader workers as a path, so ``fork``, ``spawn`` and
``forkserver`` workers, persistent or not, all find it. Nobody has to read it and nothing in it
can fill up, so a worker never blocks on it (wsistream's statistics pipe hangs every worker
once full). Every file is given its pages when made (``posix_fallocate``) and is only written
in place afterwards, so a ``/dev/shm`` that fills later (Docker's default is 64 MB) can never
fail a write to it nor kill a process touching a mapped page (SIGBUS): a process that cannot
reserve its slot runs with its statistics off (one warning per dataset, ``stats/off`` in
``stats_dict``), and training goes on.

- ``slot-<n>.bin``: one per writing process (the main process iterating with
  ``num_workers=0``, or a worker). A writer takes the first slot it can lock (``flock``,
  released by the kernel when the process ends, even when it is killed) and adds its deltas
  there through ``mmap`` after every patch, so a slot is reused and the folder does not grow
  with epochs. A slot is a header and a table of named 64-bit values: int sums, float sums,
  float minima and maxima. Only its owner writes a slot, readers never lock: a value being
  updated is read before or after the update.
- ``seen.bin``: one byte per distinct slide, set when the slide is processed
  (``pipeline/slides_unique``).
- ``control.json``: the epoch of ``set_epoch`` and which loader iteration got which
  iteration number, read and written under ``flock`` (microseconds per iteration start),
  padded with spaces to its reserved ``CONTROL_BYTES``.
- ``off.bin``: how many processes could not reserve a slot (their statistics are off).
- ``ended-<iteration>-<worker>``: the ``NoPatchesError`` message of a worker whose shard can
  never yield; the last worker of an iteration to write one raises in the main process.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import mmap
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from .slots import (
    CAPACITY,
    ENTRY,
    FMAX,
    FMIN,
    FSUM,
    HEADER,
    INT,
    MAGIC,
    SLOT_BYTES,
    TF_COUNT,
    TF_MAX,
    TF_MIN,
    TF_TOTAL,
    PipelineRecorder,
    SlotWriter,
    reserve,
)

__all__ = ["PipelineRecorder", "SharedState", "shared_folder"]

logger = logging.getLogger(__name__)

FIRST_KEYS = ("pipeline/slides_processed", "pipeline/slides_failed", "pipeline/slides_unique",
              "pipeline/patches_extracted", "pipeline/patches_filtered")
_DYNAMIC = ("pipeline/mpp_", "pipeline/cancer_type/", "pipeline/sample_type/")
MAX_CLAIMS = 256  # loader iterations remembered by control.json
CONTROL_BYTES = 64 * 1024  # reserved for control.json: 256 claims take about 12 KB
OFF_KEY = "stats/off"  # in stats_dict when some process's statistics are off: how many


def shared_folder() -> str:
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()


def _make_file(path: str, size: int, content: bytes = b"") -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        reserve(fd, size)
        os.pwrite(fd, content, 0)
    finally:
        os.close(fd)


@contextmanager
def _locked(path: str) -> Iterator[int]:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # releases the lock


def _load(fd: int) -> dict[str, Any]:
    try:
        state = json.loads(os.pread(fd, CONTROL_BYTES, 0))
    except ValueError:  # empty or torn by a process killed while writing: start again
        state = {}
    return {"epoch": 0, "next": 0, "claims": {}, **(state if isinstance(state, dict) else {})}


def _store(fd: int, state: dict[str, Any]) -> None:
    """In place, within the reserved bytes (the oldest claims go first if need be)."""
    data = json.dumps(state).encode()
    while len(data) > CONTROL_BYTES and state["claims"]:
        del state["claims"][next(iter(state["claims"]))]
        data = json.dumps(state).encode()
    os.pwrite(fd, data.ljust(CONTROL_BYTES), 0)


def _remove(folder: str, owner: int) -> None:
    if os.getpid() == owner:  # a forked copy never removes its parent's folder
        shutil.rmtree(folder, ignore_errors=True)


class SharedState:
    """The folder of one dataset (see the module). Pickles as its path; the copy in the
    process that made it removes the folder when collected."""

    def __init__(self, n_slides: int) -> None:
        self.folder = _make_folder(n_slides)
        self._finalizer = weakref.finalize(self, _remove, self.folder, os.getpid())
        self._writer: SlotWriter | None = None
        self._writer_pid = -1
        self._baseline: dict[str, int | float] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_finalizer", "_writer"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._writer, self._writer_pid = None, -1

    # --- writing (any process) ---------------------------------------------------------------
    def writer(self) -> SlotWriter | None:
        """This process's slot writer (None, with a warning, if the folder is unusable)."""
        if self._writer_pid != os.getpid():
            self._writer_pid = os.getpid()
            try:
                self._writer = SlotWriter(self.folder)
            except OSError as exc:
                self._writer = None
                first = self._count_off() == 1
                (logger.warning if first else logger.debug)(
                    "dataset statistics off in process %d (training goes on; stats_dict() "
                    "counts the others and reports %r): %s", os.getpid(), OFF_KEY, exc)
        return self._writer

    def _count_off(self) -> int:
        """One more process without statistics; the new count (0 if unknown)."""
        try:
            with _locked(os.path.join(self.folder, "off.bin")) as fd:
                count = int.from_bytes(os.pread(fd, 8, 0).ljust(8, b"\0"), "little") + 1
                os.pwrite(fd, count.to_bytes(8, "little"), 0)
                return count
        except OSError:
            return 0

    def processes_off(self) -> int:
        try:
            with open(os.path.join(self.folder, "off.bin"), "rb") as f:
                return int.from_bytes(f.read(8).ljust(8, b"\0"), "little")
        except OSError:
            return 0

    def claim_iteration(self, identity: str) -> tuple[int, int]:
        """(epoch, iteration number since ``set_epoch``) of the loader iteration named
        ``identity``: every worker of one iteration gets the same pair."""
        with _locked(os.path.join(self.folder, "control.json")) as fd:
            state = _load(fd)
            claims: dict[str, list[int]] = state["claims"]
            if identity not in claims:
                claims[identity] = [state["epoch"], state["next"]]
                state["next"] += 1
                while len(claims) > MAX_CLAIMS:
                    del claims[next(iter(claims))]
                _store(fd, state)
            epoch, iteration = claims[identity]
            return int(epoch), int(iteration)

    def shard_ended(self, identity: str, worker: int, num_workers: int,
                    message: str) -> list[str] | None:
        """Worker ``worker`` of the loader iteration ``identity`` can never yield (``message``):
        the messages of every such worker once all ``num_workers`` are (the last one to end
        sees them all: each writes ``ended-<identity>-<worker>`` before listing), else None."""
        prefix = "ended-" + "".join(c if c.isalnum() else "_" for c in identity) + "-"
        with open(os.path.join(self.folder, f"{prefix}{worker}"), "w") as f:
            f.write(message)
        names = [n for n in os.listdir(self.folder) if n.startswith(prefix)]
        if len(names) < num_workers:
            return None
        messages = []
        for name in sorted(names):
            with open(os.path.join(self.folder, name)) as f:
                messages.append(f.read())
        return messages

    def set_epoch(self, epoch: int) -> None:
        """Later iterations: ``epoch``, numbered from 0. An iteration already claimed keeps
        its pair, so all its workers agree even if this races their start."""
        with _locked(os.path.join(self.folder, "control.json")) as fd:
            state = _load(fd)
            state.update(epoch=epoch, next=0)
            _store(fd, state)

    # --- reading (the main process) ----------------------------------------------------------
    def _slots(self) -> Iterator[np.ndarray]:
        names = [n for n in os.listdir(self.folder) if n.startswith("slot-")]
        for name in sorted(names, key=lambda n: int(n[5:-4])):
            try:
                with open(os.path.join(self.folder, name), "rb") as slot:
                    head = np.frombuffer(slot.read(HEADER.itemsize), HEADER, count=1)
                    if head["magic"][0] != MAGIC:
                        continue
                    used = min(int(head["used"][0]), CAPACITY)
                    raw = slot.read(used * ENTRY.itemsize)
            except (OSError, ValueError):
                continue
            yield np.frombuffer(raw, ENTRY, count=len(raw) // ENTRY.itemsize)

    def totals(self) -> tuple[dict[str, int | float], dict[str, float]]:
        """Sums (ints, float sums) and extremes (float min / max) over every slot."""
        sums: dict[str, int | float] = {}
        extremes: dict[str, float] = {}
        for table in self._slots():
            for entry in table:
                if entry["klen"] <= 0:
                    continue
                key = bytes(entry["key"]).decode("utf-8", "replace")
                kind = int(entry["kind"])
                if kind == INT:
                    sums[key] = sums.get(key, 0) + int(entry["ivalue"])
                elif kind == FSUM:
                    sums[key] = sums.get(key, 0.0) + float(entry["fvalue"])
                elif kind in (FMIN, FMAX):
                    pick = min if kind == FMIN else max
                    value = float(entry["fvalue"])
                    extremes[key] = pick(extremes.get(key, value), value)
        return sums, extremes

    def slides_unique(self) -> int:
        return int(np.count_nonzero(np.fromfile(os.path.join(self.folder, "seen.bin"),
                                                np.uint8)))

    def stats_dict(self) -> dict[str, int | float]:
        """The pipeline's ``stats_dict`` summed over every process since ``reset``."""
        sums, extremes = self.totals()
        totals = {k: v - self._baseline.get(k, 0) for k, v in sums.items()}
        out: dict[str, int | float] = {key: totals.pop(key, 0) for key in FIRST_KEYS}
        out["pipeline/slides_unique"] = self.slides_unique()
        count, total = totals.pop(TF_COUNT, 0), totals.pop(TF_TOTAL, 0.0)
        if count > 0 and math.isfinite(extremes.get(TF_MIN, math.inf)):
            out["pipeline/mean_tissue_fraction"] = total / count
            out["pipeline/min_tissue_fraction"] = extremes[TF_MIN]
            out["pipeline/max_tissue_fraction"] = extremes[TF_MAX]

        def group(key: str) -> int:
            for rank, prefix in enumerate(_DYNAMIC):
                if key.startswith(prefix):
                    return rank
            return 3 if key == "pipeline/error_count" else 4 if key.startswith("pipeline/") else 5

        for key in sorted(totals, key=group):
            value = totals[key]
            if value or not (group(key) < 4):
                out[key] = value
        off = self.processes_off()
        if off:
            out[OFF_KEY] = off
        return out

    def reset(self) -> None:
        """Counts restart from zero. Exact between loader iterations; a pipeline iterating
        at that moment keeps its earlier slides and tissue extremes."""
        sums, _ = self.totals()
        self._baseline = dict(sums)
        with open(os.path.join(self.folder, "seen.bin"), "r+b") as seen:
            size = os.fstat(seen.fileno()).st_size
            seen.write(bytes(size))
        for name in os.listdir(self.folder):
            if name.startswith("slot-"):
                self._reset_extremes(os.path.join(self.folder, name))

    @staticmethod
    def _reset_extremes(path: str) -> None:
        try:
            with open(path, "r+b") as slot:
                if os.fstat(slot.fileno()).st_size < SLOT_BYTES:
                    return
                with mmap.mmap(slot.fileno(), SLOT_BYTES) as mm:
                    table = np.frombuffer(mm, ENTRY, count=CAPACITY, offset=HEADER.itemsize)
                    kind, fvalue = table["kind"], table["fvalue"]
                    fvalue[kind == FMIN] = math.inf
                    fvalue[kind == FMAX] = -math.inf
                    del table, kind, fvalue
        except OSError:
            pass


def _make_folder(n_slides: int) -> str:
    """A new folder with its files and their pages reserved: under ``shared_folder()``, or
    the temporary folder when that has no room; ``OSError`` when neither has."""
    error: OSError | None = None
    for parent in dict.fromkeys((shared_folder(), tempfile.gettempdir())):
        folder = ""
        try:
            folder = tempfile.mkdtemp(prefix="wsi_streamer-torch-", dir=parent)
            _make_file(os.path.join(folder, "seen.bin"), max(1, n_slides))
            _make_file(os.path.join(folder, "control.json"), CONTROL_BYTES,
                       json.dumps({"epoch": 0, "next": 0, "claims": {}}).encode())
            _make_file(os.path.join(folder, "off.bin"), 8)
            return folder
        except OSError as exc:
            logger.warning("dataset statistics folder not made in %s: %s", parent, exc)
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
            error = exc
    assert error is not None
    raise error
