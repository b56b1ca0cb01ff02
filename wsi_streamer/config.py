"""The one frozen configuration, read from ``WSI_*`` environment variables (the ``serve``
command turns its flags into those variables). Only ``server/`` reads it; lower layers take
plain arguments."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|K|KIB|MB|M|MIB|GB|G|GIB)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2, "MB": 1024**2,
          "MIB": 1024**2, "G": 1024**3, "GB": 1024**3, "GIB": 1024**3}


def parse_size(text: str) -> int:
    """``256MB`` -> 268435456 (KB/MB/GB are powers of 1024); plain digits are bytes."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 256MB, 64KB or bytes)")
    return int(match.group(1)) * _UNITS[(match.group(2) or "").upper()]


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r} (use true or false)")


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text.strip())
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}-{high}")
        return value
    return parse


def _origins(text: str) -> tuple[str, ...]:
    return tuple(o.strip() for o in text.split(",") if o.strip())


def default_tile_cache_dir() -> str:
    """The same folder for every worker of this user on the host, so they share one cache.
    A predictable name in the shared temp dir: the cache creates it 0700 and refuses it when
    it is a link, another uid's or writable by others (``slide.cachedir``)."""
    return os.path.join(tempfile.gettempdir(), f"wsi_streamer-tiles-{os.getuid()}")


@dataclass(frozen=True)
class Config:
    host: str = "0.0.0.0"
    port: int = 3000
    # One storage URL (s3://bucket/prefix, file:///path, https://host/prefix); when unset,
    # WSI_S3_BUCKET/WSI_S3_PREFIX or WSI_SLIDES_DIR say the same (aliases).
    storage: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    slides_dir: str = "./slides"
    auth_enabled: bool = False
    auth_secret: str | None = None
    signature_ttl: int = 3600
    cache_slides: int = 100
    cache_blocks: int = 256 * 1024 * 1024
    block_size: int = 256 * 1024
    cache_tiles: int = 100 * 1024 * 1024
    tile_cache_dir: str | None = None
    jpeg_quality: int = 80
    cache_max_age: int = 3600
    cors_origins: tuple[str, ...] = ("*",)
    threads: int = 8  # worker threads (sizes the storage connection pool)
    revalidate_s: int = 60  # how often an open slide's ETag/mtime is checked again

    def __post_init__(self) -> None:
        if self.auth_enabled and not self.auth_secret:
            raise ConfigError("WSI_AUTH_ENABLED is true but WSI_AUTH_SECRET is not set")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"WSI_JPEG_QUALITY must be 1-100, got {self.jpeg_quality}")
        if self.block_size < 4096:
            raise ConfigError(f"WSI_BLOCK_SIZE must be at least 4KB, got {self.block_size}")

    @property
    def storage_description(self) -> str:
        if self.s3_bucket:
            return f"s3://{self.s3_bucket}/{self.s3_prefix}"
        return os.path.abspath(self.slides_dir)

    @property
    def resolved_tile_cache_dir(self) -> str:
        return self.tile_cache_dir or default_tile_cache_dir()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Read ``WSI_*`` variables; a bad value raises ``ConfigError`` naming the variable."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, (var, parse) in _VARIABLES.items():
            raw = env.get(var)
            if raw is None or (raw == "" and name not in ("s3_prefix",)):
                continue
            try:
                values[name] = parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{var}={raw!r}: {exc}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)



def _text(text: str) -> str:
    return text.strip()


_VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "host": ("WSI_HOST", _text),
    "port": ("WSI_PORT", _int_in(0, 65535)),
    "storage": ("WSI_STORAGE", _text),
    "s3_bucket": ("WSI_S3_BUCKET", _text),
    "s3_prefix": ("WSI_S3_PREFIX", _text),
    "s3_endpoint": ("WSI_S3_ENDPOINT", _text),
    "s3_region": ("WSI_S3_REGION", _text),
    "slides_dir": ("WSI_SLIDES_DIR", _text),
    "auth_enabled": ("WSI_AUTH_ENABLED", parse_bool),
    "auth_secret": ("WSI_AUTH_SECRET", str),
    "signature_ttl": ("WSI_SIGNATURE_TTL", _int_in(1, 10 * 365 * 86400)),
    "cache_slides": ("WSI_CACHE_SLIDES", _int_in(1, 1_000_000)),
    "cache_blocks": ("WSI_CACHE_BLOCKS", parse_size),
    "block_size": ("WSI_BLOCK_SIZE", parse_size),
    "cache_tiles": ("WSI_CACHE_TILES", parse_size),
    "tile_cache_dir": ("WSI_TILE_CACHE_DIR", _text),
    "jpeg_quality": ("WSI_JPEG_QUALITY", _int_in(1, 100)),
    "cache_max_age": ("WSI_CACHE_MAX_AGE", _int_in(0, 10 * 365 * 86400)),
    "cors_origins": ("WSI_CORS_ORIGINS", _origins),
    "threads": ("WSI_THREADS", _int_in(1, 1024)),
    "revalidate_s": ("WSI_SLIDE_REVALIDATE", _int_in(0, 86400)),
}
