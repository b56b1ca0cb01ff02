"""The libcurl data plane of S3 (issue 21): the ranged ``GetObject`` that ``s3_lean`` signs and
retries, sent with pycurl (libcurl's binding) instead of urllib3.

What differs from ``s3_lean.LeanGet`` is the transport only: the request (path, SigV4 headers,
``If-Match``, requester pays, anonymous) comes from ``SignedGet.request`` and the answer is
read by the same loop (``s3_get.get_range_lean``: short bodies retried, a longer one refused, the
deadline, stats, slots, errors translated by ``s3_errors``). libcurl does the HTTP exchange in
C: one ``perform`` per GET writes the body into a ``BytesIO`` and the header block into
another (parsed once, a few fields kept), with no Python callback per chunk or header. CPU per
ranged GET of 96 KB (``python -m bench.s3client``): see ``docs/training.md``.

Connections: ``pycurl.Curl`` handles of this process (one connection each), shared by the
threads as urllib3's pool is: a thread takes an idle one or makes one, at most
``max_connections`` are kept idle (the short-lived threads of ``open_probed`` reuse them).
They trust what Python's ``ssl`` (and so the urllib3 plane) trusts, not the CA bundle libcurl
was built with. They are never used in another process: after a fork (a DataLoader worker)
the child makes its own and leaves the parent's untouched (closing one could write to the
parent's TLS stream).
Every attempt gets what is left of the read's deadline as ``TIMEOUT_MS`` (``NOSIGNAL``: no
alarm), at most ``connect_timeout`` to connect and at least 1 B/s over ``read_timeout``; a
body is capped at ``MAXFILESIZE`` (the range, or an error answer's ``ERROR_BODY``). Any failed
or refused exchange closes the handle, so its connection is never reused. 429/5xx answers and
failed connections are retried as ``LeanGet``'s urllib3 ``Retry`` does (``max_attempts`` in
all, the same backoff); what is left raises ``ConnectionError`` (unreachable) or the answer's
``ClientError``.
"""

from __future__ import annotations

import io
import math
import os
import ssl
import threading
import time
from collections.abc import Callable

import pycurl
from urllib3.exceptions import IncompleteRead

from ..errors import StorageTimeout
from .s3_get import Answer, TooLong, range_size
from .s3_lean import (
    BACKOFF,
    BACKOFF_MAX,
    ERROR_BODY,
    RETRY_STATUS,
    FrozenCredentials,
    SignedGet,
    error_of,
)
from .transfer import Clock

_KEPT = (b"content-length", b"content-range", b"etag", b"x-amz-bucket-region")


class CurlGet(SignedGet):
    """Ranged GETs of one bucket over libcurl handles of this process, each used by one thread
    at a time: taken from the idle ones (or made), given back after a clean answer, closed
    after any other. Thread-safe."""

    def __init__(self, base_url: str, region: str,
                 credentials: Callable[[], FrozenCredentials | None], *,
                 max_connections: int, connect_timeout: float, read_timeout: float,
                 max_attempts: int, requester_pays: bool) -> None:
        super().__init__(base_url, region, credentials, requester_pays=requester_pays)
        self._origin = self.base_url[:len(self.base_url) - len(self._base_path)]
        self._max_idle = max_connections
        self._connect_s = connect_timeout
        self._idle_s = max(1, math.ceil(read_timeout))
        self._attempts = max(1, max_attempts)
        self._idle: list[pycurl.Curl] = []  # list.pop/append: atomic, no lock per GET
        self._pid = -1
        self._lock = threading.Lock()
        self._inherited: list[pycurl.Curl] = []  # made before a fork: never used nor closed

    def take(self) -> pycurl.Curl:
        """An idle handle of this process, or a new one."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():  # forked: the parent's sockets stay the parent's
                    self._inherited.extend(self._idle)
                    self._idle, self._pid = [], os.getpid()
        try:
            return self._idle.pop()
        except IndexError:
            return self._new()

    def give(self, handle: pycurl.Curl) -> None:
        """Keep ``handle`` (and its connection) for the next GET, up to ``max_connections``."""
        if len(self._idle) < self._max_idle:
            self._idle.append(handle)
        else:
            handle.close()

    def _new(self) -> pycurl.Curl:
        handle = pycurl.Curl()
        handle.setopt(pycurl.NOSIGNAL, 1)
        handle.setopt(pycurl.PROXY, "")  # as urllib3's pool: straight to the endpoint
        handle.setopt(pycurl.PATH_AS_IS, 1)  # the path as signed
        handle.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        handle.setopt(pycurl.TCP_KEEPALIVE, 1)
        handle.setopt(pycurl.BUFFERSIZE, 256 * 1024)  # fewer writes per body (~0.03 ms/GET)
        handle.setopt(pycurl.MAXCONNECTS, 1)
        handle.setopt(pycurl.LOW_SPEED_LIMIT, 1)
        handle.setopt(pycurl.LOW_SPEED_TIME, self._idle_s)
        if self._origin.startswith("https:"):
            trust = ssl.get_default_verify_paths()  # urllib3's trust: SSL_CERT_FILE/_DIR too
            if trust.cafile:
                handle.setopt(pycurl.CAINFO, trust.cafile)
            if trust.capath:
                handle.setopt(pycurl.CAPATH, trust.capath)
        return handle

    def get(self, key: str, spec: str, if_match: str | None, clock: Clock) -> Answer:
        path, headers = self.request(key, spec, if_match)
        fields = [f"{k}: {v}" for k, v in headers.items()]
        fields.append("Accept:")  # curl's default header, of no use here
        cap = max(range_size(spec), ERROR_BODY)
        handle = self.take()
        for attempt in range(1, self._attempts + 1):
            try:
                answer = self._perform(handle, self._origin + path, fields, cap, clock)
            except BaseException:
                handle.close()
                raise
            status = answer.status
            if status in (200, 206):
                return answer
            if answer.error is not None:  # no answer, or one cut short: that connection is done
                handle.close()
                handle = self.take()
            last = attempt == self._attempts
            if status and (status not in RETRY_STATUS or last):
                self.give(handle)
                raise error_of(status, answer.headers.items(), answer.data, "GetObject")
            if not status and last:
                self.give(handle)
                raise ConnectionError(f"libcurl: {answer.error}")
            if attempt > 1:
                time.sleep(min(BACKOFF_MAX, BACKOFF * 2 ** (attempt - 1),
                               max(0.0, clock.remaining())))
        raise AssertionError("unreachable")

    def _perform(self, handle: pycurl.Curl, url: str, fields: list[str], cap: int,
                 clock: Clock) -> CurlAnswer:
        """One exchange; ``StorageTimeout`` once the deadline has passed."""
        left = clock.remaining()
        if left <= 0:
            raise StorageTimeout(clock.what, clock.seconds)
        body, head = io.BytesIO(), io.BytesIO()
        handle.setopt(pycurl.URL, url)
        handle.setopt(pycurl.HTTPHEADER, fields)
        handle.setopt(pycurl.TIMEOUT_MS, max(1, math.ceil(left * 1000)))
        handle.setopt(pycurl.CONNECTTIMEOUT_MS,
                      max(1, math.ceil(min(left, self._connect_s) * 1000)))
        handle.setopt(pycurl.MAXFILESIZE_LARGE, cap)
        handle.setopt(pycurl.WRITEDATA, body)
        handle.setopt(pycurl.WRITEHEADER, head)
        error: str | None = None
        try:
            handle.perform()
        except pycurl.error as exc:
            code = exc.args[0]
            if code == pycurl.E_OPERATION_TIMEDOUT and clock.remaining() <= 0:
                raise StorageTimeout(clock.what, clock.seconds) from exc
            error = ("too long" if code == pycurl.E_FILESIZE_EXCEEDED
                     else f"error {code}: {exc.args[1] if len(exc.args) > 1 else ''}")
        status = int(handle.getinfo(pycurl.RESPONSE_CODE))
        return CurlAnswer(self, handle, status, _headers(head.getvalue()), body.getvalue(),
                          error)


def _headers(block: bytes) -> dict[str, str]:
    """The fields kept (``_KEPT``, lower-case names) of the last header block."""
    out: dict[str, str] = {}
    for line in block.rstrip(b"\r\n").rsplit(b"\r\n\r\n", 1)[-1].split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep and name.lower() in _KEPT:
            out[name.lower().decode("latin-1")] = value.strip().decode("latin-1")
    return out


class CurlAnswer:
    """An ``Answer`` whose body libcurl has already read (or failed to read: ``error``), on a
    handle it gives back (``release``) or closes (``refuse``)."""

    __slots__ = ("data", "error", "headers", "status", "_handle", "_owner")

    def __init__(self, owner: CurlGet, handle: pycurl.Curl, status: int,
                 headers: dict[str, str], data: bytes, error: str | None) -> None:
        self._owner, self._handle = owner, handle
        self.status, self.headers, self.data, self.error = status, headers, data, error

    def body(self, expected: int, clock: Clock) -> bytes:
        if self.error == "too long" or len(self.data) > expected:
            raise TooLong
        if self.error is not None and self.error.startswith(f"error {pycurl.E_PARTIAL_FILE}:"):
            raise IncompleteRead(len(self.data), expected)  # cut short: as urllib3 says it
        if self.error is not None:
            raise ConnectionError(f"libcurl: {self.error}")  # a broken body: retried
        return self.data

    def release(self) -> None:
        self._owner.give(self._handle)

    def refuse(self) -> None:
        self._handle.close()
