"""The one place that turns a storage URL into a ``Storage`` backend: a table from URL
scheme to backend.

Adding a storage backend is one module (a class with the ``Storage`` protocol of
``io/storage.py``) plus one entry in ``BACKENDS`` below; URLs of the usual
``scheme://host/prefix`` shape need nothing else (``io/location.py`` parses them all).
``open_storage`` is what the server, ``open_slide`` and the patch pipeline call.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from typing import Any

from .http import HttpStorage
from .local import LocalReader, LocalStorage
from .location import StorageSpec, parse_storage_url, split_object_url
from .range_reader import RangeReader
from .s3 import S3Storage
from .series import SELECTION_MARK, split_selection
from .storage import Storage

Backend = Callable[[StorageSpec, dict[str, Any]], Storage]


def _s3(spec: StorageSpec, options: dict[str, Any]) -> Storage:
    """``s3://bucket/prefix``; options: those of ``S3Storage`` (``endpoint_url``, ``region``,
    ``profile_name``, ``anonymous``, ``requester_pays``, timeouts, ``max_connections``)."""
    return S3Storage(spec.host, spec.prefix, **options)


def _http(spec: StorageSpec, options: dict[str, Any]) -> Storage:
    """``http(s)://host[:port]/prefix``; options: those of ``HttpStorage`` (timeouts,
    ``max_attempts``, ``max_connections``, ``headers``)."""
    return HttpStorage(f"{spec.scheme}://{spec.host}", spec.prefix, **options)


def _file(spec: StorageSpec, options: dict[str, Any]) -> Storage:
    """``file:///folder`` or a plain folder path; options: ``extensions`` and ``openable``
    (the file names listed and opened: ``LocalStorage``)."""
    unknown = sorted(set(options) - {"extensions", "openable"})
    if unknown:
        raise TypeError(f"a local folder takes only extensions and openable, got {unknown}")
    return LocalStorage(spec.prefix, **options)


BACKENDS: dict[str, Backend] = {"s3": _s3, "http": _http, "https": _http, "file": _file}


def storage_spec(url: str | StorageSpec) -> StorageSpec:
    """``parse_storage_url`` plus a check that a backend serves the scheme; ``ValueError``
    naming the known schemes otherwise."""
    spec = url if isinstance(url, StorageSpec) else parse_storage_url(url)
    if spec.scheme not in BACKENDS:
        raise ValueError(f"no storage backend for {spec.scheme}:// URLs "
                         f"(known: {', '.join(sorted(BACKENDS))})")
    return spec


def open_storage(spec: str | StorageSpec, **options: Any) -> Storage:
    """The storage at ``spec`` (a URL or a parsed ``StorageSpec``). Creates no connection:
    clients and pools are made on first use. ``ValueError`` for a bad URL, ``TypeError`` for
    options the backend does not take."""
    parsed = storage_spec(spec)
    return BACKENDS[parsed.scheme](parsed, dict(options))


def open_url_reader(url: str, **options: Any) -> RangeReader:
    """A reader of the one object ``url`` names (``s3://b/key``, ``https://host/path``, a
    file path); the storage is made at the URL's root and the rest is the id. A local path is
    read as given (any file name; ``LocalStorage`` opens only what it would list), a folder
    holding a series (``io.series``; ``folder@z=1`` selects its images) as that series. Raises
    ``SlideNotFound`` or a ``StorageError``; ``ValueError`` for a URL naming no object."""
    if "://" not in url:  # a path, read as given
        if options:
            raise TypeError(f"a local file takes no storage options, got {sorted(options)}")
        path, selection = split_selection(url)
        if os.path.isdir(path):  # a series folder (io.series): its parent is the storage
            folder, name = os.path.split(os.path.realpath(path))
            return LocalStorage(folder).open(name + (SELECTION_MARK + selection
                                                     if selection else ""))
        return LocalReader(url, url)
    spec, object_id = split_object_url(url)
    if spec.scheme == "file":
        return open_url_reader(posixpath.join(spec.prefix, object_id), **options)
    return open_storage(spec, **options).open(object_id)
