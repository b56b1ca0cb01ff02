"""What the processes of one ``WsiStreamDataset`` share: exact statistics and the epoch.

It is a folder (under ``/dev/shm`` when there is one, else the temporary folder) made by the
process that constructs the dataset and removed when that process's dataset is collected; it
travels to DataLoader workers as a path, so ``fork``, ``spawn`` and ``forkserver`` workers,
persistent or not, all find it. Nobody has to read it and nothing in it can fill up, so a
worker never blocks on it (wsistream's statistics pipe hangs every worker once full):

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
  iteration number, read and written under ``flock`` (microseconds per iteration start).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import mmap
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .pipeline import PatchPipeline

logger = logging.getLogger(__name__)

MAGIC = b"WSISTAT1"
CAPACITY = 1024  # named values per slot (keys: ~25 fixed, one per mpp, cancer and sample type)
KEY_BYTES = 112
HEADER = np.dtype([("magic", "S8"), ("used", "<i8"), ("pid", "<i8"), ("pad", "S40")])
ENTRY = np.dtype([("ivalue", "<i8"), ("fvalue", "<f8"), ("kind", "<i4"), ("klen", "<i4"),
                  ("key", f"S{KEY_BYTES}")])
SLOT_BYTES = HEADER.itemsize + CAPACITY * ENTRY.itemsize
INT, FSUM, FMIN, FMAX = 1, 2, 3, 4
TF_COUNT, TF_TOTAL, TF_MIN, TF_MAX = "_tf/count", "_tf/total", "_tf/min", "_tf/max"
FIRST_KEYS = ("pipeline/slides_processed", "pipeline/slides_failed", "pipeline/slides_unique",
              "pipeline/patches_extracted", "pipeline/patches_filtered")
_DYNAMIC = ("pipeline/mpp_", "pipeline/cancer_type/", "pipeline/sample_type/")
_NOT_SUMMED = ("pipeline/slides_unique", "pipeline/mean_tissue_fraction",
               "pipeline/min_tissue_fraction", "pipeline/max_tissue_fraction")
MAX_CLAIMS = 256  # loader iterations remembered by control.json


def shared_folder() -> str:
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()


def _key_bytes(key: str) -> bytes:
    raw = key.encode("utf-8")
    if len(raw) <= KEY_BYTES:
        return raw
    return raw[:KEY_BYTES - 13] + b"~" + hashlib.blake2b(raw, digest_size=6).hexdigest().encode()


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
        state = json.loads(os.pread(fd, 1 << 20, 0))
    except ValueError:  # empty or torn by a process killed while writing: start again
        state = {}
    return {"epoch": 0, "next": 0, "claims": {}, **(state if isinstance(state, dict) else {})}


def _store(fd: int, state: dict[str, Any]) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(state).encode(), 0)


def _remove(folder: str, owner: int) -> None:
    if os.getpid() == owner:  # a forked copy never removes its parent's folder
        shutil.rmtree(folder, ignore_errors=True)


class SlotWriter:
    """This process's slot (see the module). Used by one thread: the one iterating."""

    def __init__(self, folder: str) -> None:
        self.pid = os.getpid()
        number = 0
        while True:
            fd = os.open(os.path.join(folder, f"slot-{number}.bin"), os.O_RDWR | os.O_CREAT,
                         0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                os.close(fd)
                number += 1
        if os.fstat(fd).st_size < SLOT_BYTES:
            os.ftruncate(fd, SLOT_BYTES)
        self._fd = fd  # kept open: the lock lives as long as this process
        self._mm = mmap.mmap(fd, SLOT_BYTES)
        self._header = np.frombuffer(self._mm, HEADER, count=1)
        if self._header["magic"][0] != MAGIC:
            self._mm[:] = bytes(SLOT_BYTES)
            self._header["magic"] = MAGIC
        self._header["pid"] = self.pid
        self._table = np.frombuffer(self._mm, ENTRY, count=CAPACITY, offset=HEADER.itemsize)
        self._ivalue, self._fvalue = self._table["ivalue"], self._table["fvalue"]
        used = int(self._header["used"][0])
        self._index = {bytes(self._table["key"][i]).decode("utf-8", "replace"): i
                       for i in range(used)}
        self._full_logged = False
        with open(os.path.join(folder, "seen.bin"), "r+b") as seen:
            self._seen_mm = mmap.mmap(seen.fileno(), 0)
        self._seen = np.frombuffer(self._seen_mm, np.uint8)

    def _slot(self, key: str, kind: int) -> int | None:
        index = self._index.get(key)
        if index is not None:
            return index
        used = int(self._header["used"][0])
        if used >= CAPACITY:
            if not self._full_logged:
                self._full_logged = True
                logger.warning("statistics slot full (%d keys): %s and later keys dropped",
                               CAPACITY, key)
            return None
        raw = _key_bytes(key)
        self._table["kind"][used] = kind
        self._fvalue[used] = math.inf if kind == FMIN else -math.inf if kind == FMAX else 0.0
        self._ivalue[used] = 0
        self._table["key"][used] = raw
        self._table["klen"][used] = len(raw)  # last: readers skip entries without a key
        self._header["used"] = used + 1
        self._index[key] = used
        return used

    def add(self, key: str, delta: int | float) -> None:
        if isinstance(delta, float):
            index = self._slot(key, FSUM)
            if index is not None:
                self._fvalue[index] += delta
        else:
            index = self._slot(key, INT)
            if index is not None:
                self._ivalue[index] += delta

    def extreme(self, key: str, value: float, kind: int) -> None:
        index = self._slot(key, kind)
        if index is not None:
            old = float(self._fvalue[index])
            self._fvalue[index] = min(old, value) if kind == FMIN else max(old, value)

    def mark_seen(self, index: int) -> None:
        if 0 <= index < self._seen.size:
            self._seen[index] = 1


class PipelineRecorder:
    """Adds what one pipeline did since the last ``record`` to this process's slot."""

    def __init__(self, writer: SlotWriter | None, pipeline: PatchPipeline,
                 slide_index: Mapping[str, int]) -> None:
        self._writer, self._pipeline, self._slide_index = writer, pipeline, slide_index
        self._last: dict[str, int | float] = {}
        self._tf = (0, 0.0)
        self._marked: set[str] = set()

    def record(self) -> None:
        writer = self._writer
        if writer is None:
            return
        values = self._pipeline.stats_dict()
        for key in _NOT_SUMMED:
            values.pop(key, None)
        last = self._last
        for key, value in values.items():
            delta = value - last.get(key, 0)
            if delta or key not in last:  # every key appears, zero or not
                writer.add(key, delta)
        self._last = values
        stats = self._pipeline.stats
        tf = stats.tissue_fractions
        if tf.count != self._tf[0]:
            writer.add(TF_COUNT, tf.count - self._tf[0])
            writer.add(TF_TOTAL, float(tf.total - self._tf[1]))
            writer.extreme(TF_MIN, tf.min_val, FMIN)
            writer.extreme(TF_MAX, tf.max_val, FMAX)
            self._tf = (tf.count, tf.total)
        seen = stats.slides_seen
        if len(seen) != len(self._marked):
            for path in seen - self._marked:
                index = self._slide_index.get(path)
                if index is not None:
                    writer.mark_seen(index)
            self._marked = set(seen)


class SharedState:
    """The folder of one dataset (see the module). Pickles as its path; the copy in the
    process that made it removes the folder when collected."""

    def __init__(self, n_slides: int) -> None:
        self.folder = tempfile.mkdtemp(prefix="wsi_streamer-torch-", dir=shared_folder())
        with open(os.path.join(self.folder, "seen.bin"), "wb") as seen:
            seen.truncate(max(1, n_slides))
        with open(os.path.join(self.folder, "control.json"), "w") as control:
            control.write(json.dumps({"epoch": 0, "next": 0, "claims": {}}))
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
                logger.warning("dataset statistics off in process %d: %s", os.getpid(), exc)
                self._writer = None
        return self._writer

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
