"""Tissue masks: detected once per host. A mask is looked up in the process's LRU
(``tissue_mask_cache_size``), then in the host cache (keyed by slide identity, detector
configuration and thumbnail size, shared by every worker and rank), and only then detected
from a thumbnail: the backend's cheapest one of at least ``DETECTION_FILL`` of
``thumbnail_size``'s fit (``SlideHandle.get_thumbnail_fit``; the mask's downsample is the
slide's width or height over the thumbnail's, the larger). Thread-safe."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, TypeGuard

import numpy as np

from ..budget import checkpoint
from ..slide.hostcache import HostCache
from .handle import SlideHandle
from .tissue import TissueDetector
from .types import TissueMask

MASK_KIND = "wsi_streamer.tissue_mask"  # the host-cache record (``slide.codec``) of a mask
# Detection takes a thumbnail down to this fraction of ``thumbnail_size``'s fit on each side
# when the backend has one for less work (a level reduced while decoding, not resampled).
DETECTION_FILL = 0.95


def detector_key(detector: TissueDetector) -> str:
    key = getattr(detector, "config_key", None)
    return str(key()) if callable(key) else repr(detector)


class MaskStore:
    """Where the pipeline gets masks. ``hits`` / ``detections`` count what happened."""

    def __init__(self, detector: TissueDetector, thumbnail_size: tuple[int, int],
                 lru_size: int) -> None:
        self.detector = detector
        self.thumbnail_size = thumbnail_size
        self.lru_size = lru_size
        self._lru: OrderedDict[str, TissueMask] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.detections = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_lru"] = OrderedDict()
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def key(self, identity: str) -> str:
        w, h = self.thumbnail_size
        return f"mask:{identity}:{detector_key(self.detector)}:{w}x{h}/{DETECTION_FILL}"

    def get(self, slide: SlideHandle, host: HostCache | None) -> TissueMask:
        key = self.key(slide.identity)
        with self._lock:
            mask = self._lru.get(key)
            if mask is not None:
                self._lru.move_to_end(key)
                self.hits += 1
                return mask
        mask = _unpack(host.get_arrays(key, MASK_KIND)) if host is not None else None
        if mask is not None:
            with self._lock:
                self.hits += 1
        else:
            mask = self.detect(slide)
            if host is not None:
                host.put_arrays(key, MASK_KIND, *_pack(mask))
        if self.lru_size > 0:
            with self._lock:
                self._lru[key] = mask
                while len(self._lru) > self.lru_size:
                    self._lru.popitem(last=False)
        return mask

    def detect(self, slide: SlideHandle) -> TissueMask:
        thumbnail = slide.get_thumbnail_fit(self.thumbnail_size, DETECTION_FILL)
        checkpoint()  # the open's budget: not past it into detection
        th, tw = thumbnail.shape[:2]
        sw, sh = slide.properties.dimensions
        ds = (sw / tw, sh / th)
        mask = np.asarray(self.detector.detect(thumbnail, downsample=ds), dtype=bool)
        with self._lock:
            self.detections += 1
        return TissueMask(mask=mask, downsample=max(ds), slide_dimensions=(sw, sh))

    def clear(self) -> None:
        with self._lock:
            self._lru.clear()


def _pack(mask: TissueMask) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A mask as a host-cache array record: packed bits, shape and geometry."""
    meta = {"shape": list(mask.mask.shape), "downsample": float(mask.downsample),
            "dims": [int(d) for d in mask.slide_dimensions]}
    return meta, {"bits": np.packbits(mask.mask)}


def _unpack(record: tuple[dict[str, Any], dict[str, np.ndarray]] | None) -> TissueMask | None:
    """The mask ``_pack`` stored; None for anything malformed."""
    if record is None:
        return None
    meta, arrays = record
    shape, dims, downsample = meta.get("shape"), meta.get("dims"), meta.get("downsample")
    bits = arrays.get("bits")
    if not (_ints(shape, 2) and _ints(dims, 2) and isinstance(downsample, (int, float))
            and not isinstance(downsample, bool) and bits is not None
            and bits.dtype == np.uint8 and bits.ndim == 1):
        return None
    count = shape[0] * shape[1]
    if bits.size != -(-count // 8):
        return None
    mask = np.unpackbits(bits, count=count).astype(bool).reshape(shape)
    return TissueMask(mask=mask, downsample=float(downsample),
                      slide_dimensions=(int(dims[0]), int(dims[1])))


def _ints(value: Any, n: int) -> TypeGuard[list[int]]:
    return isinstance(value, list) and len(value) == n and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
