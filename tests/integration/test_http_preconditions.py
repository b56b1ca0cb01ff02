"""Reads over HTTP are pinned with preconditions a conforming origin (RFC 9110 §13.1) honours:
``If-Match`` compares strongly, so a weak ``ETag`` (``W/"..."``) never matches it (412 on
every read, forever); such a version is pinned with ``If-Unmodified-Since`` instead. The
origin here is a small conforming server on loopback that counts what it was sent."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from tests.servers import serving
from wsi_streamer.io.http import HttpStorage

DATA = bytes(range(256)) * 8
LAST_MODIFIED = "Wed, 02 Dec 2026 01:00:00 GMT"


class Conforming(BaseHTTPRequestHandler):
    """One object, ``DATA``, with ETag ``etag`` and ``LAST_MODIFIED``; ``Range: bytes=a-b``
    answered 206; ``If-Match`` by strong comparison and ``If-Unmodified-Since`` as RFC 9110
    says (412 when they fail)."""

    etag = ""
    seen: list[dict[str, str]] = []

    def _answer(self) -> None:
        headers = dict(self.headers)
        self.seen.append({"method": self.command, **headers})
        if_match = headers.get("If-Match")
        if if_match is not None and not self._strong_match(if_match):
            return self._send(412, {}, b"")
        since = headers.get("If-Unmodified-Since")
        if if_match is None and since is not None and (
                parsedate_to_datetime(LAST_MODIFIED) > parsedate_to_datetime(since)):
            return self._send(412, {}, b"")
        validators = {"ETag": self.etag, "Last-Modified": LAST_MODIFIED}
        rng = headers.get("Range")
        if rng is None:
            return self._send(200, validators, DATA)
        start, end = (int(v) for v in rng.removeprefix("bytes=").split("-"))
        end = min(end, len(DATA) - 1)
        return self._send(206, {**validators,
                                "Content-Range": f"bytes {start}-{end}/{len(DATA)}"},
                          DATA[start:end + 1])

    def _strong_match(self, if_match: str) -> bool:
        if if_match.strip() == "*":
            return True
        tags = [t.strip() for t in if_match.split(",")]
        return (not self.etag.startswith("W/")
                and any(not t.startswith("W/") and t == self.etag for t in tags))

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    do_GET = do_HEAD = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def conforming(etag: str) -> Iterator[tuple[str, type[Conforming]]]:
    handler = type("Origin", (Conforming,), {"etag": etag, "seen": []})
    with serving(handler) as origin:
        yield origin


@pytest.mark.parametrize(("etag", "pin"), [
    ('W/"v1"', "If-Unmodified-Since"),  # weak: never sent in If-Match
    ('"v1"', "If-Match"),  # strong: If-Match
])
def test_reads_are_pinned_with_a_precondition_the_origin_can_satisfy(etag: str,
                                                                     pin: str) -> None:
    with conforming(etag) as (base, origin):
        storage = HttpStorage(base, max_attempts=1)
        reader = storage.open("slide.svs")
        for offset in (0, 100, 2000):
            assert reader.read(offset, 48) == DATA[offset:offset + 48]
        gets = [h for h in origin.seen if h["method"] == "GET" and "Range" in h]
        assert len(gets) >= 3
        reads = gets[-3:]
        assert all(pin in h for h in reads), reads
        assert all(not h.get("If-Match", "").startswith("W/") for h in origin.seen)
        if pin == "If-Match":
            assert {h["If-Match"] for h in reads} == {etag}
        else:
            assert {h[pin] for h in reads} == {LAST_MODIFIED}
            assert all("If-Match" not in h for h in reads)
        assert storage.stats.requests == len(origin.seen)  # no 412 retried or hidden
