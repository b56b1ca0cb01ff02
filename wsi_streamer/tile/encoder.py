"""JPEG output encoding."""

from __future__ import annotations

import io

from PIL import Image

from ..errors import EncodeError


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """Baseline JPEG at ``quality`` (1-100); 4:4:4 chroma at 90 and above, else 4:2:0."""
    buffer = io.BytesIO()
    try:
        image.convert("RGB").save(buffer, format="JPEG", quality=quality,
                                  subsampling=0 if quality >= 90 else 2)
    except (OSError, ValueError) as exc:
        raise EncodeError(f"JPEG encoding failed: {exc}") from exc
    return buffer.getvalue()
