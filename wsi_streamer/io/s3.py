"""Slides in S3 (or any S3-compatible storage): ``HeadObject`` once, ranged ``GetObject`` reads.

botocore exceptions are translated here and nowhere else:
``NoSuchKey``/404 -> ``SlideNotFound``; 412 on a read pinned with ``IfMatch`` (the object
was replaced) -> ``ObjectChanged``; unreachable endpoint -> ``StorageConnectionError``;
anything else -> ``StorageError``. Throttling and 5xx are retried with backoff by botocore's
"standard" retry mode; short or broken bodies are retried here. Every ranged read has a total
deadline (``transfer.ReadDeadline``), its body read in chunks against it: botocore's
``read_timeout`` bounds one silent wait only. Past it: ``StorageTimeout`` (504).

Three data planes, one table (``DATA_PLANES``), one retry loop for the first two
(``s3_get.get_range_lean``, SigV4 signed here, credentials from the boto3 session):
``"curl"`` (``io/s3_curl.py``: libcurl through pycurl, handles shared by threads, made per
process), the default where ``pycurl`` imports (the ``patches`` extra installs it); ``"lean"``
(``io/s3_lean.py``: one urllib3 pool per process), the default otherwise; ``"boto3"``.
Process CPU per ranged GET of 96 KB, 16 threads, +20 ms per request (issue 21,
``docs/training.md``): curl 0.40-0.42 ms, lean 0.70-0.72, boto3 2.1-2.4 (86 KB); obstore about
what curl costs, but it hangs in forked DataLoader workers. The control plane
(HeadObject, ListObjectsV2, HeadBucket: a few requests per slide or listing) stays on boto3,
whose typed responses and error parsing it keeps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from functools import partial
from typing import Any, TypeVar

import boto3
import botocore
import botocore.config
import botocore.exceptions as bex
import botocore.session
import urllib3

from ..errors import (
    StorageError,
    StorageTimeout,
)
from .range_reader import IoStats, check_range, record_storage_request
from .s3_errors import translate
from .s3_get import get_range_lean
from .s3_lean import LeanGet, SignedGet, object_base_url
from .series import SeriesReader, head_reads, series_of, split_selection
from .series_list import after_series, list_members, slide_of_key
from .slots import claim
from .storage import SlidePage, is_slide_name, page_of, validate_slide_id
from .transfer import Clock, ReadDeadline, read_body

logger = logging.getLogger(__name__)

T = TypeVar("T")
_BODY_ATTEMPTS = 3
_MAX_LIST_PAGES = 20


def _call(fn: Callable[[], T], what: str, slide_id: str | None = None) -> T:
    claim()  # a storage slot of this request (server: one thread stays free)
    try:
        return fn()
    except (bex.ClientError, bex.BotoCoreError) as exc:
        raise translate(exc, what, slide_id) from exc


def _total_size(response: Any, body: bytes) -> int:
    """The object size from ``Content-Range: bytes a-b/size`` (or the whole body of a 200)."""
    content_range = str(response.get("ContentRange") or "")
    if not content_range:
        return len(body)
    total = content_range.rpartition("/")[2]
    if not total.isdigit():
        raise StorageError(f"storage sent an unusable Content-Range: {content_range[:64]!r}")
    return int(total)


class S3Reader:
    """``RangeReader`` over one object. ``HeadObject`` happens in ``__init__`` unless the size
    and ETag are already known (a probed open); every read is a ranged ``GetObject`` pinned to
    that ETag (``IfMatch``), so a replaced object fails loudly instead of mixing versions."""

    def __init__(self, client: Any, bucket: str, key: str, slide_id: str,
                 stats: IoStats | None = None, *, size: int | None = None,
                 etag: str | None = None, deadline: ReadDeadline | None = None,
                 lean: SignedGet | None = None) -> None:
        self._client, self._bucket, self._key, self._slide_id = client, bucket, key, slide_id
        self._deadline = deadline or ReadDeadline()
        self._lean = lean
        self.stats = stats if stats is not None else IoStats()
        if size is None or etag is None:
            head = _call(lambda: client.head_object(Bucket=bucket, Key=key),
                         f"HEAD {slide_id}", slide_id)
            record_storage_request(self.stats, 0)
            size, etag = int(head["ContentLength"]), str(head.get("ETag", ""))
        self._size = size
        self._etag = etag.removeprefix("W/").strip('"')
        # A weak ETag (W/"...", from some S3-compatible gateways) never matches in If-Match
        # (RFC 9110 13.1.1: strong comparison): such reads are not pinned (412 forever else).
        self._pin = self._etag if self._etag and not etag.startswith("W/") else None
        self._identity = f"s3://{bucket}/{key}#{self._etag}"

    @property
    def size(self) -> int:
        return self._size

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def etag(self) -> str:
        return self._etag

    def read(self, offset: int, length: int) -> bytes:
        check_range(offset, length, self._size)
        if length == 0:
            return b""
        data, _ = _get_range(self._lean or self._client, self._bucket, self._key,
                             self._slide_id, self.stats, f"{offset}-{offset + length - 1}",
                             length, deadline=self._deadline, if_match=self._pin)
        return data


def _get_range(client: Any, bucket: str, key: str, slide_id: str, stats: IoStats, spec: str,
               length: int | None, *, deadline: ReadDeadline | None = None,
               if_match: str | None = None) -> tuple[bytes, Any]:
    """One ranged ``GetObject`` (``Range: bytes=<spec>``) with short or broken bodies retried,
    all attempts within ``deadline``; ``length`` None accepts whatever ``Content-Length``
    announces (suffix ranges). ``client``: a boto3 client or the lean data plane."""
    if isinstance(client, SignedGet):
        return get_range_lean(client, key, slide_id, stats, spec, length, deadline,
                              if_match)
    what = f"GET {slide_id} [{spec}]"
    extra = {"IfMatch": f'"{if_match}"'} if if_match is not None else {}
    first, _, last = spec.partition("-")
    size = int(last) - int(first) + 1 if first else int(last)
    clock = (deadline or ReadDeadline()).start(size, what)
    for attempt in range(1, _BODY_ATTEMPTS + 1):
        logger.debug("GET s3://%s/%s bytes=%s", bucket, key, spec)
        response = _call(lambda: client.get_object(
            Bucket=bucket, Key=key, Range=f"bytes={spec}", **extra), what, slide_id)
        expected = length if length is not None else int(response.get("ContentLength", -1))
        record_storage_request(stats, max(0, expected))
        try:
            data = _read_body(response["Body"], expected, clock)
        except (bex.BotoCoreError, urllib3.exceptions.HTTPError, OSError) as exc:
            if attempt == _BODY_ATTEMPTS or clock.remaining() <= 0:
                raise translate(exc, what) from exc
            data = b""
        if len(data) == expected:
            return data, response
        logger.warning("%s: body of %d bytes, retrying (%d/%d)", what, len(data),
                       attempt, _BODY_ATTEMPTS)
        time.sleep(0.05 * attempt)
    raise StorageError(f"{what}: truncated response")


def _read_body(body: Any, expected: int, clock: Clock) -> bytes:
    """The body of a ``GetObject`` (botocore's ``StreamingBody`` over a urllib3 response),
    read in chunks before ``clock``'s deadline (``StorageTimeout`` past it, the connection
    closed). A body of another kind (a test double) is read whole."""
    raw = getattr(body, "_raw_stream", None)
    if not isinstance(raw, urllib3.BaseHTTPResponse):
        data: bytes = body.read()
        clock.check()
        return data
    try:
        return read_body(raw, max(0, expected) + 1, clock)
    except StorageTimeout:
        raw.close()  # mid-body: never reuse that socket
        raw.release_conn()
        raise


def _lean_session() -> botocore.session.Session:
    """A botocore session whose responses keep timestamps as text: parsing Last-Modified
    (which we never use) with dateutil is about a quarter of botocore's CPU per ranged GET."""
    session = botocore.session.get_session()
    session.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=str)
    return session


def _request_payer(params: dict[str, Any], **_: Any) -> None:
    """Requester-pays buckets: every call says who pays (``x-amz-request-payer``)."""
    params.setdefault("RequestPayer", "requester")


class S3Storage:
    """A bucket (and key prefix) of slides. The boto3 client is created on first use, so
    nothing network-related exists before gunicorn forks."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str = "us-east-1", max_connections: int = 32,
                 connect_timeout: float = 5.0, read_timeout: float = 30.0,
                 max_attempts: int = 3, profile_name: str | None = None,
                 anonymous: bool = False, requester_pays: bool = False,
                 deadline: ReadDeadline | None = None, data_plane: str | None = None
                 ) -> None:
        data_plane = data_plane or default_data_plane()
        if data_plane not in DATA_PLANES:
            raise ValueError(f"data_plane must be one of {sorted(DATA_PLANES)}, "
                             f"got {data_plane!r}")
        self.data_plane = data_plane
        self.bucket = bucket
        self.deadline = deadline or ReadDeadline()
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.stats = IoStats()
        self._client_args: dict[str, Any] = {
            "endpoint_url": endpoint_url or None,
            "region_name": region,
            "config": botocore.config.Config(
                max_pool_connections=max_connections, connect_timeout=connect_timeout,
                read_timeout=read_timeout, tcp_keepalive=True,
                retries={"max_attempts": max_attempts, "mode": "standard"},
                parameter_validation=False,  # our own calls, always well-formed
                **({"signature_version": botocore.UNSIGNED} if anonymous else {}),
            ),
        }
        self._profile_name = profile_name
        self._requester_pays = requester_pays
        self._anonymous = anonymous
        self._pool_args: dict[str, Any] = {
            "max_connections": max_connections, "max_attempts": max_attempts,
            "connect_timeout": connect_timeout, "read_timeout": read_timeout}
        self._client: Any = None
        self._session: Any = None
        self._lean: SignedGet | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                session = boto3.session.Session(botocore_session=_lean_session(),
                                                profile_name=self._profile_name)
                client = session.client("s3", **self._client_args)
                self._session = session
                if self._requester_pays:
                    client.meta.events.register("before-parameter-build.s3.*", _request_payer)
                self._client = client
            return self._client

    @property
    def getter(self) -> Any:
        """What ranged reads go through: the lean data plane (made on first use, from the
        boto3 client's endpoint, region and session credentials) or the boto3 client."""
        client = self.client
        if self.data_plane == "boto3":
            return client
        with self._lock:
            if self._lean is None:
                self._lean = DATA_PLANES[self.data_plane](self, client)
            return self._lean

    def make_lean(self, client: Any, kind: type[SignedGet] = LeanGet) -> SignedGet:
        """The lean data plane of ``kind`` (``LeanGet``: urllib3; ``CurlGet``: libcurl)."""
        session = self._session
        credentials = session.get_credentials() if not self._anonymous else None

        def frozen() -> Any:
            return credentials.get_frozen_credentials() if credentials is not None else None
        base = object_base_url(client.meta.endpoint_url, self.bucket,
                               self._client_args["endpoint_url"] is not None)
        return kind(base, client.meta.region_name, frozen,
                    requester_pays=self._requester_pays, **self._pool_args)

    def open(self, slide_id: str) -> S3Reader | SeriesReader:
        """The object's reader, or for a prefix holding a series (``io.series``; ids without
        a slide extension are listed first) a ``SeriesReader`` made from one LIST."""
        validate_slide_id(slide_id)
        if not is_slide_name(slide_id):
            series = self._series(slide_id)
            if series is not None:
                return series
        return S3Reader(self.client, self.bucket, self.prefix + slide_id, slide_id, self.stats,
                        deadline=self.deadline, lean=self._lean_or_none())

    def _series(self, slide_id: str) -> SeriesReader | None:
        """One ListObjectsV2 of the prefix: its member objects, their sizes and ETags."""
        series_id, selection = split_selection(slide_id)
        key = self.prefix + series_id + "/"
        found = list_members(lambda **kw: _call(lambda: self.client.list_objects_v2(**kw),
                                                "ListObjectsV2"),
                             self.bucket, key, self.stats)
        if not found:
            return None
        sizes = {name: (size, etag) for name, size, etag in found}
        lean = self._lean_or_none()
        return series_of(list(sizes), lambda name: S3Reader(
            self.client, self.bucket, key + name, f"{series_id}/{name}", self.stats,
            size=sizes[name][0], etag=sizes[name][1], deadline=self.deadline, lean=lean),
            f"s3://{self.bucket}/{key.rstrip('/')}", selection)

    def _lean_or_none(self) -> SignedGet | None:
        getter = self.getter
        return getter if isinstance(getter, SignedGet) else None

    def open_probed(self, slide_id: str, head: int, tail: int
                    ) -> tuple[S3Reader | SeriesReader, list[tuple[int, bytes]]]:
        """Open without ``HeadObject``: the first ``head`` bytes and the last ``tail`` bytes
        (a suffix range) are fetched concurrently, and their responses give the size and ETag.
        One round trip instead of two for a slide never seen before. Returns the reader and
        the ``(offset, bytes)`` it read. A series: one LIST, then every member's head
        (``io.series.head_reads``), concurrently."""
        validate_slide_id(slide_id)
        if not is_slide_name(slide_id):
            series = self._series(slide_id)
            if series is not None:
                return series, head_reads(series)
        key = self.prefix + slide_id
        specs = [f"0-{head - 1}", f"-{tail}"]
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(copy_context().run, partial(
                _get_range, self.getter, self.bucket, key, slide_id, self.stats, spec, None,
                deadline=self.deadline)) for spec in specs]
            try:
                parts = [f.result() for f in futures]
            except StorageError as exc:
                if "InvalidRange" not in str(exc):
                    raise
                return self.open(slide_id), []  # empty object: let the usual path judge it
        (first, r1), (last, r2) = parts
        size = _total_size(r1, first)
        etags = {str(r.get("ETag", "")).strip('"') for r in (r1, r2)}
        if len(etags) != 1 or _total_size(r2, last) != size:
            return self.open(slide_id), []  # replaced between the two reads
        reader = S3Reader(self.client, self.bucket, key, slide_id, self.stats, size=size,
                          etag=etags.pop(), deadline=self.deadline, lean=self._lean_or_none())
        return reader, [(0, first), (size - len(last), last)]

    def list_slides(self, *, prefix: str = "", search: str = "", cursor: str | None = None,
                    limit: int = 100) -> SlidePage:
        needle = search.lower()
        ids: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix,
                                  "MaxKeys": 1000}
        if cursor:
            kwargs["StartAfter"] = self.prefix + after_series(cursor)
        last_key: str | None = None
        for _ in range(_MAX_LIST_PAGES):
            page = _call(lambda: self.client.list_objects_v2(**kwargs), "ListObjectsV2")
            record_storage_request(self.stats, 0)
            for obj in page.get("Contents", []):
                last_key = obj["Key"][len(self.prefix):]
                found = slide_of_key(last_key)
                if (found is not None and needle in found.lower()
                        and (not ids or ids[-1] != found)
                        and (cursor is None or found != cursor)):
                    ids.append(found)
            if len(ids) > limit:
                return page_of(ids, limit)
            if not page.get("IsTruncated"):
                return page_of(ids, limit)
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
        # Scanned enough keys for one request: hand back a cursor to continue from.
        return SlidePage(tuple(ids), last_key)

    def check(self) -> str:
        _call(lambda: self.client.head_bucket(Bucket=self.bucket), f"bucket {self.bucket}")
        return f"s3://{self.bucket}/{self.prefix}"


def _make_curl(storage: S3Storage, client: Any) -> SignedGet:
    from .s3_curl import CurlGet  # pycurl: an optional dependency

    return storage.make_lean(client, CurlGet)


def default_data_plane() -> str:
    """``"curl"`` where pycurl imports (installed, and its libcurl loads), else ``"lean"``."""
    try:
        import pycurl  # noqa: F401
    except ImportError:
        return "lean"
    return "curl"


#: How ranged reads reach S3: one entry per data plane (``S3Storage(data_plane=...)``).
DATA_PLANES: dict[str, Callable[[S3Storage, Any], Any]] = {
    "curl": _make_curl,
    "lean": S3Storage.make_lean,
    "boto3": lambda storage, client: client,
}
