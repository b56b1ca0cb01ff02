"""Colour management of served images (``WSI_COLOR_MODE``), with LittleCMS through Pillow.

A slide may carry its scanner's ICC profile (TIFF tag 34675); its pixels are in that colour
space, not sRGB, so a browser that assumes sRGB shows other colours than the vendor viewer.

- ``embed``: the profile travels in every JPEG/PNG, pixels untouched: a colour-managed browser
  shows the vendor's colours.
- ``srgb``: pixels are converted to sRGB (relative colorimetric) and a compact sRGB profile
  is embedded: right everywhere, one transform per image.
- ``ignore``: the profile is not used (pixels as stored, no profile).

A profile LittleCMS cannot read is ignored (one warning per profile), never an error."""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from collections import OrderedDict

from PIL import Image, ImageCms

logger = logging.getLogger(__name__)

MODES = ("embed", "srgb", "ignore")
SRGB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
MAX_TRANSFORMS = 32  # distinct slide profiles kept (a transform is ~ a few hundred KB)


class ColorManager:
    """Thread-safe; one per process. ``apply`` gives the pixels and the profile to embed."""

    def __init__(self, mode: str = "embed") -> None:
        if mode not in MODES:
            raise ValueError(f"colour mode {mode!r} is not one of {', '.join(MODES)}")
        self.mode = mode
        self._transforms: OrderedDict[bytes, ImageCms.ImageCmsTransform | None] = OrderedDict()
        self._lock = threading.Lock()

    def apply(self, image: Image.Image, profile: bytes | None
              ) -> tuple[Image.Image, bytes | None]:
        """``(image, ICC profile to embed or None)`` for a slide whose profile is
        ``profile``."""
        if profile is None or self.mode == "ignore":
            return image, None
        if self.mode == "embed":
            return image, profile
        transform = self._transform(profile)
        if transform is None:
            return image, None
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        converted = ImageCms.applyTransform(rgb, transform)
        assert converted is not None  # None only when converting in place
        return converted, SRGB_PROFILE

    def _transform(self, profile: bytes) -> ImageCms.ImageCmsTransform | None:
        key = hashlib.blake2b(profile, digest_size=16).digest()
        with self._lock:
            if key in self._transforms:
                self._transforms.move_to_end(key)
                return self._transforms[key]
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            transform: ImageCms.ImageCmsTransform | None = ImageCms.buildTransform(
                source, ImageCms.ImageCmsProfile(io.BytesIO(SRGB_PROFILE)), "RGB", "RGB",
                renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
        except (ImageCms.PyCMSError, OSError, ValueError) as exc:
            logger.warning("a slide's ICC profile cannot be used (%s); its pixels are served "
                           "as stored", exc)
            transform = None
        with self._lock:
            self._transforms[key] = transform
            while len(self._transforms) > MAX_TRANSFORMS:
                self._transforms.popitem(last=False)
        return transform

    @property
    def cache_tag(self) -> str:
        """What a cached image's key must include: the same pixels differ between modes."""
        return f"color={self.mode}"
