"""Deep Zoom geometry (the DZI conventions OpenSeadragon expects): level 0 is 1x1 px, the top
level is the full image, each level below halves the one above rounding up; tiles are
``tile_size`` plus ``overlap`` on each interior side."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import InvalidLevel, TileOutOfBounds

DZI_NS = "http://schemas.microsoft.com/deepzoom/2008"


@dataclass(frozen=True, slots=True)
class DeepZoom:
    width: int
    height: int
    tile_size: int = 254
    overlap: int = 1

    @property
    def level_count(self) -> int:
        return math.ceil(math.log2(max(self.width, self.height, 1))) + 1

    def scale(self, level: int) -> int:
        """Level-0 pixels per pixel of DZI ``level``."""
        return 1 << (self.level_count - 1 - level)

    def level_size(self, level: int) -> tuple[int, int]:
        if not 0 <= level < self.level_count:
            raise InvalidLevel(level, self.level_count)
        scale = self.scale(level)
        return max(1, -(-self.width // scale)), max(1, -(-self.height // scale))

    def tile_grid(self, level: int) -> tuple[int, int]:
        w, h = self.level_size(level)
        return -(-w // self.tile_size), -(-h // self.tile_size)

    def tile_bounds(self, level: int, col: int, row: int) -> tuple[int, int, int, int]:
        """``(x, y, width, height)`` of the tile in DZI-level pixels, overlap included."""
        cols, rows = self.tile_grid(level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise TileOutOfBounds(level, col, row, cols, rows)
        w, h = self.level_size(level)
        ts, ov = self.tile_size, self.overlap
        x0 = col * ts - (ov if col > 0 else 0)
        y0 = row * ts - (ov if row > 0 else 0)
        x1 = min(w, (col + 1) * ts + ov)
        y1 = min(h, (row + 1) * ts + ov)
        return x0, y0, x1 - x0, y1 - y0

    def descriptor(self) -> str:
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
                f'<Image xmlns="{DZI_NS}" TileSize="{self.tile_size}" '
                f'Overlap="{self.overlap}" Format="jpg">'
                f'<Size Width="{self.width}" Height="{self.height}"/></Image>\n')
