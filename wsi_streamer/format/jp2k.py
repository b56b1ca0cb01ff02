"""JPEG 2000 tiles (Aperio 33003/33005, libtiff 34712) decoded with pylibjpeg-openjpeg.

Before openjpeg sees a tile its markers are read (``j2k_header``) and the tile is refused when
its declared size exceeds the TIFF tile's, or it has more than ``MAX_JP2K_COMPONENTS``
components or ``MAX_JP2K_PRECISION`` bits, or its decode would hold more than
``MAX_JP2K_DECODE_BYTES``. At most ``JP2K_DECODES`` decodes run at once per process (threads
waiting for a slot poll their ``budget``), so concurrent requests cannot multiply the peak.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image

from ..budget import checkpoint
from ..errors import DecodeError, LimitExceeded, UnsupportedFormat
from ..limits import (
    JP2K_DECODES,
    MAX_JP2K_COMPONENTS,
    MAX_JP2K_DECODE_BYTES,
    MAX_JP2K_PRECISION,
)
from .j2k_header import J2kHeader, read_header

try:  # the plugin is a hard dependency; the import is guarded so JPEG-only use still works
    import openjpeg as _openjpeg

    openjpeg: Any = _openjpeg
except ImportError:  # pragma: no cover
    openjpeg = None

_BAND_ROWS = 128  # rows converted at once: float32 temporaries stay about 50 B x width x 128
_slots = threading.BoundedSemaphore(JP2K_DECODES)


def _reset_slots() -> None:  # a child forked while a parent thread held a slot starts free
    global _slots
    _slots = threading.BoundedSemaphore(JP2K_DECODES)


os.register_at_fork(after_in_child=_reset_slots)


@contextmanager
def decode_slot() -> Iterator[None]:
    """Hold one of the process's ``JP2K_DECODES`` slots; while waiting, the budget in force is
    checked every 0.25 s (``DeadlineExceeded`` / ``WorkAbandoned``)."""
    slots = _slots
    while not slots.acquire(timeout=0.25):
        checkpoint()
    try:
        yield
    finally:
        slots.release()


def ycbcr_to_rgb(array: np.ndarray) -> np.ndarray:
    """Full-range BT.601 YCbCr (JFIF) to RGB, as OpenSlide does for Aperio 33003 tiles;
    converted in bands of rows so the float temporaries stay small."""
    out = np.empty(array.shape[:2] + (3,), np.uint8)
    for top in range(0, array.shape[0], _BAND_ROWS):
        ycc = array[top : top + _BAND_ROWS, :, :3].astype(np.float32)
        y, cb, cr = ycc[..., 0], ycc[..., 1] - 128.0, ycc[..., 2] - 128.0
        rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1)
        out[top : top + _BAND_ROWS] = np.clip(np.rint(rgb), 0, 255)
    return out


def check_codestream(data: bytes, max_size: tuple[int, int]) -> J2kHeader:
    """The tile's header, or ``LimitExceeded`` (components, precision, working set) /
    ``UnsupportedFormat`` (declared larger than the TIFF tile) / ``DecodeError`` (no
    codestream) before anything is decoded."""
    header = read_header(data)
    width, height, count = header.width, header.height, len(header.sizes)
    if count > MAX_JP2K_COMPONENTS or count == 0:
        raise LimitExceeded("MAX_JP2K_COMPONENTS", f"JPEG 2000 tile has {count} components, "
                            f"expected 1 to {MAX_JP2K_COMPONENTS}")
    if header.precision > MAX_JP2K_PRECISION:
        raise LimitExceeded("MAX_JP2K_PRECISION", f"JPEG 2000 tile has {header.precision}-bit "
                            f"samples, more than {MAX_JP2K_PRECISION}")
    if not (width <= max_size[0] and height <= max_size[1]):
        raise UnsupportedFormat(f"JPEG 2000 tile declares {width}x{height} in its SIZ, larger "
                                f"than the TIFF tile ({max_size[0]}x{max_size[1]})")
    need = header.working_set()
    if need > MAX_JP2K_DECODE_BYTES:
        raise LimitExceeded("MAX_JP2K_DECODE_BYTES", f"JPEG 2000 tile ({width}x{height}, "
                            f"{count} components, {header.tiles} tiles) would need "
                            f"{need / 2**20:.0f} MiB to decode, more than "
                            f"{MAX_JP2K_DECODE_BYTES >> 20} MiB")
    return header


def decode_jp2k(data: bytes, max_size: tuple[int, int], ycbcr: bool) -> Image.Image:
    """Decode a JPEG 2000 codestream (or JP2 file) to RGB; ``ycbcr`` converts the components
    (33003, or Photometric=YCbCr) since Aperio writes them without the codestream transform.
    Checked first (``check_codestream``), then decoded in one of the process's slots."""
    if openjpeg is None:  # pragma: no cover
        raise DecodeError("JPEG 2000 support needs pylibjpeg-openjpeg")
    check_codestream(data, max_size)
    with decode_slot():
        try:
            array = np.asarray(openjpeg.decode(data))
        except Exception as exc:  # noqa: BLE001 - the codec raises plain RuntimeError/ValueError
            raise DecodeError(f"JPEG 2000 tile could not be decoded: {exc}") from exc
        if array.dtype != np.uint8:
            array = np.clip(array, 0, 255).astype(np.uint8)
        if array.ndim == 2:
            return Image.fromarray(array, "L").convert("RGB")
        if array.shape[2] < 3:
            raise DecodeError(f"JPEG 2000 tile has {array.shape[2]} components")
        rgb = ycbcr_to_rgb(array) if ycbcr else np.ascontiguousarray(array[..., :3])
        return Image.fromarray(rgb, "RGB")
