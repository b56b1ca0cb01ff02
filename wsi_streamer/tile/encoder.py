"""Output encoding: JPEG, PNG and WebP, optionally carrying an ICC profile, and the IIIF
quality reductions (gray, bitonal) applied before it."""

from __future__ import annotations

import io

from PIL import Image

from ..errors import EncodeError

BITONAL_THRESHOLD = 128  # gray levels at or above are white


def encode_jpeg(image: Image.Image, quality: int, icc_profile: bytes | None = None) -> bytes:
    """Baseline JPEG at ``quality`` (1-100); 4:4:4 chroma at 90 and above, else 4:2:0. An
    ``L`` image stays one-channel; anything else is converted to RGB. ``icc_profile`` (an ICC
    profile's bytes) is embedded as APP2 segments when given."""
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    extra = {"icc_profile": icc_profile} if icc_profile else {}
    return _save(image, "JPEG", quality=quality, subsampling=0 if quality >= 90 else 2,
                 **extra)


def encode(image: Image.Image, fmt: str, quality: int, icc_profile: bytes | None = None
           ) -> bytes:
    """``image`` as ``fmt`` (``jpg``, ``png`` or ``webp``); ``quality`` is JPEG's and WebP's
    (PNG is lossless). ``EncodeError`` when the encoder fails or ``fmt`` is unknown."""
    extra = {"icc_profile": icc_profile} if icc_profile else {}
    if fmt == "jpg":
        return encode_jpeg(image, quality, icc_profile)
    if fmt == "png":
        return _save(image, "PNG", compress_level=1, **extra)
    if fmt == "webp":
        if image.mode == "1":
            image = image.convert("L")
        return _save(image, "WEBP", quality=quality, **extra)
    raise EncodeError(f"no encoder for {fmt[:16]!r}")


def apply_quality(image: Image.Image, quality: str) -> Image.Image:
    """IIIF qualities: ``default``/``color`` RGB as is, ``gray`` luminance (ITU-R 601-2,
    Pillow's ``L``), ``bitonal`` luminance thresholded at ``BITONAL_THRESHOLD`` (an ``L``
    image of 0 and 255 only, so every format can carry it)."""
    if quality == "gray":
        return image.convert("L")
    if quality == "bitonal":
        return image.convert("L").point(lambda v: 255 if v >= BITONAL_THRESHOLD else 0)
    return image


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt, **options)
    except (OSError, ValueError) as exc:
        raise EncodeError(f"{fmt} encoding failed: {exc}") from exc
    return buffer.getvalue()
