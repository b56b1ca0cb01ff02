"""The per-process services of the app, kept in ``app.extensions["wsi_streamer"]``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app

from ..config import Config
from ..errors import ConfigError
from ..format import drivers
from ..format.contract import FormatDriver
from ..io.block_cache import BlockStore
from ..io.factory import open_storage, storage_spec
from ..io.location import StorageSpec
from ..io.slots import StorageSlots
from ..io.storage import Storage
from ..io.transfer import ReadDeadline
from ..slide.registry import SlideRegistry
from ..tile.cache import TileCache
from ..tile.color import ColorManager
from ..tile.service import TileService
from .readiness import Readiness

logger = logging.getLogger(__name__)

@dataclass
class Services:
    config: Config
    storage: Storage
    blocks: BlockStore  # the block store (cached byte ranges); storage is the backend
    registry: SlideRegistry
    tile_cache: TileCache
    tiles: TileService
    slots: StorageSlots  # WSI_THREADS - 1 storage-bound requests at once: one thread stays free
    readiness: Readiness  # /health/ready: storage reachable (bounded, cached)


def storage_of(config: Config) -> tuple[StorageSpec, dict[str, Any]]:
    """Where the slides are and the backend's options: ``WSI_STORAGE`` when set, else the
    aliases ``WSI_S3_BUCKET``/``WSI_S3_PREFIX``, else ``WSI_SLIDES_DIR``. ``WSI_S3_ENDPOINT``,
    ``WSI_S3_REGION`` and ``WSI_S3_ANONYMOUS`` apply to any ``s3://`` storage (GCS and others
    through their S3 API).
    ``ConfigError`` naming ``WSI_STORAGE`` for a URL no backend serves."""
    if config.storage:
        try:
            spec = storage_spec(config.storage)
        except ValueError as exc:
            raise ConfigError(f"WSI_STORAGE: {exc}") from exc
    elif config.s3_bucket:
        spec = StorageSpec("s3", config.s3_bucket, config.s3_prefix.strip("/"))
    else:
        spec = StorageSpec("file", "", config.slides_dir)
    options: dict[str, Any] = {}
    if spec.scheme == "s3":
        options.update(endpoint_url=config.s3_endpoint, region=config.s3_region,
                       anonymous=config.s3_anonymous)
    if spec.scheme != "file":
        options["max_connections"] = max(10, 2 * config.threads)
        options["deadline"] = ReadDeadline(base_s=float(config.storage_deadline))
    if spec.scheme in ("http", "https"):
        options["redirects"] = config.http_redirects
    return spec, options


def formats_of(config: Config, spec: StorageSpec) -> tuple[FormatDriver, ...]:
    """The format drivers: the native ones, plus OpenSlide with ``WSI_OPENSLIDE_FALLBACK``
    over a local folder. Over other storage the fallback cannot apply (OpenSlide reads
    files, not ranges): a warning, and refused slides keep their 415 with the reason.
    ``ConfigError`` when the extra is not installed."""
    if not config.openslide_fallback:
        return drivers.NATIVE
    if spec.scheme != "file":
        logger.warning("WSI_OPENSLIDE_FALLBACK applies to local folders only: OpenSlide reads "
                       "files, not %s:// ranges; slides there are read natively", spec.scheme)
        return drivers.NATIVE
    try:
        return drivers.with_openslide()
    except ImportError as exc:
        raise ConfigError(f"WSI_OPENSLIDE_FALLBACK: {exc}") from None


def configured_storage(config: Config) -> tuple[Storage, StorageSpec, tuple[FormatDriver, ...]]:
    """The storage backend ``config`` names (no connection made yet), where it is, and the
    format drivers it is read with (a folder lists only the files they open)."""
    spec, options = storage_of(config)
    formats = formats_of(config, spec)
    if spec.scheme == "file":
        options.update(extensions=drivers.extensions(formats),
                       openable=drivers.recognised(formats))
    return open_storage(spec, **options), spec, formats


def build_services(config: Config) -> Services:
    storage, spec, formats = configured_storage(config)
    blocks = BlockStore(config.block_size, config.cache_blocks)
    # A folder that is not private to this user is a ConfigError here, at startup; a broken
    # database is not (the cache degrades to misses).
    tile_cache = TileCache(config.resolved_tile_cache_dir, config.cache_tiles,
                           setting="WSI_TILE_CACHE_DIR", default_dir=config.tile_cache_dir is None)
    registry = SlideRegistry(storage, blocks, max_slides=config.cache_slides,
                             revalidate_s=config.revalidate_s, structures=tile_cache,
                             formats=formats)
    tiles = TileService(registry, tile_cache, default_quality=config.jpeg_quality,
                        color=ColorManager(config.color_mode),
                        overview_deadline=config.overview_deadline)
    # Create the storage client now (in the worker, after fork), not in a first request.
    getattr(storage, "client" if spec.scheme == "s3" else "pool", None)
    slots = StorageSlots(max(1, config.threads - 1))
    return Services(config, storage, blocks, registry, tile_cache, tiles, slots,
                    Readiness(storage.check))


def services(app: Flask | None = None) -> Services:
    found: Services = (app or current_app).extensions["wsi_streamer"]
    return found
