"""``NativeBackend``: our own parser over range requests and the block cache, local files,
S3 and HTTP alike (``backends.openslide`` reads what it refuses; both give the same pixels
for a slide both read).

A backend is a factory of open slides (``base.StreamingBackend``). Its per-process resources
(block store, S3 clients, registries, the host cache handle) are created on first use in the
process that uses them, so a backend survives ``fork`` (a child builds its own), ``spawn`` and
pickling (they are dropped).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ...io.block_cache import BlockStore
from ...io.local import LocalStorage
from ...io.range_reader import IoStats
from ...io.storage import Storage
from ...limits import MAX_CANVAS_PIXELS, MAX_TILES_PER_LEVEL
from ...slide import NATIVE_FORMATS, FormatDriver, Parsed
from ...slide.cachedir import ensure_private_dir
from ...slide.hostcache import HostCache
from ...slide.reader import SlideReader
from ...slide.region import overview_level, read_level0_anchored, render_overview
from ...slide.registry import SlideRegistry
from ..sources import S3Options, is_remote, remote_object
from ..types import SlideProperties
from .base import StreamingSlideBackend

logger = logging.getLogger(__name__)
DEFAULT_CACHE_BYTES = 1 << 30
DEFAULT_BLOCK_BYTES = 256 * 1024 * 1024
# every name a native driver opens, served or opened only to say why it is refused (NDPI)
RECOGNISED = tuple(dict.fromkeys(ext for driver in NATIVE_FORMATS
                                 for ext in (*driver.extensions, *driver.recognises)))
_TABLES_PREFIX = "tables:"
TABLES_KIND = "wsi_streamer.tile_tables"  # the host-cache record (``slide.codec``) of them
_Tables = dict[int, tuple[np.ndarray, np.ndarray, bytes | None]]


def default_cache_dir() -> str:
    """This user's host cache folder in the shared temp dir (created 0700; refused when it is
    a link, another uid's or writable by others: ``slide.cachedir``)."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return os.path.join(tempfile.gettempdir(), f"wsi_streamer-patches-{uid}")


def open_host_cache(directory: str, size_limit: int) -> HostCache:
    """The host cache in ``directory``; ``ConfigError`` when the folder is not private."""
    return HostCache(directory, size_limit, setting="cache_dir",
                     default_dir=directory == default_cache_dir())


def check_cache_dir(directory: str) -> None:
    """Fail early (``ConfigError``) on a cache folder that is not private to this user; a
    folder that cannot be created is left to the cache, which then runs without it."""
    try:
        ensure_private_dir(directory, setting="cache_dir",
                           default=directory == default_cache_dir())
    except OSError as exc:
        logger.debug("cache_dir %s not created now: %s", directory, exc)


def thumbnail_dims(dimensions: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """OpenSlide's thumbnail size: the slide scaled to fit in ``size``, aspect kept."""
    w, h = dimensions
    scale = max(w / size[0], h / size[1], 1.0)
    return max(1, round(w / scale)), max(1, round(h / scale))


def properties_of(path: str, slide: SlideReader) -> SlideProperties:
    st = slide.info
    return SlideProperties(
        path=path, dimensions=slide.dimensions, level_count=slide.level_count,
        level_dimensions=tuple((lv.width, lv.height) for lv in slide.levels),
        level_downsamples=tuple(lv.downsample for lv in slide.levels),
        mpp=st.mpp_x, vendor=st.vendor or st.format_name, mpp_y=st.mpp_y)


class NativeSlide:
    """A ``SlideReader`` seen as a backend slide: level-0-anchored reads, white padding."""

    def __init__(self, path: str, reader: SlideReader, *, dct_scaling: bool = False,
                 cache: HostCache | None = None) -> None:
        self._reader = reader
        self._properties = properties_of(path, reader)
        self._dct = dct_scaling
        self._cache = cache
        self._adopted: set[int] = set()
        if cache is not None:  # tile arrays another process already read: no metadata GET
            saved = _unpack_tables(cache.get_arrays(_TABLES_PREFIX + reader.identity,
                                                    TABLES_KIND))
            if saved:
                reader.adopt_level_tables(saved)
                self._adopted = set(saved)

    @property
    def identity(self) -> str:
        return self._reader.identity

    @property
    def properties(self) -> SlideProperties:
        return self._properties

    @property
    def reader(self) -> SlideReader:
        return self._reader

    def read_region(self, *, x: int, y: int, level: int, width: int, height: int,
                    out_size: tuple[int, int] | None = None) -> np.ndarray:
        image = read_level0_anchored(self._reader, level, x0=x, y0=y, width=width,
                                     height=height, out_size=out_size, dct_scaling=self._dct)
        return np.asarray(image)

    def get_thumbnail(self, size: tuple[int, int]) -> np.ndarray:
        """The tile server's overview (``slide.region.render_overview``): the smallest level
        at least as large as the thumbnail (never a full high-resolution level), its tiles
        reduced while decoding (JPEG DCT scaling, exact box reductions), then area-averaged
        (BOX) to the thumbnail's size (OpenSlide's: ``thumbnail_dims``)."""
        return self.get_thumbnail_fit(size, 1.0)

    def get_thumbnail_fit(self, size: tuple[int, int], fill: float) -> np.ndarray:
        """``get_thumbnail(size)``, or a cheaper image of the whole slide at least ``fill``
        of its size on each side (0 < ``fill`` <= 1): a level reduced by a power of two while
        decoding that lands in that range is returned as it is, exact area averages with no
        resampling (``render_overview``'s ``fill``). Level-0 pixels per image pixel are the
        slide's dimensions over the image's."""
        out = thumbnail_dims(self._reader.dimensions, size)
        image = render_overview(self._reader, overview_level(self._reader, out, fill), out,
                                max_tiles=MAX_TILES_PER_LEVEL, max_canvas=MAX_CANVAS_PIXELS,
                                resample=Image.Resampling.BOX, fill=fill)
        return np.asarray(image)

    def close(self) -> None:
        """Saves newly loaded tile arrays to the host cache; the registry keeps the parsed
        slide for reuse in this process."""
        if self._cache is not None:
            tables = self._reader.level_tables()
            if set(tables) - self._adopted:
                try:
                    self._cache.put_arrays(_TABLES_PREFIX + self._reader.identity,
                                           TABLES_KIND, *_pack_tables(tables))
                except Exception as exc:  # noqa: BLE001 - e.g. at interpreter shutdown
                    logger.debug("tile arrays of %s not saved: %s", self.identity, exc)
                self._adopted = set(tables)


def _pack_tables(tables: _Tables) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Per-level tile offsets and byte counts (uint64) and JPEGTables as an array record."""
    arrays: dict[str, np.ndarray] = {}
    for level, (offsets, counts, jpeg_tables) in tables.items():
        arrays[f"{level}.offsets"] = np.asarray(offsets, dtype=np.uint64)
        arrays[f"{level}.counts"] = np.asarray(counts, dtype=np.uint64)
        if jpeg_tables is not None:
            arrays[f"{level}.jpeg_tables"] = np.frombuffer(jpeg_tables, dtype=np.uint8)
    return {"levels": sorted(tables)}, arrays


def _unpack_tables(record: tuple[dict[str, Any], dict[str, np.ndarray]] | None) -> _Tables:
    """What ``_pack_tables`` stored; levels that do not check out are left out (read again)."""
    if record is None:
        return {}
    meta, arrays = record
    levels = meta.get("levels")
    if not isinstance(levels, list):
        return {}
    tables: _Tables = {}
    for level in levels:
        if not isinstance(level, int) or isinstance(level, bool):
            continue
        offsets, counts = arrays.get(f"{level}.offsets"), arrays.get(f"{level}.counts")
        jpeg = arrays.get(f"{level}.jpeg_tables")
        if (offsets is None or counts is None or offsets.dtype != np.uint64
                or counts.dtype != np.uint64 or offsets.ndim != 1 or counts.ndim != 1
                or (jpeg is not None and (jpeg.dtype != np.uint8 or jpeg.ndim != 1))):
            continue
        tables[level] = (offsets, counts, jpeg.tobytes() if jpeg is not None else None)
    return tables


class _CountingStructures:
    """The registry's structure cache: the host cache, slide ids namespaced by storage root,
    hits counted."""

    def __init__(self, cache: HostCache, namespace: str, counters: IoStats) -> None:
        self._cache, self._ns, self._counters = cache, namespace, counters

    def get_structure(self, identity: str, table: tuple[FormatDriver, ...] = NATIVE_FORMATS
                      ) -> Parsed | None:
        found = self._cache.get_structure(identity, table)
        if found is not None:
            self._counters.add(hits=1)
        return found

    def put_structure(self, identity: str, parsed: Parsed) -> None:
        self._cache.put_structure(identity, parsed)

    def known_slide(self, slide_id: str) -> bool:
        return self._cache.known_slide(self._ns + slide_id)

    def remember_slide(self, slide_id: str, identity: str) -> None:
        self._cache.remember_slide(self._ns + slide_id, identity)


@dataclass
class _Resources:
    pid: int
    blocks: BlockStore
    cache: HostCache | None
    registries: dict[str, tuple[Storage, SlideRegistry]] = field(default_factory=dict)
    structure_hits: IoStats = field(default_factory=IoStats)
    opens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class NativeBackend(StreamingSlideBackend):
    """Our reader. ``block_cache_bytes`` bounds the in-memory block store of each process;
    ``dct_scaling`` lets a read 2, 4 or 8 times its output whose origin is on that factor's
    grid (where samplers place it: ``slide.region.dct_origin``) decode JPEG tiles at that
    scale: the area filter's pixels within JPEG's own error (>= 45 dB), at the decoder's cost;
    other reads are exact either way. ``configure`` (called by the pipeline) sets the S3
    options and the host cache folder (None: no host cache)."""

    def __init__(self, *, block_cache_bytes: int = DEFAULT_BLOCK_BYTES,
                 dct_scaling: bool = True, max_open_slides: int = 64) -> None:
        if block_cache_bytes <= 0:
            raise ValueError(f"block_cache_bytes must be > 0, got {block_cache_bytes}")
        self.block_cache_bytes = block_cache_bytes
        self.dct_scaling = dct_scaling
        self.max_open_slides = max_open_slides
        self.s3_options = S3Options()
        self.cache_dir: str | None = default_cache_dir()
        self.cache_bytes = DEFAULT_CACHE_BYTES
        self._res: _Resources | None = None
        self._res_lock = threading.Lock()

    def configure(self, *, storage_options: S3Options | None = None,
                  cache_dir: str | None = None, use_cache: bool = True) -> None:
        if storage_options is not None:
            self.s3_options = storage_options
        self.cache_dir = (cache_dir or default_cache_dir()) if use_cache else None
        if self.cache_dir is not None:
            check_cache_dir(self.cache_dir)
        self._res = None

    # --- per-process resources ---------------------------------------------------------------
    def _resources(self) -> _Resources:
        res = self._res
        if res is not None and res.pid == os.getpid():
            return res
        with self._res_lock:
            if self._res is None or self._res.pid != os.getpid():
                cache = (open_host_cache(self.cache_dir, self.cache_bytes)
                         if self.cache_dir is not None else None)
                self._res = _Resources(os.getpid(), BlockStore(max_bytes=self.block_cache_bytes),
                                       cache)
            return self._res

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_res"] = None
        state["_res_lock"] = None
        state.pop("_current", None)  # a slide opened through ``open()`` stays with its owner
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._res_lock = threading.Lock()

    def __deepcopy__(self, memo: dict[int, Any]) -> NativeBackend:
        clone = type(self).__new__(type(self))
        clone.__setstate__(self.__getstate__())
        return clone

    @property
    def host_cache(self) -> HostCache | None:
        return self._resources().cache

    def _registry(self, root: str, make: Any) -> SlideRegistry:
        res = self._resources()
        with res.lock:
            found = res.registries.get(root)
            if found is None:
                storage: Storage = make()
                structures = (_CountingStructures(res.cache, root, res.structure_hits)
                              if res.cache is not None else None)
                registry = SlideRegistry(storage, res.blocks, max_slides=self.max_open_slides,
                                         revalidate_s=float("inf"), structures=structures)
                found = (storage, registry)
                res.registries[root] = found
            return found[1]

    def open_slide(self, path: str) -> NativeSlide:
        """Open ``path`` (local file, ``s3://bucket/key`` or ``http(s)://host/path``);
        ``SlideNotFound``, ``UnsupportedFormat`` (with the reason) or a ``StorageError``
        otherwise."""
        if is_remote(path):
            root, make, slide_id = remote_object(path, self.s3_options)
            registry = self._registry(root, make)
        else:
            real = os.path.realpath(path)
            root, slide_id = os.path.split(real)
            # recognised names open too, so NDPI says why it is refused (not "not found")
            registry = self._registry(root + os.sep, lambda: LocalStorage(
                root, openable=RECOGNISED))
        reader = registry.get(slide_id)
        res = self._resources()
        with res.lock:
            res.opens += 1
        return NativeSlide(path, reader, dct_scaling=self.dct_scaling, cache=res.cache)

    def io_stats(self) -> dict[str, int]:
        """Storage requests and bytes of this process's slides, block-store hits and misses,
        slide opens and opens whose structure came from the host cache."""
        res = self._resources()
        requests = nbytes = 0
        for storage, _ in list(res.registries.values()):
            snap = storage.stats.snapshot()
            requests += snap["requests"]
            nbytes += snap["bytes"]
        blocks = res.blocks.stats.snapshot()
        return {"io/requests": requests, "io/bytes": nbytes, "io/cache_hits": blocks["hits"],
                "io/cache_misses": blocks["misses"], "io/slide_opens": res.opens,
                "io/structure_cache_hits": res.structure_hits.snapshot()["hits"]}
