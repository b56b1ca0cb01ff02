"""Valid top-left positions of a square footprint on a tissue mask, computed exactly.

A level-0 position ``(x, y)`` is *valid* for a footprint of side ``size`` (level-0 pixels) on a
``width x height`` slide when ``0 <= x <= width - size``, ``0 <= y <= height - size`` and
``mask.tissue_fraction_at(x, y, size, size) >= threshold``.

``TissueMask.tissue_fraction_at`` quantises ``x`` to the mask column ``int(x / ds)`` (and ``y``
likewise), so all positions whose top left falls in one mask cell share one fraction. Validity
is therefore decided once per cell, with a summed-area table of the mask and exactly the
arithmetic of ``tissue_fraction_at``: the same float division for the cell, the same footprint
``max(1, int(size / ds))`` mask pixels, the same clipping to the mask, the same ``mw * mh``
denominator. Drawing an index among the valid positions of the valid cells (each cell weighted
by the number of positions it holds) makes every valid position equally likely, with no
rejection and hence no starvation on slides with little tissue."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

import numpy as np

from ..types import TissueMask
from .mask_index import MaskIndex

_CHUNK_CELLS = 1 << 22  # cells evaluated per block (bounds temporary memory)
_BASE_TRIES = 16  # draws from a shared footprint table before the exact one


class PositionTable:
    """The valid positions of one footprint size, indexed ``0 .. total - 1``.

    Held as groups of positions sharing a mask column (``col_lo``, ``col_n``: first position
    and count) and row (``row_lo``, ``row_n``), a boolean ``valid[row, col]`` over the groups
    (one byte per mask cell, rows with no valid cell dropped) and the cumulative position count
    of the rows. Immutable."""

    __slots__ = ("total", "_col_lo", "_col_n", "_row_lo", "_row_n", "_valid", "_row_cum")

    def __init__(self, col_lo: np.ndarray, col_n: np.ndarray, row_lo: np.ndarray,
                 row_n: np.ndarray, valid: np.ndarray) -> None:
        across = valid.astype(np.int64) @ col_n if valid.size else np.zeros(0, np.int64)
        keep = across > 0
        self._col_lo, self._col_n = col_lo, col_n
        self._row_lo, self._row_n = row_lo[keep], row_n[keep]
        self._valid = np.ascontiguousarray(valid[keep])
        self._row_cum = np.cumsum(across[keep] * self._row_n)
        self.total = int(self._row_cum[-1]) if self._row_cum.size else 0

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self._col_lo, self._col_n, self._row_lo, self._row_n,
                                      self._valid, self._row_cum))

    @classmethod
    def empty(cls) -> PositionTable:
        none = np.zeros(0, dtype=np.int64)
        return cls(none, none, none, none, np.zeros((0, 0), dtype=bool))

    def position(self, k: int) -> tuple[int, int]:
        """The ``k``-th valid level-0 top left (a bijection of ``[0, total)`` onto them, rows
        of cells first). Raises ``IndexError`` outside that range."""
        if not 0 <= k < self.total:
            raise IndexError(f"position {k} not in [0, {self.total})")
        row = int(np.searchsorted(self._row_cum, k, side="right"))
        offset = k - (int(self._row_cum[row - 1]) if row else 0)
        in_row = np.cumsum(np.where(self._valid[row], self._col_n, 0))
        dy, dx = divmod(offset, int(in_row[-1]))
        col = int(np.searchsorted(in_row, dx, side="right"))
        before = int(in_row[col - 1]) if col else 0
        return int(self._col_lo[col]) + dx - before, int(self._row_lo[row]) + dy

    def draw(self, rng: np.random.Generator) -> tuple[int, int] | None:
        """A uniformly random valid position, or None when there is none."""
        if self.total == 0:
            return None
        return self.position(int(rng.integers(self.total)))


def _groups(limit: int, ds: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions ``0 .. limit`` grouped by mask cell ``int(p / ds)``: (cell, first position,
    count) per group, cells increasing."""
    cells = (np.arange(limit + 1, dtype=np.float64) / ds).astype(np.int64)
    starts = np.flatnonzero(np.diff(cells, prepend=-1))
    counts = np.diff(np.append(starts, limit + 1))
    return cells[starts], starts.astype(np.int64), counts.astype(np.int64)


def position_table(index: MaskIndex, width: int, height: int, size: int,
                   threshold: float) -> PositionTable:
    """Every valid position of a ``size`` footprint on a ``width x height`` slide."""
    max_x, max_y = width - size, height - size
    if size < 1 or max_x < 0 or max_y < 0:
        return PositionTable.empty()
    ds, cells = index.downsample, index.footprint(size)
    cx, x_lo, x_n = _groups(max_x, ds)
    cy, y_lo, y_n = _groups(max_y, ds)
    keep = index.candidates(cx, cy, cells, threshold)
    if keep is None:
        return PositionTable.empty()
    cx, x_lo, x_n = cx[keep[0]], x_lo[keep[0]], x_n[keep[0]]
    cy, y_lo, y_n = cy[keep[1]], y_lo[keep[1]], y_n[keep[1]]
    valid = np.empty((cy.size, cx.size), dtype=bool)
    step = max(1, _CHUNK_CELLS // cx.size)
    for start in range(0, cy.size, step):
        valid[start:start + step] = index.passes(cx, cy[start:start + step], cells, threshold)
    return PositionTable(x_lo, x_n, y_lo, y_n, valid)


def iter_grid(index: MaskIndex, width: int, height: int, size: int, stride: int,
              threshold: float) -> Iterator[tuple[int, int]]:
    """Row-major level-0 top lefts ``(x, y)`` of the grid ``range(0, width - size + 1,
    stride)`` x ``range(0, height - size + 1, stride)`` whose footprint is valid."""
    xs = np.arange(0, width - size + 1, stride, dtype=np.int64)
    ys = np.arange(0, height - size + 1, stride, dtype=np.int64)
    if size < 1 or xs.size == 0 or ys.size == 0:
        return
    ds, cells = index.downsample, index.footprint(size)
    cx = (xs.astype(np.float64) / ds).astype(np.int64)
    cy = (ys.astype(np.float64) / ds).astype(np.int64)
    keep = index.candidates(cx, cy, cells, threshold)
    if keep is None:
        return
    xs, cx, ys, cy = xs[keep[0]], cx[keep[0]], ys[keep[1]], cy[keep[1]]
    step = max(1, _CHUNK_CELLS // xs.size)
    for start in range(0, ys.size, step):
        rr, cc = np.nonzero(index.passes(cx, cy[start:start + step], cells, threshold))
        for r, c in zip(rr.tolist(), cc.tolist(), strict=True):
            yield int(xs[c]), int(ys[start + r])


class PositionFinder:
    """Valid positions on one slide and mask for any footprint size, tables cached (LRU of at
    most ``cache_size`` sizes and ``cache_bytes`` bytes, the newest always kept). Not
    thread-safe (one per ``sample`` call)."""

    def __init__(self, mask: TissueMask, width: int, height: int, threshold: float,
                 cache_size: int = 128, cache_bytes: int = 64 << 20) -> None:
        self.index = MaskIndex(mask)
        self.width, self.height, self.threshold = width, height, threshold
        self._cache_size, self._cache_bytes, self._held = cache_size, cache_bytes, 0
        self._tables: OrderedDict[int, PositionTable] = OrderedDict()

    @property
    def hopeless(self) -> bool:
        """True when no footprint of any size can be valid (threshold > 0, no tissue)."""
        return self.threshold > 0 and self.index.bbox is None

    def table(self, size: int) -> PositionTable:
        table = self._tables.get(size)
        if table is None:
            table = position_table(self.index, self.width, self.height, size, self.threshold)
            self._tables[size] = table
            self._held += table.nbytes
            while len(self._tables) > 1 and (len(self._tables) > self._cache_size
                                             or self._held > self._cache_bytes):
                self._held -= self._tables.popitem(last=False)[1].nbytes
        else:
            self._tables.move_to_end(size)
        return table

    def draw(self, size: int, rng: np.random.Generator,
             tries: int = 0) -> tuple[int, int] | None:
        """A uniformly random valid position of a ``size`` footprint, or None if there is none.

        Every stage draws uniformly from a superset of the valid positions and accepts the
        first valid one, so the result is uniform over the valid set: (1) up to ``tries``
        candidates in a box known to hold every valid position, checked with
        ``tissue_fraction_at`` (cheap when tissue is dense); (2) up to ``_BASE_TRIES`` draws
        from the table of the smallest size with the same mask footprint (cached, and shared
        by every size of that footprint; a superset because its range is wider), kept if inside
        this size's range; (3) this size's exact table."""
        box = self._candidate_box(size)
        if box is None:
            return None
        x_lo, x_hi, y_lo, y_hi = box
        fraction_at = self.index.mask.tissue_fraction_at
        for _ in range(tries):
            x, y = int(rng.integers(x_lo, x_hi + 1)), int(rng.integers(y_lo, y_hi + 1))
            if fraction_at(x, y, size, size) >= self.threshold:
                return x, y
        base = self._base_size(size)
        if base < size:
            shared = self.table(base)
            if shared.total == 0:
                return None
            max_x, max_y = self.width - size, self.height - size
            for _ in range(_BASE_TRIES):
                found = shared.draw(rng)
                if found is not None and found[0] <= max_x and found[1] <= max_y:
                    return found
        return self.table(size).draw(rng)

    def _base_size(self, size: int) -> int:
        """The smallest level-0 size with the same mask footprint as ``size``."""
        cells = self.index.footprint(size)
        if cells == 1:
            return 1
        base = max(1, int(cells * self.index.downsample) - 2)
        while self.index.footprint(base) < cells:
            base += 1
        return min(base, size)

    def _candidate_box(self, size: int) -> tuple[int, int, int, int] | None:
        """Inclusive level-0 ``(x_lo, x_hi, y_lo, y_hi)`` holding every valid position (with a
        pixel of slack for float rounding); None when provably empty."""
        max_x, max_y = self.width - size, self.height - size
        if size < 1 or max_x < 0 or max_y < 0 or self.hopeless:
            return None
        if self.threshold <= 0 or self.index.bbox is None:
            return 0, max_x, 0, max_y
        ds, cells = self.index.downsample, self.index.footprint(size)
        c0, c1, r0, r1 = self.index.bbox
        x_lo, x_hi = _axis_range(max_x, ds, c0 - cells + 1, c1)
        y_lo, y_hi = _axis_range(max_y, ds, r0 - cells + 1, r1)
        if x_lo > x_hi or y_lo > y_hi:
            return None
        return x_lo, x_hi, y_lo, y_hi


def _axis_range(limit: int, ds: float, first_cell: int, last_cell: int) -> tuple[int, int]:
    """Positions ``p`` in ``0 .. limit`` with ``first_cell <= int(p / ds) <= last_cell``,
    widened by one pixel each side."""
    lo = 0 if first_cell <= 0 else max(0, int(first_cell * ds) - 1)
    hi = min(limit, int((last_cell + 1) * ds) + 1)
    return lo, hi
