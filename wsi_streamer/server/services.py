"""The per-process services of the app, kept in ``app.extensions["wsi_streamer"]``."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from ..config import Config
from ..io.block_cache import BlockStore
from ..io.local import LocalStorage
from ..io.s3 import S3Storage
from ..io.storage import Storage
from ..slide.registry import SlideRegistry
from ..tile.cache import TileCache
from ..tile.service import TileService


@dataclass
class Services:
    config: Config
    storage: Storage
    store: BlockStore
    registry: SlideRegistry
    tile_cache: TileCache
    tiles: TileService


def build_services(config: Config) -> Services:
    storage: Storage
    if config.s3_bucket:
        storage = S3Storage(config.s3_bucket, config.s3_prefix, endpoint_url=config.s3_endpoint,
                            region=config.s3_region, max_connections=max(10, 2 * config.threads))
    else:
        storage = LocalStorage(config.slides_dir)
    store = BlockStore(config.block_size, config.cache_blocks)
    # A folder that is not private to this user is a ConfigError here, at startup; a broken
    # database is not (the cache degrades to misses).
    tile_cache = TileCache(config.resolved_tile_cache_dir, config.cache_tiles,
                           setting="WSI_TILE_CACHE_DIR", default_dir=config.tile_cache_dir is None)
    registry = SlideRegistry(storage, store, max_slides=config.cache_slides,
                             revalidate_s=config.revalidate_s, structures=tile_cache)
    tiles = TileService(registry, tile_cache, default_quality=config.jpeg_quality)
    if config.s3_bucket:
        # Create the boto3 client now (in the worker, after fork), not in a first request.
        getattr(storage, "client", None)
    return Services(config, storage, store, registry, tile_cache, tiles)


def services(app: Flask | None = None) -> Services:
    found: Services = (app or current_app).extensions["wsi_streamer"]
    return found
