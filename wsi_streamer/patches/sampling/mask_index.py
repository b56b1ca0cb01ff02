"""A tissue mask prepared for box queries: its summed-area table, tissue bounding box and a
block-level upper bound, all giving exactly ``TissueMask.tissue_fraction_at``'s answers."""

from __future__ import annotations

import math

import numpy as np

from ..types import TissueMask

BLOCK = 8  # mask pixels per side of a block of the upper bound


def min_count(threshold: float, area: int) -> int:
    """The least integer ``k >= 0`` with ``float(k) / area >= threshold``: that quotient is
    monotone in ``k``, so ``count >= k`` is exactly ``tissue_fraction_at``'s float test."""
    k = max(0, math.ceil(threshold * area) - 2)
    while not k / area >= threshold:
        k += 1
    return k


def summed_area_table(mask: np.ndarray) -> np.ndarray:
    """``(h + 1, w + 1)`` table whose ``[y, x]`` is the count of True in ``mask[:y, :x]``
    (int32 when it fits). Prefix sums along the rows, then one row added to the next: numpy's
    ``cumsum`` down the columns strides through memory, about 10x slower."""
    h, w = mask.shape
    dtype = np.int32 if h * w < 2**31 else np.int64
    sat = np.zeros((h + 1, w + 1), dtype=dtype)
    inner = sat[1:, 1:]
    if mask.size:
        np.cumsum(mask, axis=1, dtype=dtype, out=inner)
        for y in range(1, h):
            np.add(inner[y - 1], inner[y], out=inner[y])
    return sat


class MaskIndex:
    """A ``TissueMask`` with its summed-area table. Read-only after construction, so it may be
    shared by threads. Cell arguments are mask pixel indices >= 0; pixels outside the mask
    count as background, as in ``tissue_fraction_at``."""

    __slots__ = ("mask", "downsample", "_sat", "_bbox")

    def __init__(self, mask: TissueMask) -> None:
        arr = np.asarray(mask.mask)
        if arr.ndim != 2:
            raise ValueError(f"tissue mask must be 2-D, got shape {arr.shape}")
        self.mask = mask
        self.downsample = mask.downsample
        self._sat = summed_area_table(arr)
        rows, cols = np.flatnonzero(arr.any(axis=1)), np.flatnonzero(arr.any(axis=0))
        self._bbox = (None if rows.size == 0 else
                      (int(cols[0]), int(cols[-1]), int(rows[0]), int(rows[-1])))

    @property
    def bbox(self) -> tuple[int, int, int, int] | None:
        """Inclusive ``(col0, col1, row0, row1)`` of the nonzero mask pixels; None if none."""
        return self._bbox

    def footprint(self, size: int) -> int:
        """Mask pixels covered by a ``size`` level-0 side (``tissue_fraction_at``'s rule)."""
        return max(1, int(size / self.downsample))

    def _box_sums(self, sat: np.ndarray, cols: np.ndarray, rows: np.ndarray,
                  cells: int) -> np.ndarray:
        """Sums of the ``cells x cells`` boxes at ``(rows x cols)`` of the table ``sat``."""
        h, w = sat.shape[0] - 1, sat.shape[1] - 1
        x0, x1 = np.minimum(cols, w), np.minimum(cols + cells, w)
        y0, y1 = np.minimum(rows, h), np.minimum(rows + cells, h)
        strip = np.take(sat, y1, axis=0)  # row gathers are contiguous copies
        strip -= np.take(sat, y0, axis=0)
        result: np.ndarray = np.take(strip, x1, axis=1)  # ``take``: 2-3x fancy indexing's speed
        result -= np.take(strip, x0, axis=1)
        return result

    def passes(self, cols: np.ndarray, rows: np.ndarray, cells: int,
               threshold: float) -> np.ndarray:
        """Boolean ``(len(rows), len(cols))``: does the ``cells x cells`` box with top-left
        mask pixel ``(col, row)`` reach ``threshold``."""
        sums = self._box_sums(self._sat, cols, rows, cells)
        result: np.ndarray = sums >= min_count(threshold, cells * cells)
        return result

    def candidates(self, cols: np.ndarray, rows: np.ndarray, cells: int,
                   threshold: float) -> tuple[np.ndarray, np.ndarray] | None:
        """Masks over ``cols`` and ``rows`` (increasing) keeping every top-left cell whose box
        may reach ``threshold``; None when none can. Uses an upper bound per ``BLOCK``-square
        of top-left cells: the tissue in all blocks the boxes starting there can touch."""
        if threshold <= 0:
            return np.ones(cols.size, dtype=bool), np.ones(rows.size, dtype=bool)
        if self._bbox is None or cols.size == 0 or rows.size == 0:
            return None
        h, w = self._sat.shape[0] - 1, self._sat.shape[1] - 1
        hb, wb = -(-h // BLOCK), -(-w // BLOCK)
        corners_y = np.minimum(np.arange(hb + 1) * BLOCK, h)
        corners_x = np.minimum(np.arange(wb + 1) * BLOCK, w)
        block_sat = self._sat[np.ix_(corners_y, corners_x)]  # the blocks' own table
        span = (cells + BLOCK - 2) // BLOCK + 1
        bound = self._box_sums(block_sat, np.arange(wb), np.arange(hb), span)
        live = bound >= min_count(threshold, cells * cells)
        if not live.any():
            return None
        col_live, row_live = np.any(live, axis=0), np.any(live, axis=1)
        bx, by = cols // BLOCK, rows // BLOCK
        keep_x = (bx < wb) & col_live[np.minimum(bx, wb - 1)]
        keep_y = (by < hb) & row_live[np.minimum(by, hb - 1)]
        if not keep_x.any() or not keep_y.any():
            return None
        return keep_x, keep_y
