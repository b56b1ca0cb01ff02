"""A trickling HTTP origin (issue 26, item 6) behind a real gunicorn (2 workers x 2 threads).

The origin answers every ranged GET with its headers at once and then one byte every 0.5 s: the
per-socket read timeout never trips. More concurrent tile requests than threads are sent; while
the origin is still trickling, ``/health`` must answer (a worker keeps one thread off storage),
and every tile request must end with the typed error (504 ``storage_timeout`` when its read
passed ``WSI_STORAGE_DEADLINE``, or 503 when its worker's storage slots were all taken), none
hanging. Counted: connections the origin was trickling on when /health answered, statuses."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import S3Bucket
from tests.integration.fault_proxy import FaultProxy
from tests.servers import gunicorn
from wsi_streamer.errors import StorageTimeout
from wsi_streamer.io.s3 import S3Storage
from wsi_streamer.io.transfer import ReadDeadline

SIZE = 1 << 20
TILES = 8  # more than 2 workers x 2 threads
DEADLINE_S = 8  # the storage deadline of the server under test
TRICKLE_S = 0.5


class _Trickle(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    active = 0
    lock = threading.Lock()
    stop = threading.Event()

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("ETag", '"t1"')
        self.send_header("Content-Length", str(SIZE))
        self.end_headers()

    def do_GET(self) -> None:
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        assert match, self.headers.get("Range")
        first, last = match.groups()
        start, end = (SIZE - int(last), SIZE - 1) if not first else (int(first), int(last))
        self.send_response(206)
        self.send_header("ETag", '"t1"')
        self.send_header("Content-Range", f"bytes {start}-{end}/{SIZE}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        cls = type(self)
        with cls.lock:
            cls.active += 1
        try:
            for _ in range(end - start + 1):
                if cls.stop.wait(TRICKLE_S):
                    break
                self.wfile.write(b"\0")
                self.wfile.flush()
        except OSError:
            pass  # the reader gave up
        finally:
            with cls.lock:
                cls.active -= 1
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def trickling_origin() -> Iterator[tuple[str, type[_Trickle]]]:
    handler = type("Trickle", (_Trickle,), {"active": 0, "lock": threading.Lock(),
                                            "stop": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        handler.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.timeout(180)
def test_health_answers_while_a_trickling_origin_holds_the_reads(
        trickling_origin: tuple[str, type[_Trickle]], tmp_path: Path) -> None:
    origin, handler = trickling_origin
    env = {"WSI_STORAGE": f"{origin}/slides", "WSI_STORAGE_DEADLINE": str(DEADLINE_S),
           "WSI_TILE_CACHE_DIR": str(tmp_path / "tiles"), "WSI_AUTH_ENABLED": "false"}
    with gunicorn(env, tmp_path / "gunicorn.log", workers=2, threads=2) as server:
        with ThreadPoolExecutor(TILES) as pool:
            futures = [pool.submit(requests.get, f"{server.url}/tiles/s{i % 2}.svs/0/0/0.jpg",
                                   timeout=DEADLINE_S * 6) for i in range(TILES)]
            _wait_for(lambda: handler.active >= 1, 30, "the origin to be trickling")
            health = requests.get(f"{server.url}/health", timeout=10)  # a hang guard
            trickling_then = handler.active
            replies = [f.result() for f in futures]
        assert health.status_code == 200 and health.json()["status"] == "healthy"
        assert trickling_then >= 1, "/health answered only once the reads had ended"
        statuses = sorted(r.status_code for r in replies)
        assert set(statuses) <= {503, 504}, (statuses, server.log()[-3000:])
        assert 504 in statuses, statuses
        for reply in replies:
            body = reply.json()
            assert body["error"] in ("storage_timeout", "overloaded"), body
            if reply.status_code == 504:
                assert "too slow" in body["message"]
            else:
                assert reply.headers["Retry-After"]
    _wait_for(lambda: handler.active == 0, 30, "the origin's connections to close")


@pytest.mark.timeout(60)
def test_s3_reads_stop_at_their_deadline(s3_bucket: S3Bucket) -> None:
    """The same for S3 (botocore's read timeout is per socket read too): a ranged GetObject
    whose body trickles ends with ``StorageTimeout`` at its deadline, mid-body."""
    data = bytes(range(256)) * 64
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="t.svs", Body=data)
    proxy = FaultProxy(s3_bucket.endpoint)
    try:
        storage = S3Storage(s3_bucket.name, endpoint_url=proxy.url, max_attempts=1,
                            deadline=ReadDeadline(base_s=2.0))
        reader = storage.open("t.svs")
        assert reader.read(0, 16) == data[:16]
        proxy.mode, proxy.delay_s = "trickle", 0.25
        with pytest.raises(StorageTimeout, match="too slow"):
            reader.read(0, 4096)
        assert 0 < proxy.trickled < 4096, proxy.trickled  # stopped mid-body
    finally:
        proxy.close()
