"""A loopback S3-compatible server for benchmarks: ranged GETs cost O(range), not O(object).

Serves the files of one folder as the objects of one bucket (path-style addressing):
HeadBucket, GetBucketLocation, ListObjectsV2 (and v1), HeadObject, GetObject with ``Range``
(206 + ``Content-Range``) and ``If-Match``/``If-None-Match``. Every S3 request can be delayed by
an injected latency (slept in the request's own thread, no lock held). Requests and body bytes
are counted; ``GET /__stats`` returns them as JSON and ``POST /__reset`` zeroes them, so another
process can read them. Sockets get ``TCP_NODELAY``; connections are HTTP/1.1 keep-alive.

Run: ``python -m bench.s3server --root DIR --bucket B [--port 0] [--latency-ms 20]`` (prints
one JSON line ``{"port": N}`` when ready) or ``python -m bench.s3server --selftest``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


class Stats:
    """Thread-safe counters of S3 requests (by operation) and body bytes served, plus each
    request's ``(start, end)`` so that serial round trips can be counted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._bytes = 0
        self._spans: list[tuple[float, float]] = []

    def add(self, op: str, nbytes: int, start: float | None = None) -> None:
        end = time.monotonic()
        with self._lock:
            self._counts[op] = self._counts.get(op, 0) + 1
            self._bytes += nbytes
            if len(self._spans) < 100_000:
                self._spans.append((end if start is None else start, end))

    def snapshot(self) -> dict[str, Any]:
        """``requests``, ``bytes``, ``by_op`` and ``round_trips``: the longest chain of
        requests each starting after the previous one ended (serial waits on storage)."""
        with self._lock:
            spans = sorted(self._spans, key=lambda s: s[1])
            result = {"requests": sum(self._counts.values()), "bytes": self._bytes,
                      "by_op": dict(self._counts), "pid": os.getpid()}
        chain, last_end = 0, float("-inf")
        for start, end in spans:  # interval scheduling: greedy by end time is optimal
            if start >= last_end:
                chain, last_end = chain + 1, end
        result["round_trips"] = chain
        return result

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._bytes = 0
            self._spans.clear()


class S3Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, root: str, bucket: str, host: str = "127.0.0.1", port: int = 0,
                 latency_s: float = 0.0) -> None:
        self.root = os.path.realpath(root)
        self.bucket = bucket
        self.latency_s = latency_s
        self.stats = Stats()
        super().__init__((host, port), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def path_of(self, key: str) -> str | None:
        path = os.path.realpath(os.path.join(self.root, *key.split("/")))
        if not path.startswith(self.root + os.sep) or not os.path.isfile(path):
            return None
        return path

    def keys(self) -> list[str]:
        out: list[str] = []
        for dirpath, _, files in os.walk(self.root):
            rel = os.path.relpath(dirpath, self.root)
            out += [f if rel == "." else f"{rel.replace(os.sep, '/')}/{f}" for f in files]
        return sorted(out)


def _etag(st: os.stat_result) -> str:
    return f'"{st.st_size:x}-{st.st_mtime_ns:x}"'


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Inclusive ``(first, last)`` for ``bytes=a-b``, ``bytes=a-`` or ``bytes=-n``."""
    unit, _, spec = header.partition("=")
    first_s, _, last_s = spec.strip().partition("-")
    if unit.strip() != "bytes" or "," in spec:
        return None
    if not first_s:
        n = int(last_s)
        return (max(0, size - n), size - 1) if n > 0 and size else None
    first = int(first_s)
    last = min(int(last_s), size - 1) if last_s else size - 1
    return (first, last) if first <= last else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: S3Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              head: bool = False, length: int | None = None) -> None:
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}",
                 f"Date: {formatdate(usegmt=True)}", "Server: bench-s3",
                 f"Content-Length: {len(body) if length is None else length}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(data if head else data + body)  # one send: no Nagle stall

    def _error(self, status: int, code: str, head: bool = False) -> None:
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                f"<Message>{code}</Message></Error>").encode()
        self._send(status, body, {"Content-Type": "application/xml"}, head)

    def _split(self) -> tuple[str, str, dict[str, list[str]]]:
        url = urlsplit(self.path)
        path = unquote(url.path).lstrip("/")
        bucket, _, key = path.partition("/")
        return bucket, key, parse_qs(url.query, keep_blank_values=True)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if urlsplit(self.path).path == "/__reset":
            self.server.stats.reset()
            self._send(200, b"{}", {"Content-Type": "application/json"})
        else:
            self._error(501, "NotImplemented")

    def do_HEAD(self) -> None:  # noqa: N802
        self._object_or_bucket(head=True)

    def do_GET(self) -> None:  # noqa: N802
        if urlsplit(self.path).path == "/__stats":
            body = json.dumps(self.server.stats.snapshot()).encode()
            self._send(200, body, {"Content-Type": "application/json"})
            return
        self._object_or_bucket(head=False)

    def _count(self, op: str, nbytes: int) -> None:
        self.server.stats.add(op, nbytes, self._start)

    def _object_or_bucket(self, head: bool) -> None:
        srv = self.server
        self._start = time.monotonic()
        if srv.latency_s > 0:
            time.sleep(srv.latency_s)
        bucket, key, query = self._split()
        if bucket != srv.bucket:
            self._count("error", 0)
            return self._error(404, "NoSuchBucket", head)
        if not key:
            self._count("bucket", 0)
            if head:
                return self._send(200, headers={"x-amz-bucket-region": "us-east-1"}, head=True)
            if "location" in query:
                body = f'<LocationConstraint xmlns="{_NS}"></LocationConstraint>'.encode()
                return self._send(200, body, {"Content-Type": "application/xml"})
            return self._list(query)
        path = srv.path_of(key)
        if path is None:
            self._count("error", 0)
            return self._error(404, "NoSuchKey", head)
        self._object(path, head)

    def _object(self, path: str, head: bool) -> None:
        st = os.stat(path)
        etag, size = _etag(st), st.st_size
        headers = {"ETag": etag, "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream",
                   "Last-Modified": formatdate(st.st_mtime, usegmt=True)}
        if_match = self.headers.get("If-Match")
        if if_match and if_match.strip() not in (etag, "*"):
            self._count("error", 0)
            return self._error(412, "PreconditionFailed", head)
        if self.headers.get("If-None-Match", "").strip() == etag:
            self._count("head" if head else "get", 0)
            return self._send(304, headers=headers, head=True)
        first, last, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng:
            parsed = _parse_range(rng, size)
            if parsed is None:
                self._count("error", 0)
                return self._error(416, "InvalidRange", head)
            first, last, status = parsed[0], parsed[1], 206
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        length = last - first + 1
        if head:
            self._count("head", 0)
            return self._send(status, headers=headers, head=True, length=length)
        fd = os.open(path, os.O_RDONLY)
        try:
            body = os.pread(fd, length, first)
        finally:
            os.close(fd)
        self._count("get", len(body))
        self._send(status, body, headers)

    def _list(self, query: dict[str, list[str]]) -> None:
        def arg(name: str, default: str = "") -> str:
            return query.get(name, [default])[0]

        v2 = arg("list-type") == "2"
        prefix, delim = arg("prefix"), arg("delimiter")
        max_keys = max(1, min(1000, int(arg("max-keys", "1000") or 1000)))
        after = arg("continuation-token") or arg("start-after") or arg("marker")
        contents: list[str] = []
        prefixes: list[str] = []
        truncated, last = False, ""
        for key in self.server.keys():
            if not key.startswith(prefix) or key <= after:
                continue
            rest = key[len(prefix):]
            entry = key
            if delim and delim in rest:
                entry = prefix + rest.split(delim, 1)[0] + delim
                if entry in prefixes or entry <= after:
                    continue
            if len(contents) + len(prefixes) >= max_keys:
                truncated = True
                break
            last = entry
            if entry != key:
                prefixes.append(entry)
                continue
            st = os.stat(os.path.join(self.server.root, *key.split("/")))
            modified = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(st.st_mtime))
            contents.append(f"<Contents><Key>{escape(key)}</Key><LastModified>{modified}"
                            f"</LastModified><ETag>{escape(_etag(st))}</ETag><Size>{st.st_size}"
                            "</Size><StorageClass>STANDARD</StorageClass></Contents>")
        parts = [f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="{_NS}">',
                 f"<Name>{self.server.bucket}</Name><Prefix>{escape(prefix)}</Prefix>",
                 f"<MaxKeys>{max_keys}</MaxKeys><IsTruncated>{str(truncated).lower()}"
                 "</IsTruncated>"]
        if delim:
            parts.append(f"<Delimiter>{escape(delim)}</Delimiter>")
        if v2:
            parts.append(f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount>")
            if truncated:
                parts.append(f"<NextContinuationToken>{escape(last)}</NextContinuationToken>")
        elif truncated:
            parts.append(f"<NextMarker>{escape(last)}</NextMarker>")
        parts += contents
        parts += [f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>"
                  for p in prefixes]
        parts.append("</ListBucketResult>")
        self.server.stats.add("list", 0)
        self._send(200, "".join(parts).encode(), {"Content-Type": "application/xml"})


def start_in_thread(root: str, bucket: str, latency_s: float = 0.0) -> S3Server:
    """Start a server on an ephemeral loopback port in a daemon thread; ``shutdown()`` ends it."""
    server = S3Server(root, bucket, latency_s=latency_s)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=".")
    parser.add_argument("--bucket", default="bench")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--selftest", action="store_true")
    args = parser.parse_args(argv)
    if args.selftest:
        from .s3server_selftest import selftest

        return selftest()
    server = S3Server(args.root, args.bucket, args.host, args.port, args.latency_ms / 1000)
    print(json.dumps({"port": server.port}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
