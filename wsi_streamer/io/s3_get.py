"""The retry loop of the lean S3 data planes (issue 21): one ranged ``GetObject`` with short or
broken bodies retried, all attempts within the read's deadline, whatever transport carries it
(``s3_lean.LeanGet``: urllib3; ``s3_curl.CurlGet``: libcurl). A transport gives an ``Answer``;
this loop reads it, counts it, and translates its errors (``s3_errors``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

import botocore.exceptions as bex
import urllib3

from ..errors import StorageError, StorageTimeout
from .range_reader import IoStats, in_flight, record_storage_request
from .s3_errors import translate
from .slots import claim
from .transfer import Clock, ReadDeadline

logger = logging.getLogger(__name__)
_BODY_ATTEMPTS = 3


class TooLong(Exception):
    """A body longer than the range asked for (the connection must not be reused)."""


class Answer(Protocol):
    """A 200 or 206 answer to a ranged GET, as the retry loop (``get_range_lean``) reads it
    whatever carried it: its headers (``.get`` by lower-case name), its body, its connection
    released for reuse or dropped."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    def body(self, expected: int, clock: Clock) -> bytes:
        """At most ``expected`` bytes, before ``clock``'s deadline (``StorageTimeout``);
        ``TooLong`` for more; a broken body raises ``OSError`` or urllib3's errors."""
        ...

    def release(self) -> None: ...

    def refuse(self) -> None:
        """Drop the connection (mid-body, or a body not wanted)."""
        ...


class RangedGet(Protocol):
    """A transport of ranged GETs (``SignedGet.get``)."""

    def get(self, key: str, spec: str, if_match: str | None, clock: Clock) -> Answer: ...


def get_range_lean(lean: RangedGet, key: str, slide_id: str, stats: IoStats, spec: str,
                   length: int | None, deadline: ReadDeadline | None,
                   if_match: str | None) -> tuple[bytes, dict[str, Any]]:
    """``s3._get_range`` over a lean data plane (urllib3 or libcurl: ``lean.get`` is all
    that differs; retried and timed as there): the bytes and the answer's fields in boto3's
    names (``ContentRange``, ``ETag``, ``ContentLength``)."""
    what = f"GET {slide_id} [{spec}]"
    clock = (deadline or ReadDeadline()).start(range_size(spec), what)
    for attempt in range(1, _BODY_ATTEMPTS + 1):
        logger.debug("GET %s bytes=%s", key, spec)
        claim()
        try:
            with in_flight():
                answer = lean.get(key, spec, if_match, clock)
        except (bex.ClientError, urllib3.exceptions.HTTPError, OSError) as exc:
            raise translate(exc, what, slide_id) from exc
        if clock.remaining() <= 0:
            answer.refuse()
            raise StorageTimeout(clock.what, clock.seconds)
        headers = answer.headers
        declared = headers.get("content-length", "")
        expected = length if length is not None else int(declared) if declared.isdigit() else -1
        record_storage_request(stats, max(0, expected))
        try:
            data = answer.body(max(0, expected), clock)
        except StorageTimeout:
            answer.refuse()  # mid-body: never reuse that socket
            raise
        except TooLong as exc:  # more than announced: never reuse that socket
            answer.refuse()
            raise StorageError(f"{what}: storage sent more bytes than the range asked "
                               "for") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            answer.refuse()
            if attempt == _BODY_ATTEMPTS or clock.remaining() <= 0:
                if "IncompleteRead" in repr(exc):  # as botocore's IncompleteReadError
                    raise StorageError(f"{what}: truncated response") from exc
                raise translate(exc, what) from exc
            data = b""
        else:
            answer.release()
        if len(data) == expected:
            return data, {"ContentRange": headers.get("content-range", ""),
                          "ETag": headers.get("etag", ""), "ContentLength": len(data)}
        logger.warning("%s: body of %d bytes, retrying (%d/%d)", what, len(data),
                       attempt, _BODY_ATTEMPTS)
        time.sleep(0.05 * attempt)
    raise StorageError(f"{what}: truncated response")


def range_size(spec: str) -> int:
    """The bytes ``Range: bytes=<spec>`` asks for (``a-b`` or a suffix ``-n``)."""
    first, _, last = spec.partition("-")
    return int(last) - int(first) + 1 if first else int(last)
