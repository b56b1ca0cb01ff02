"""What every ``SlideReader`` derives the same way from its ``SlideInfo``: geometry, level
choice and cropped single tiles."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from PIL import Image

from ..errors import InvalidLevel, TileOutOfBounds
from .info import LevelGeometry, SlideInfo


class PyramidGeometry:
    """Mixin: ``info`` is set by the driver's slide class, which provides ``tile_images``."""

    info: SlideInfo

    def tile_images(self, level: int, tiles: Sequence[tuple[int, int]],
                    reduce_to: tuple[int, int] | None = None) -> Iterator[Image.Image]:
        raise NotImplementedError

    def read_tile(self, level: int, x: int, y: int) -> Image.Image:
        """Decoded RGB tile (x, y), cropped to the level's bounds at the right/bottom edge."""
        info = self.level(level)
        if not (0 <= x < info.tiles_x and 0 <= y < info.tiles_y):
            raise TileOutOfBounds(level, x, y, info.tiles_x, info.tiles_y)
        image = next(iter(self.tile_images(level, [(x, y)])))
        width = min(info.tile_width, info.width - x * info.tile_width)
        height = min(info.tile_height, info.height - y * info.tile_height)
        if (width, height) != image.size:
            image = image.crop((0, 0, width, height))
        return image

    @property
    def format_name(self) -> str:
        return self.info.format_name

    @property
    def levels(self) -> tuple[LevelGeometry, ...]:
        return self.info.levels

    @property
    def level_count(self) -> int:
        return len(self.info.levels)

    @property
    def dimensions(self) -> tuple[int, int]:
        base = self.info.levels[0]
        return base.width, base.height

    @property
    def properties(self) -> dict[str, str]:
        return dict(self.info.properties)

    def level(self, level: int) -> LevelGeometry:
        if not 0 <= level < len(self.info.levels):
            raise InvalidLevel(level, len(self.info.levels))
        return self.info.levels[level]

    def best_level_for_downsample(self, downsample: float) -> int:
        """The smallest level whose downsample is at most ``downsample`` (OpenSlide's rule)."""
        best = 0
        for info in self.info.levels:
            if info.downsample <= downsample * 1.001:
                best = info.level
        return best


def positive_number(text: str | None) -> float | None:
    """A vendor property such as ``aperio.MPP`` or ``openslide.mpp-x`` as a number, None when
    absent, not a number or not in (0, 1e6)."""
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and 0 < value < 1e6 else None
