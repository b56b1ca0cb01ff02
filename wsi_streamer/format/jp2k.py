"""JPEG 2000 tiles (Aperio 33003/33005, libtiff 34712) decoded with pylibjpeg-openjpeg."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from ..errors import DecodeError

try:  # the plugin is a hard dependency; the import is guarded so JPEG-only use still works
    import openjpeg as _openjpeg

    openjpeg: Any = _openjpeg
except ImportError:  # pragma: no cover
    openjpeg = None


def ycbcr_to_rgb(array: np.ndarray) -> np.ndarray:
    """Full-range BT.601 YCbCr (JFIF) to RGB, as OpenSlide does for Aperio 33003 tiles."""
    ycc = array.astype(np.float32)
    y, cb, cr = ycc[..., 0], ycc[..., 1] - 128.0, ycc[..., 2] - 128.0
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1)
    out: np.ndarray = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return out


def decode_jp2k(data: bytes, max_size: tuple[int, int], ycbcr: bool) -> Image.Image:
    """Decode a JPEG 2000 codestream (or JP2 file) to RGB; ``ycbcr`` converts the components
    (33003, or Photometric=YCbCr) since Aperio writes them without the codestream transform."""
    if openjpeg is None:  # pragma: no cover
        raise DecodeError("JPEG 2000 support needs pylibjpeg-openjpeg")
    try:
        params = openjpeg.get_parameters(data)
        rows, cols = int(params["rows"]), int(params["columns"])
        if not (0 < cols <= max_size[0] and 0 < rows <= max_size[1]):
            raise DecodeError(f"JPEG 2000 tile is {cols}x{rows}, expected at most "
                              f"{max_size[0]}x{max_size[1]}")
        array = np.asarray(openjpeg.decode(data))
    except DecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - the codec raises plain RuntimeError/ValueError
        raise DecodeError(f"JPEG 2000 tile could not be decoded: {exc}") from exc
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        return Image.fromarray(array, "L").convert("RGB")
    if array.shape[2] >= 3:
        array = array[..., :3]
        if ycbcr:
            array = ycbcr_to_rgb(array)
        return Image.fromarray(np.ascontiguousarray(array), "RGB")
    raise DecodeError(f"JPEG 2000 tile has {array.shape[2]} components")
