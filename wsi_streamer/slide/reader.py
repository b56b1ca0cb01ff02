"""The slide API: ``SlideReader`` (the contract every format driver implements, defined in
``format.contract``) and ``open_slide`` (from a URL-like source or a ``RangeReader``)."""

from __future__ import annotations

from typing import Any

from ..format import drivers
from ..format.contract import FormatDriver, SlideReader
from ..format.drivers import Parsed
from ..format.openslide_driver import OpenSlideReader
from ..io.block_cache import BlockCache, BlockStore
from ..io.factory import open_url_reader
from ..io.range_reader import RangeReader

__all__ = ["OpenSlideReader", "SlideReader", "open_slide", "open_with_openslide"]


def open_slide(source: str | RangeReader, *, blocks: BlockStore | None = None,
               parsed: Parsed | None = None, openslide: bool = False,
               **storage_options: Any) -> SlideReader:
    """Open a slide from a URL (``s3://bucket/key``, ``https://host/path``), a local file path
    or a ``RangeReader``.

    Reads go through a block cache (the block store ``blocks``, or a private one). ``parsed``
    skips parsing when the caller already has it for this reader's identity. ``openslide=True`` lets
    OpenSlide read local files the native drivers refuse (the ``[openslide]`` extra).
    ``storage_options`` go to the URL's storage backend (``io.factory``): for ``s3://``
    ``endpoint_url``, ``region``, ``profile_name``, ``anonymous``, ``requester_pays`` and
    timeouts, credentials from boto3's usual chain; for ``https://`` timeouts and headers.
    Raises ``SlideNotFound``, ``UnsupportedFormat`` (with the reason) or a ``StorageError``."""
    if isinstance(source, str):
        reader: RangeReader = open_url_reader(source, **storage_options)
    else:
        reader = source
    cached = reader if isinstance(reader, BlockCache) else BlockCache(reader, blocks)
    table: tuple[FormatDriver, ...] = drivers.with_openslide() if openslide else drivers.NATIVE
    return (parsed or drivers.parse(cached, table)).open(cached)


def open_with_openslide(path: str) -> OpenSlideReader:
    """``path`` read by OpenSlide whatever the native drivers make of it (the patch
    pipeline's ``OpenSlideBackend``, for wsistream's pixels): the OpenSlide driver's reader,
    with OpenSlide's own ``read_region`` and ``thumbnail``. ``UnsupportedFormat`` when
    OpenSlide cannot read it; ``ImportError`` naming the extra without OpenSlide."""
    from ..format.openslide_driver import open_local, require_openslide

    require_openslide()
    return open_local(path)
