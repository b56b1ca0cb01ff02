"""Slides in S3 (or any S3-compatible store): ``HeadObject`` once, ranged ``GetObject`` reads.

botocore exceptions are translated here and nowhere else:
``NoSuchKey``/404 -> ``SlideNotFound``; unreachable endpoint -> ``StorageConnectionError``;
anything else -> ``StorageError``. Throttling and 5xx are retried with backoff by botocore's
"standard" retry mode; short or broken bodies are retried here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions as bex

from ..errors import SlideNotFound, StorageConnectionError, StorageError
from .range_reader import IoStats, check_range, record_storage_request
from .storage import SlidePage, is_slide_name, page_of, validate_slide_id

logger = logging.getLogger(__name__)

T = TypeVar("T")
_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_BODY_ATTEMPTS = 3
_MAX_LIST_PAGES = 20


def _translate(exc: Exception, what: str, slide_id: str | None = None) -> Exception:
    if isinstance(exc, bex.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _NOT_FOUND and slide_id is not None and code != "NoSuchBucket":
            return SlideNotFound(slide_id)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return StorageError(f"{what}: storage answered {code or status}")
    if isinstance(exc, (bex.ConnectionError, bex.ConnectionClosedError, bex.ReadTimeoutError)):
        return StorageConnectionError(f"{what}: storage unreachable ({type(exc).__name__})")
    if isinstance(exc, bex.BotoCoreError):
        return StorageError(f"{what}: {type(exc).__name__}")
    return exc


def _call(fn: Callable[[], T], what: str, slide_id: str | None = None) -> T:
    try:
        return fn()
    except (bex.ClientError, bex.BotoCoreError) as exc:
        raise _translate(exc, what, slide_id) from exc


class S3Reader:
    """``RangeReader`` over one object. ``HeadObject`` happens in ``__init__``; every read is
    a ranged ``GetObject`` pinned to the ETag seen then (``IfMatch``), so a replaced object
    fails loudly instead of mixing versions."""

    def __init__(self, client: Any, bucket: str, key: str, slide_id: str,
                 stats: IoStats | None = None) -> None:
        self._client, self._bucket, self._key, self._slide_id = client, bucket, key, slide_id
        self.stats = stats if stats is not None else IoStats()
        head = _call(lambda: client.head_object(Bucket=bucket, Key=key),
                     f"HEAD {slide_id}", slide_id)
        record_storage_request(self.stats, 0)
        self._size = int(head["ContentLength"])
        self._etag = str(head.get("ETag", "")).strip('"')
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
        what = f"GET {self._slide_id} [{offset}, +{length})"
        for attempt in range(1, _BODY_ATTEMPTS + 1):
            record_storage_request(self.stats, length)
            logger.debug("GET %s +%d @%d", self._identity, length, offset)
            response = _call(lambda: self._client.get_object(
                Bucket=self._bucket, Key=self._key, IfMatch=f'"{self._etag}"',
                Range=f"bytes={offset}-{offset + length - 1}"), what, self._slide_id)
            try:
                data: bytes = response["Body"].read()
            except (bex.BotoCoreError, OSError) as exc:
                if attempt == _BODY_ATTEMPTS:
                    raise _translate(exc, what) from exc
                data = b""
            if len(data) == length:
                return data
            logger.warning("%s: body of %d bytes, retrying (%d/%d)", what, len(data),
                           attempt, _BODY_ATTEMPTS)
            time.sleep(0.05 * attempt)
        raise StorageError(f"{what}: truncated response")


class S3Storage:
    """A bucket (and key prefix) of slides. The boto3 client is created on first use, so
    nothing network-related exists before gunicorn forks."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str = "us-east-1", max_connections: int = 32,
                 connect_timeout: float = 5.0, read_timeout: float = 30.0,
                 max_attempts: int = 3) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.stats = IoStats()
        self._client_args: dict[str, Any] = {
            "endpoint_url": endpoint_url or None,
            "region_name": region,
            "config": botocore.config.Config(
                max_pool_connections=max_connections, connect_timeout=connect_timeout,
                read_timeout=read_timeout, tcp_keepalive=True,
                retries={"max_attempts": max_attempts, "mode": "standard"},
            ),
        }
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = boto3.session.Session().client("s3", **self._client_args)
            return self._client

    def open(self, slide_id: str) -> S3Reader:
        validate_slide_id(slide_id)
        return S3Reader(self.client, self.bucket, self.prefix + slide_id, slide_id, self.stats)

    def list_slides(self, *, prefix: str = "", search: str = "", cursor: str | None = None,
                    limit: int = 100) -> SlidePage:
        needle = search.lower()
        ids: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix,
                                  "MaxKeys": 1000}
        if cursor:
            kwargs["StartAfter"] = self.prefix + cursor
        last_key: str | None = None
        for _ in range(_MAX_LIST_PAGES):
            page = _call(lambda: self.client.list_objects_v2(**kwargs), "ListObjectsV2")
            record_storage_request(self.stats, 0)
            for obj in page.get("Contents", []):
                last_key = obj["Key"][len(self.prefix):]
                if is_slide_name(last_key) and needle in last_key.lower():
                    ids.append(last_key)
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
