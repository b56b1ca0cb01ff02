"""The OpenSlide driver (the ``[openslide]`` extra): what the native drivers refuse (NDPI,
MRXS, SCN, Philips TIFF, Ventana BIF, Leica...), for local files only, since OpenSlide opens
paths, not byte ranges.

The slide is seen as a grid of ``TILE`` px tiles per level, each read with
``OpenSlide.read_region`` and composited on white, so every endpoint and the patch pipeline
work unchanged on it. The structure (levels, properties, associated image names) is JSON for
the shared cache; the OpenSlide handle is opened on the first read and closed by ``close``."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from PIL import Image

from ..errors import AssociatedImageNotFound, DecodeError, UnsupportedFormat
from ..io.range_reader import RangeReader
from ..io.storage import OPENSLIDE_ONLY_EXTENSIONS, SLIDE_EXTENSIONS
from ..records import CacheEntryError, Doc
from .base import PyramidGeometry, positive_number
from .contract import LevelTables
from .info import LevelGeometry, SlideInfo
from .spans import Spans

TILE = 512
MAX_PROPERTIES = 4096
WHITE = (255, 255, 255)


@dataclass(frozen=True, slots=True)
class OpenSlideStructure:
    vendor: str
    levels: tuple[tuple[int, int, float], ...]  # width, height, downsample
    properties: tuple[tuple[str, str], ...]
    associated: tuple[str, ...]
    has_icc_profile: bool = False

    @property
    def info(self) -> SlideInfo:
        props = dict(self.properties)
        levels = tuple(LevelGeometry(i, w, h, TILE, TILE, -(-w // TILE), -(-h // TILE), ds)
                       for i, (w, h, ds) in enumerate(self.levels))
        return SlideInfo(f"OpenSlide ({self.vendor})", self.vendor, levels, self.properties,
                         positive_number(props.get("openslide.mpp-x")),
                         positive_number(props.get("openslide.mpp-y")),
                         positive_number(props.get("openslide.objective-power")), self.associated,
                         self.has_icc_profile)


def local_path(reader: RangeReader) -> str | None:
    """The file behind ``reader`` (through a block cache view), None when it is not local."""
    path = getattr(reader, "local_path", None)
    return path if isinstance(path, str) else None


def require_openslide() -> None:
    """``ImportError`` naming the extra unless OpenSlide can be imported."""
    _openslide()


def _openslide() -> Any:
    try:
        import openslide
    except ImportError as exc:
        raise ImportError('the OpenSlide fallback needs OpenSlide: '
                          'pip install "wsi_streamer[openslide]"') from exc
    return openslide


class OpenSlideDriver:
    """``FormatDriver`` over OpenSlide; claims any head (it can only tell from the file)."""

    name = "openslide"
    label = "OpenSlide"
    recognises: tuple[str, ...] = ()
    extensions: tuple[str, ...] = (*OPENSLIDE_ONLY_EXTENSIONS, *SLIDE_EXTENSIONS)

    def sniff(self, head: bytes) -> bool:
        return True

    def parse(self, source: Spans) -> OpenSlideStructure:
        path = local_path(source.reader)
        if path is None:
            raise UnsupportedFormat("OpenSlide reads local files only")
        openslide = _openslide()
        vendor = openslide.OpenSlide.detect_format(path)
        if vendor is None:
            raise UnsupportedFormat("not a format OpenSlide reads")
        try:
            with openslide.OpenSlide(path) as slide:
                props = tuple(list(slide.properties.items())[:MAX_PROPERTIES])
                levels = tuple((int(w), int(h), float(ds)) for (w, h), ds in
                               zip(slide.level_dimensions, slide.level_downsamples, strict=True))
                names = tuple(sorted(slide.associated_images))
                icc = getattr(slide, "color_profile", None) is not None
        except openslide.OpenSlideError as exc:
            raise UnsupportedFormat(f"OpenSlide cannot open it: {exc}") from None
        return OpenSlideStructure(str(vendor), levels, props, names, icc)

    def info(self, structure: OpenSlideStructure) -> SlideInfo:
        return structure.info

    def open(self, reader: RangeReader, structure: OpenSlideStructure) -> OpenSlideReader:
        return OpenSlideReader(reader, structure)

    def encode(self, structure: OpenSlideStructure) -> dict[str, Any]:
        return {"vendor": structure.vendor, "levels": [list(lv) for lv in structure.levels],
                "properties": [list(p) for p in structure.properties],
                "associated": list(structure.associated),
                "has_icc_profile": structure.has_icc_profile}

    def decode(self, data: dict[str, Any]) -> OpenSlideStructure:
        doc = Doc(data, "openslide structure")
        doc.keys({"vendor", "levels", "properties", "associated", "has_icc_profile"})
        levels = []
        for item in doc.items("levels"):
            if not (isinstance(item, list) and len(item) == 3
                    and all(isinstance(v, int) and v > 0 for v in item[:2])
                    and isinstance(item[2], (int, float)) and item[2] > 0):
                raise CacheEntryError("openslide structure: a level is not [w, h, ds]")
            levels.append((item[0], item[1], float(item[2])))
        pairs = doc.items("properties")
        names = doc.items("associated")
        if not levels or not all(isinstance(p, list) and len(p) == 2 and all(
                isinstance(v, str) for v in p) for p in pairs) or not all(
                isinstance(n, str) for n in names):
            raise CacheEntryError("openslide structure: levels, properties or names")
        return OpenSlideStructure(doc.text("vendor"), tuple(levels),
                                  tuple((k, v) for k, v in pairs), tuple(names),
                                  doc.flag("has_icc_profile"))


class OpenSlideReader(PyramidGeometry):
    """A ``contract.SlideReader`` reading tiles with ``OpenSlide.read_region``."""

    def __init__(self, reader: RangeReader, structure: OpenSlideStructure) -> None:
        path = local_path(reader)
        if path is None:
            raise UnsupportedFormat("OpenSlide reads local files only")
        self.reader, self.structure, self.info = reader, structure, structure.info
        self._path = path
        self._lock = threading.Lock()
        self._slide: Any = None
        self._users = 0
        self._closing = False
        self._icc: bytes | None = None

    @property
    def identity(self) -> str:
        return self.reader.identity

    @property
    def cost_bytes(self) -> int:
        return 0  # OpenSlide's own caches are bounded by OpenSlide

    def level_tables(self) -> LevelTables:
        return {}

    def adopt_level_tables(self, tables: LevelTables) -> None:
        """Nothing to adopt: OpenSlide reads its own indexes."""

    @contextmanager
    def _handle(self) -> Iterator[Any]:
        """The OpenSlide handle (opened on first use) for one read. ``close`` while reads
        are in progress is deferred to the last of them: closing a handle inside a native
        call would be a use-after-free, a crashed worker instead of an error."""
        with self._lock:
            if self._slide is None:
                self._slide = _openslide().OpenSlide(self._path)
            self._closing = False
            self._users += 1
            slide = self._slide
        try:
            yield slide
        finally:
            with self._lock:
                self._users -= 1
                last = self._closing and self._users == 0
            if last:
                self._close_handle()

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]
                    ) -> Image.Image:
        """OpenSlide's own ``read_region`` (top left in level-0 pixels), on white, as RGB."""
        self.level(level)
        try:
            with self._handle() as slide:
                region = slide.read_region(location, level, size)
            return on_white(region)
        except Exception as exc:  # OpenSlideError: a damaged file
            raise DecodeError(f"OpenSlide could not read {size} at {location} of level "
                              f"{level}: {exc}") from None

    def associated_image(self, name: str) -> Image.Image:
        if name not in self.info.associated:
            raise AssociatedImageNotFound(self.identity, name)
        try:
            with self._handle() as slide:
                image = slide.associated_images[name]
            return on_white(image)
        except Exception as exc:  # OpenSlideError
            raise DecodeError(f"OpenSlide could not read the {name} image: {exc}") from None

    def icc_profile(self) -> bytes | None:
        """Read once (``tobytes`` serialises the profile each time it is asked)."""
        if not self.info.has_icc_profile:
            return None
        if self._icc is None:
            with self._handle() as slide:
                profile = getattr(slide, "color_profile", None)  # openslide-python >= 1.3
                self._icc = profile.tobytes() if profile is not None else b""
        return self._icc or None

    def thumbnail(self, size: tuple[int, int]) -> Image.Image:
        """OpenSlide's ``get_thumbnail`` (what wsistream's OpenSlide backend detects tissue
        on), on white."""
        try:
            with self._handle() as slide:
                image = slide.get_thumbnail(size)
            return on_white(image)
        except Exception as exc:  # OpenSlideError
            raise DecodeError(f"OpenSlide could not make a thumbnail: {exc}") from None

    def tile_images(self, level: int, tiles: Sequence[tuple[int, int]],
                    reduce_to: tuple[int, int] | None = None) -> Iterator[Image.Image]:
        """Full-size tiles (``reduce_to`` is not used: OpenSlide has no reduced decode)."""
        info = self.level(level)
        for tx, ty in tiles:
            location = (round(tx * TILE * info.downsample), round(ty * TILE * info.downsample))
            yield self.read_region(location, level, (TILE, TILE))

    def close(self) -> None:
        """Close the OpenSlide handle and the file now, or after the reads in progress (a
        later read opens them again)."""
        with self._lock:
            if self._users:
                self._closing = True
                return
        self._close_handle()

    def _close_handle(self) -> None:
        with self._lock:
            if self._users:
                return  # a read started meanwhile: it reopened nothing, it uses this one
            slide, self._slide, self._closing = self._slide, None, False
        if slide is not None:
            slide.close()
        close = getattr(self.reader, "close", None)
        if close is not None:
            close()


def open_local(path: str) -> OpenSlideReader:
    """``path`` read by OpenSlide whatever the native drivers think of it (the patch
    pipeline's ``OpenSlideBackend``); ``UnsupportedFormat`` when OpenSlide cannot read it."""
    from ..io.local import LocalReader

    reader = LocalReader(path, path)
    try:
        return DRIVER.open(reader, DRIVER.parse(Spans(reader)))
    except BaseException:
        reader.close()
        raise


def on_white(image: Image.Image) -> Image.Image:
    """OpenSlide's premultiplied RGBA composited on white, as RGB."""
    if image.mode != "RGBA":
        return image.convert("RGB")
    white = Image.new("RGBA", image.size, (*WHITE, 255))
    return Image.alpha_composite(white, image).convert("RGB")


DRIVER = OpenSlideDriver()
