"""Storage reads with a total deadline, whatever the origin does (HTTP and S3 alike).

A socket timeout bounds one silent wait, not a transfer: an origin that sends one byte every
few seconds never trips it. Each read here gets ``ReadDeadline.seconds(n)`` in all (a base plus
its size at a minimum rate, ``limits.STORAGE_READ_BASE_S`` / ``limits.STORAGE_MIN_RATE``),
starting before its request is sent; its body is read in chunks of at most one ``recv`` each
(urllib3's ``read1``), with the socket's timeout lowered to what is left before each, so the
read stops at the deadline (within one scheduling tick) with ``StorageTimeout``. The caller
closes the connection then (it is mid-body: never reused).

Left to the per-socket timeouts: the response's headers (a server trickling its status line
and headers is bounded per ``recv`` only); the deadline is checked once they have arrived.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import urllib3
import urllib3.exceptions as uex

from ..errors import StorageTimeout
from ..limits import STORAGE_MIN_RATE, STORAGE_READ_BASE_S

CHUNK = 256 * 1024  # the most one recv is asked for


@dataclass(frozen=True, slots=True)
class ReadDeadline:
    """The time allowed to a storage read of ``nbytes``: ``base_s + nbytes / min_rate``."""

    base_s: float = STORAGE_READ_BASE_S
    min_rate: int = STORAGE_MIN_RATE  # bytes per second

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.min_rate <= 0:
            raise ValueError(f"a read deadline needs base_s > 0 and min_rate > 0, got {self}")

    def seconds(self, nbytes: int) -> float:
        return self.base_s + max(0, nbytes) / self.min_rate

    def start(self, nbytes: int, what: str) -> Clock:
        """A clock for one read of ``nbytes`` (all its attempts), started now."""
        seconds = self.seconds(nbytes)
        return Clock(what, seconds, time.monotonic() + seconds)


@dataclass(frozen=True, slots=True)
class Clock:
    """One read's deadline (a ``time.monotonic()`` value) and the budget it came from."""

    what: str
    seconds: float
    deadline: float

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check(self) -> None:
        """``StorageTimeout`` once past the deadline."""
        if self.remaining() <= 0:
            raise StorageTimeout(self.what, self.seconds)


def read_body(response: urllib3.BaseHTTPResponse, limit: int, clock: Clock) -> bytes:
    """At most ``limit`` bytes of ``response``'s body (fewer at its end), undecoded, before
    ``clock``'s deadline; ``StorageTimeout`` past it. urllib3's own errors (a reset, a body
    shorter than its ``Content-Length``) propagate."""
    sock = _socket_of(response)
    idle = sock.gettimeout() if sock is not None else None
    chunks: list[bytes] = []
    got = 0
    try:
        while got < limit:
            left = clock.remaining()
            if left <= 0:
                raise StorageTimeout(clock.what, clock.seconds)
            if sock is not None:
                sock.settimeout(left if idle is None else min(idle, left))
            try:
                chunk = response.read1(min(CHUNK, limit - got), decode_content=False)
            except (uex.ReadTimeoutError, TimeoutError) as exc:
                if clock.remaining() <= 0:
                    raise StorageTimeout(clock.what, clock.seconds) from exc
                raise
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
            if getattr(response, "length_remaining", None) == 0:
                break  # its Content-Length is in: no call that would only return b""
    finally:
        if sock is not None:
            try:
                sock.settimeout(idle)
            except OSError:
                pass  # already closed
    return b"".join(chunks)


def _socket_of(response: urllib3.BaseHTTPResponse) -> socket.socket | None:
    """The socket under ``response`` while its connection is attached (urllib3 2)."""
    connection = getattr(response, "connection", None)
    sock = getattr(connection, "sock", None)
    return sock if isinstance(sock, socket.socket) else None
