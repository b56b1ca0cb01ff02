"""Slides behind plain HTTP(S) (a CDN, a public bucket's website endpoint, nginx): ranged GETs
over one pooled urllib3 client per storage, no listing (ids are paths under the URL prefix).

Every read is a ``Range: bytes=a-b`` GET pinned to the version seen when the slide was opened:
``If-Match`` with a strong ``ETag``, else ``If-Unmodified-Since`` with ``Last-Modified``; the
answer's ``Content-Range`` total and validators are checked too, for servers that ignore
preconditions. A server that sends neither validator is refused (versions could not be told
apart). Errors, as in ``io/s3.py``: 404/410 -> ``SlideNotFound``; 412 (or a changed size or
ETag) -> ``ObjectChanged``; refused, timed out or reset connections -> ``StorageConnectionError``;
anything else -> ``StorageError``. 429/5xx and connection failures are retried with backoff
(``max_attempts`` in all, ``Retry-After`` ignored so waits stay bounded); short or broken
bodies are retried here. A server that ignores ``Range`` (200 with a body larger than asked)
is refused without reading its body: the connection is closed, not drained.

Every read has a total deadline (``transfer.ReadDeadline``: a base plus its size at a minimum
rate), its body read in chunks against it: a trickling origin gets ``StorageTimeout`` (504)
instead of holding the thread. Redirects are followed here, one hop at a time, only where
``redirects.RedirectPolicy`` allows (by default: within the configured origin and prefix).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from urllib.parse import quote, urlsplit

import urllib3
import urllib3.exceptions as uex

from ..errors import (
    ObjectChanged,
    SlideNotFound,
    StorageError,
    StorageTimeout,
)
from .http_parts import Version, discard, refuse, translate, version_of
from .range_reader import IoStats, check_range, in_flight, record_storage_request
from .redirects import MAX_REDIRECTS, RedirectPolicy, origin_of
from .slots import claim
from .storage import SlidePage, validate_slide_id
from .transfer import Clock, ReadDeadline, read_body

logger = logging.getLogger(__name__)

_RETRY_STATUS = (429, 500, 502, 503, 504)
_BODY_ATTEMPTS = 3
_REDIRECTS = (301, 302, 303, 307, 308)


class _Unsatisfiable(StorageError):
    """416 to a range request: the object is empty (a probe falls back to ``open``)."""


class HttpReader:
    """``RangeReader`` over one URL, every read pinned to the version it was opened with."""

    def __init__(self, storage: HttpStorage, slide_id: str, url: str, version: Version) -> None:
        self._storage, self._slide_id, self._url, self._version = storage, slide_id, url, version
        self._identity = f"{url}#{version.tag}-{version.size:x}"

    @property
    def size(self) -> int:
        return self._version.size

    @property
    def identity(self) -> str:
        return self._identity

    def read(self, offset: int, length: int) -> bytes:
        check_range(offset, length, self._version.size)
        if length == 0:
            return b""
        _, data, _ = self._storage.get_range(self._url, self._slide_id,
                                             f"{offset}-{offset + length - 1}", self._version)
        return data


class HttpStorage:
    """Slides under ``base_url`` (``http(s)://host[:port]``) and a path ``prefix``. The
    urllib3 pool is created on first use in each process (nothing exists before a fork).
    Thread-safe. ``headers`` are sent with every request (e.g. an API key a CDN wants), never
    to another origin. ``deadline``: the total time of each read; ``redirects``: where
    redirects may go (``redirects.MODES``: ``origin``, ``none`` or ``public``)."""

    def __init__(self, base_url: str, prefix: str = "", *, max_connections: int = 32,
                 connect_timeout: float = 5.0, read_timeout: float = 30.0,
                 max_attempts: int = 3, headers: Mapping[str, str] | None = None,
                 deadline: ReadDeadline | None = None, redirects: str = "origin") -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
            raise ValueError(f"HttpStorage needs http(s)://host[:port], got {base_url[:100]!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.base_url = f"{parts.scheme}://{parts.netloc}"
        self.prefix = prefix.strip("/")
        self.stats = IoStats()
        self._max_connections = max_connections
        self._timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self._headers = {"User-Agent": "wsi_streamer", **dict(headers or {})}
        self._private = {name.lower() for name in headers or {}}  # never to another origin
        self.deadline = deadline or ReadDeadline()
        self.redirects = RedirectPolicy(redirects, self.base_url, self.prefix)
        # Redirects are followed by _send (one hop at a time, each checked), not by urllib3.
        self._retries = urllib3.Retry(
            total=max_attempts - 1, redirect=0, raise_on_redirect=False,
            status_forcelist=_RETRY_STATUS,
            allowed_methods=frozenset({"GET", "HEAD"}), backoff_factor=0.1, backoff_max=2.0,
            raise_on_status=False, respect_retry_after_header=False)
        self._pool: urllib3.PoolManager | None = None
        self._pid = -1
        self._lock = threading.Lock()

    @property
    def pool(self) -> urllib3.PoolManager:
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = urllib3.PoolManager(
                    num_pools=4, maxsize=self._max_connections, timeout=self._timeout,
                    retries=self._retries, headers=self._headers)
                self._pid = os.getpid()
            return self._pool

    def describe(self) -> str:
        return f"{self.base_url}/{quote(self.prefix)}"

    def url_of(self, slide_id: str) -> str:
        """The object URL of ``slide_id``: every path segment percent-encoded on its own."""
        validate_slide_id(slide_id)
        path = f"{self.prefix}/{slide_id}" if self.prefix else slide_id
        return f"{self.base_url}/" + "/".join(quote(seg, safe="") for seg in path.split("/"))

    # --- the Storage protocol --------------------------------------------------------------

    def open(self, slide_id: str) -> HttpReader:
        """One request: ``HEAD`` (a 1-byte GET where HEAD is not allowed)."""
        url = self.url_of(slide_id)
        return HttpReader(self, slide_id, url, self._stat(url, slide_id))

    def open_probed(self, slide_id: str, head: int, tail: int
                    ) -> tuple[HttpReader, list[tuple[int, bytes]]]:
        """Open without ``HEAD``: the first ``head`` bytes and a suffix range of ``tail``
        bytes are fetched concurrently (one round trip); size and validators come from their
        answers. Returns the reader and the ``(offset, bytes)`` read."""
        url = self.url_of(slide_id)
        specs = [f"0-{head - 1}", f"-{tail}"]
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(copy_context().run, self.get_range, url, slide_id, spec,
                                   None) for spec in specs]
            try:
                (_, first, v1), (start, last, v2) = [f.result() for f in futures]
            except _Unsatisfiable:
                return self.open(slide_id), []  # empty object: let the usual path judge it
        if not v1.matches(v2):
            return self.open(slide_id), []  # replaced between the two reads
        return HttpReader(self, slide_id, url, v1), [(0, first), (start, last)]

    def list_slides(self, *, prefix: str = "", search: str = "", cursor: str | None = None,
                    limit: int = 100) -> SlidePage:
        raise StorageError(f"{self.describe()}: plain HTTP storage cannot list slides; "
                           "open them by id (their path under the URL prefix)")

    def check(self) -> str:
        """A ``HEAD`` of the prefix URL: any answer below 500 (a 403 or 404 for a folder is
        usual) proves the host resolves, connects and speaks HTTP; no listing is possible."""
        what = f"HEAD {self.describe()}/"
        root = self.base_url + "/" + (
            "/".join(quote(seg, safe="") for seg in self.prefix.split("/")) + "/"
            if self.prefix else "")
        response = self._send("HEAD", root, {}, what, None, accept=range(100, 500))
        record_storage_request(self.stats, 0)
        discard(response)
        return f"{self.describe()} (HTTP range reads, no listing)"

    # --- requests --------------------------------------------------------------------------

    def get_range(self, url: str, slide_id: str, spec: str, version: Version | None
                  ) -> tuple[int, bytes, Version]:
        """One ``Range: bytes=<spec>`` GET (``a-b`` or suffix ``-n``), pinned to ``version``
        when given; returns ``(offset, bytes, version seen)``. A 200 is accepted only when its
        whole body is no larger than the range asked for (a small object), else refused
        unread. Short or broken bodies are retried."""
        what = f"GET {slide_id} [{spec}]"
        first, _, last = spec.partition("-")
        want = int(last) if not first else int(last) - int(first) + 1
        headers = {"Range": f"bytes={spec}", "Accept-Encoding": "identity",
                   **(version.pin() if version is not None else {})}
        clock = self.deadline.start(want, what)
        for attempt in range(1, _BODY_ATTEMPTS + 1):
            logger.debug("GET %s bytes=%s", url, spec)
            response = self._send("GET", url, headers, what, slide_id, accept=(200, 206, 416),
                                  clock=clock)
            if response.status == 416:
                record_storage_request(self.stats, 0)
                discard(response)
                raise _Unsatisfiable(f"{what}: range not satisfiable (empty object?)")
            try:
                start, count, total = self._window(response, spec, want, what)
            except StorageError:
                record_storage_request(self.stats, 0)  # a request made, no body taken
                raise
            record_storage_request(self.stats, count)
            try:
                data = read_body(response, count + 1, clock)  # bounded in size and time
            except StorageTimeout:
                refuse(response)  # mid-body: never reuse that socket
                raise
            except (uex.HTTPError, OSError) as exc:
                response.close()
                response.release_conn()
                if attempt == _BODY_ATTEMPTS or clock.remaining() <= 0:
                    raise translate(exc, what) from exc
                data = b""
            else:
                if len(data) > count:  # more than its Content-Range: never reuse that socket
                    refuse(response)
                    raise StorageError(f"{what}: {self.base_url} sent more bytes than the "
                                       f"range it announced ({count})")
                response.release_conn()
            if len(data) == count:
                seen = version_of(response, total, what)
                if version is not None and not version.matches(seen):
                    raise ObjectChanged(slide_id)
                if response.status == 200:  # a small object sent whole: cut the range out
                    start = max(0, total - want) if not first else int(first)
                    data = data[start:start + want]
                return start, data, seen
            logger.warning("%s: body of %d bytes, retrying (%d/%d)", what, len(data),
                           attempt, _BODY_ATTEMPTS)
            time.sleep(0.05 * attempt)
        raise StorageError(f"{what}: truncated response")

    def _window(self, response: urllib3.BaseHTTPResponse, spec: str, want: int,
                what: str) -> tuple[int, int, int]:
        """``(first byte, body length, object size)`` of a 200/206 answer, refusing (unread)
        a 200 larger than asked, an encoded body or a range other than the one asked for."""
        encoding = response.headers.get("Content-Encoding", "identity").lower()
        if encoding not in ("", "identity"):
            refuse(response)
            raise StorageError(f"{what}: {self.base_url} sent a {encoding}-encoded body to "
                               "a Range request")
        declared = response.headers.get("Content-Length")
        if response.status == 200:
            if declared is None or not declared.isdigit() or int(declared) > want:
                refuse(response)
                raise StorageError(
                    f"{what}: {self.base_url} does not honour Range requests (it answered "
                    f"200 with the whole object, {declared or 'unknown'} bytes); serve slides "
                    "from a server with byte-range support")
            return 0, int(declared), int(declared)
        content_range = response.headers.get("Content-Range", "")
        unit, _, rest = content_range.partition(" ")
        window, _, size = rest.partition("/")
        lo, _, hi = window.partition("-")
        if unit != "bytes" or not (lo.isdigit() and hi.isdigit() and size.isdigit()):
            refuse(response)
            raise StorageError(f"{what}: {self.base_url} sent an unusable Content-Range "
                               f"{content_range[:64]!r} (multipart or missing)")
        start, end, total = int(lo), int(hi), int(size)
        first = spec.partition("-")[0]
        expected_start = int(first) if first else max(0, total - want)
        if start != expected_start or end < start or end - start + 1 > want or end >= total:
            refuse(response)
            raise StorageError(f"{what}: {self.base_url} answered the range "
                               f"{content_range[:64]!r}")
        return start, end - start + 1, total

    def _stat(self, url: str, slide_id: str) -> Version:
        what = f"HEAD {slide_id}"
        response = self._send("HEAD", url, {"Accept-Encoding": "identity"}, what, slide_id,
                              accept=(200, 405, 501))
        record_storage_request(self.stats, 0)
        discard(response)
        if response.status != 200:  # HEAD not allowed: a 1-byte GET tells the same
            return self.get_range(url, slide_id, "0-0", None)[2]
        declared = response.headers.get("Content-Length", "")
        if not declared.isdigit():
            raise StorageError(f"{what}: {self.base_url} sent no Content-Length")
        return version_of(response, int(declared), what)

    def _send(self, method: str, url: str, headers: Mapping[str, str], what: str,
              slide_id: str | None, *, accept: Sequence[int], clock: Clock | None = None
              ) -> urllib3.BaseHTTPResponse:
        """The request, with the pool's retries and the redirects ``self.redirects`` allows;
        the response unread (``preload_content`` off) when its status is in ``accept``, else
        released and translated. ``clock``: the read's deadline, checked once the headers
        are in (a first request gets the whole budget)."""
        claim()  # a storage slot of this request (server: one thread stays free)
        clock = clock or self.deadline.start(0, what)
        sent = {**self._headers, **headers}  # per-request headers replace the pool's
        for _ in range(MAX_REDIRECTS + 1):
            try:
                with in_flight():
                    response = self.pool.request(method, url, headers=sent,
                                                 preload_content=False, redirect=False)
            except uex.HTTPError as exc:
                raise translate(exc, what) from exc
            if clock.remaining() <= 0:
                refuse(response)
                raise StorageTimeout(clock.what, clock.seconds)
            if response.status not in _REDIRECTS:
                break
            discard(response)
            target = self.redirects.follow(url, response.headers.get("Location"), what)
            if origin_of(target) != origin_of(url):  # the caller's headers stay home
                sent = {k: v for k, v in sent.items() if k.lower() not in self._private}
            url = target
        else:
            raise StorageError(f"{what}: more than {MAX_REDIRECTS} redirects")
        if response.status in accept:
            return response
        discard(response)
        if response.status in (404, 410) and slide_id is not None:
            raise SlideNotFound(slide_id)
        if response.status == 412 and slide_id is not None:
            raise ObjectChanged(slide_id)  # a pinned read of a replaced object
        raise StorageError(f"{what}: {self.base_url} answered {response.status}")
