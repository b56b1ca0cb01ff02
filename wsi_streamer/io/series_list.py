"""Series in a key listing (object storage): which keys make a prefix one slide, the members
of one prefix from a ListObjectsV2, and where a listing resumes after a series id."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import LimitExceeded
from ..limits import MAX_MEMBERS
from .range_reader import IoStats, record_storage_request
from .series import is_member_name
from .storage import is_slide_name

_MAX_PAGES = 20
_AFTER_EVERY_KEY = "\U0010ffff"  # sorts after every character a key under the prefix holds


def slide_of_key(key: str) -> str | None:
    """The slide a listed key belongs to: itself for a slide file, its folder for a series
    member (``a/b/x.dcm`` -> ``a/b``), None otherwise (members directly at the root too)."""
    if is_slide_name(key):
        return key
    folder, _, name = key.rpartition("/")
    return folder if folder and is_member_name(name) else None


def after_series(cursor: str) -> str:
    """Where a listing resumes after ``cursor``: after a series id, past all its members."""
    return cursor if is_slide_name(cursor) else cursor + "/" + _AFTER_EVERY_KEY


def list_members(list_objects: Callable[..., Any], bucket: str, prefix: str,
                 stats: IoStats) -> list[tuple[str, int, str]]:
    """``(name, size, etag)`` of the series members directly under ``prefix`` (which ends
    with ``/``), listed with ``Delimiter="/"``; ``LimitExceeded`` past ``MAX_MEMBERS``."""
    found: list[tuple[str, int, str]] = []
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/",
                              "MaxKeys": 1000}
    for _ in range(_MAX_PAGES):
        page = list_objects(**kwargs)
        record_storage_request(stats, 0)
        for obj in page.get("Contents", []):
            name = str(obj["Key"])[len(prefix):]
            if is_member_name(name):
                found.append((name, int(obj["Size"]), str(obj.get("ETag", ""))))
        if len(found) > MAX_MEMBERS:
            raise LimitExceeded("MAX_MEMBERS", f"s3://{bucket}/{prefix}: more than "
                                f"{MAX_MEMBERS} objects in one series")
        if not page.get("IsTruncated"):
            break
        kwargs["ContinuationToken"] = page["NextContinuationToken"]
    return found
