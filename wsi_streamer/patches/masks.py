"""Tissue masks: detected once per host. A mask is looked up in the process's LRU
(``tissue_mask_cache_size``), then in the host cache (keyed by slide identity, detector
configuration and thumbnail size, shared by every worker and rank), and only then detected
from a thumbnail. Thread-safe."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from ..slide.hostcache import HostCache
from .handle import SlideHandle
from .tissue import TissueDetector
from .types import TissueMask


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
        return f"mask:{identity}:{detector_key(self.detector)}:{w}x{h}"

    def get(self, slide: SlideHandle, host: HostCache | None) -> TissueMask:
        key = self.key(slide.identity)
        with self._lock:
            mask = self._lru.get(key)
            if mask is not None:
                self._lru.move_to_end(key)
                self.hits += 1
                return mask
        mask = _unpack(host.get_object(key)) if host is not None else None
        if mask is not None:
            with self._lock:
                self.hits += 1
        else:
            mask = self.detect(slide)
            if host is not None:
                host.put_object(key, _pack(mask))
        if self.lru_size > 0:
            with self._lock:
                self._lru[key] = mask
                while len(self._lru) > self.lru_size:
                    self._lru.popitem(last=False)
        return mask

    def detect(self, slide: SlideHandle) -> TissueMask:
        thumbnail = slide.get_thumbnail(self.thumbnail_size)
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


def _pack(mask: TissueMask) -> dict[str, Any]:
    return {"bits": np.packbits(mask.mask), "shape": mask.mask.shape,
            "downsample": mask.downsample, "dims": mask.slide_dimensions}


def _unpack(entry: Any) -> TissueMask | None:
    if not isinstance(entry, dict):
        return None
    try:
        shape = tuple(entry["shape"])
        bits = np.unpackbits(entry["bits"], count=int(np.prod(shape))).astype(bool)
        return TissueMask(mask=bits.reshape(shape), downsample=float(entry["downsample"]),
                          slide_dimensions=tuple(entry["dims"]))
    except (KeyError, TypeError, ValueError):
        return None
