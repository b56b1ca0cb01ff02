"""The lean S3 data plane (issue 21): SigV4 as botocore signs it, and ranged reads that never go
through boto3 while keeping its semantics (If-Match, requester pays, anonymous, errors).

A loopback server (stdlib) records every request's headers and answers like S3."""

from __future__ import annotations

import datetime
import importlib.util
import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from wsi_streamer.errors import ObjectChanged, SlideNotFound, StorageError
from wsi_streamer.io.s3 import S3Storage
from wsi_streamer.io.s3_lean import SigV4, object_base_url

NOW = datetime.datetime(2026, 12, 6, 12, 34, 56, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize("token", [None, "session/token+="])
@pytest.mark.parametrize("url", ["http://127.0.0.1:9000/bucket/a%20b/c%2Bd.svs",
                                 "https://bucket.s3.eu-west-1.amazonaws.com/k.svs"])
def test_signature_is_botocores(monkeypatch: pytest.MonkeyPatch, token: str | None,
                                url: str) -> None:
    creds = ReadOnlyCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    headers = {"Range": "bytes=100-199", "If-Match": '"abc"',
               "x-amz-request-payer": "requester"}
    ours = SigV4("eu-west-1").sign("GET", url, headers, creds, now=NOW)

    monkeypatch.setattr("botocore.auth.get_current_datetime",
                        lambda remove_tzinfo=True: NOW.replace(tzinfo=None))
    request = AWSRequest("GET", url, headers=dict(headers))
    S3SigV4Auth(creds, "s3", "eu-west-1").add_auth(request)
    theirs = dict(request.headers.items())
    assert ours["X-Amz-Date"] == theirs["X-Amz-Date"]
    assert ours["Authorization"] == theirs["Authorization"]
    assert ours.get("X-Amz-Security-Token") == theirs.get("X-Amz-Security-Token")


def test_object_urls_follow_botocores_addressing() -> None:
    assert object_base_url("http://127.0.0.1:9000", "b", True) == "http://127.0.0.1:9000/b"
    assert (object_base_url("https://s3.us-west-2.amazonaws.com", "slides", False)
            == "https://slides.s3.us-west-2.amazonaws.com")
    assert (object_base_url("https://s3.amazonaws.com", "my.bucket", False)
            == "https://s3.amazonaws.com/my.bucket")


DATA = bytes(range(256)) * 64  # 16 KiB
ETAG = "0123abcd"


class FakeS3(BaseHTTPRequestHandler):
    """GET/HEAD of one object ``/b/slide.svs`` with Range and If-Match; 404 otherwise. Each
    entry of ``faults`` spoils one ranged GET (in order): ``503``, ``short`` (a complete body
    10 bytes short), ``long`` (100 bytes more than the range), ``stall`` (the head and half
    the body, then silence until the test ends), ``cut`` (half the body, then the connection
closed)."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, dict[str, str]]] = []
    ports: list[int] = []  # the client port of each GET (its connection)
    faults: list[str] = []
    stop = threading.Event()
    etag = ETAG

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        FakeS3.seen.append((self.command, {k.lower(): v for k, v in self.headers.items()}))
        if self.command == "GET":
            FakeS3.ports.append(self.client_address[1])
        if self.path != "/b/slide.svs":
            body = b"<Error><Code>NoSuchKey</Code></Error>"
            return self._answer(404, body if self.command == "GET" else b"", {})
        if self.headers.get("If-Match", f'"{FakeS3.etag}"') != f'"{FakeS3.etag}"':
            return self._answer(412, b"<Error><Code>PreconditionFailed</Code></Error>", {})
        rng = self.headers.get("Range")
        if rng is None or self.command == "HEAD":
            return self._answer(200, DATA, {"ETag": f'"{FakeS3.etag}"'})
        first, last = rng.removeprefix("bytes=").split("-")
        lo = len(DATA) - int(last) if not first else int(first)
        hi = len(DATA) - 1 if not first else min(int(last), len(DATA) - 1)
        fault = FakeS3.faults.pop(0) if FakeS3.faults else ""
        body = {"short": DATA[lo:hi - 9], "long": DATA[lo:hi + 101]}.get(fault, DATA[lo:hi + 1])
        if fault == "503":
            return self._answer(503, b"<Error><Code>SlowDown</Code></Error>", {})
        if fault in ("stall", "cut"):
            self.send_response(206)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            if fault == "stall":
                FakeS3.stop.wait(30)
            self.close_connection = True
            return None
        self._answer(206, body, {"ETag": f'"{FakeS3.etag}"',
                                 "Content-Range": f"bytes {lo}-{hi}/{len(DATA)}"})


@pytest.fixture
def fake_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name, value in {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret",
                        "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE":
                        "/dev/null", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    FakeS3.seen, FakeS3.ports, FakeS3.faults, FakeS3.etag = [], [], [], ETAG
    FakeS3.stop = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeS3)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    FakeS3.stop.set()
    server.shutdown()
    server.server_close()


def _no_boto3_reads(storage: S3Storage) -> list[str]:
    """Counts the boto3 client's GetObject calls (the lean plane must make none)."""
    calls: list[str] = []
    storage.client.meta.events.register("before-call.s3.GetObject",
                                        lambda **_: calls.append("GetObject"))
    return calls


#: The lean data planes: the same loop over urllib3 and over libcurl (``io/s3_curl.py``).
PLANES = ["lean", pytest.param("curl", marks=pytest.mark.skipif(
    importlib.util.find_spec("pycurl") is None, reason="pycurl is not installed"))]


@pytest.mark.parametrize("plane", PLANES)
def test_reads_are_signed_pinned_and_never_go_through_boto3(fake_s3: str, plane: str) -> None:
    storage = S3Storage("b", endpoint_url=fake_s3, requester_pays=True, data_plane=plane)
    boto3_gets = _no_boto3_reads(storage)
    reader, parts = storage.open_probed("slide.svs", 1024, 512)
    assert parts == [(0, DATA[:1024]), (len(DATA) - 512, DATA[-512:])]
    assert reader.size == len(DATA) and reader.etag == ETAG
    assert reader.read(5000, 3000) == DATA[5000:8000]
    assert boto3_gets == []
    gets = [h for method, h in FakeS3.seen if method == "GET"]
    assert len(gets) == 3 and storage.stats.requests == 3
    assert [h.get("if-match") for h in gets] == [None, None, f'"{ETAG}"']
    assert {h["x-amz-request-payer"] for h in gets} == {"requester"}
    for h in gets:
        assert h["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKID/")
        assert "x-amz-request-payer" in h["authorization"]


@pytest.mark.parametrize("plane", PLANES)
def test_anonymous_reads_are_unsigned(fake_s3: str, plane: str) -> None:
    storage = S3Storage("b", endpoint_url=fake_s3, anonymous=True, data_plane=plane)
    assert storage.open("slide.svs").read(0, 10) == DATA[:10]
    assert all("authorization" not in h for _, h in FakeS3.seen)


@pytest.mark.parametrize("plane", PLANES)
def test_errors_translate_as_on_the_boto3_plane(fake_s3: str, plane: str) -> None:
    storage = S3Storage("b", endpoint_url=fake_s3, max_attempts=1, data_plane=plane)
    reader = storage.open("slide.svs")
    FakeS3.etag = "replaced"
    with pytest.raises(ObjectChanged):
        reader.read(0, 10)
    with pytest.raises(SlideNotFound):
        storage.open_probed("missing.svs", 100, 100)
    dead = S3Storage("b", endpoint_url="http://127.0.0.1:9", max_attempts=1, data_plane=plane)
    with pytest.raises(StorageError, match="storage unreachable"):
        dead.open_probed("slide.svs", 10, 10)


def test_a_read_makes_no_call_past_its_content_length(fake_s3: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The body is read until its Content-Length is in, with no last call that could only
    return ``b""`` (issue 21: CPU per GET), and the connection is reused by the next read."""
    import urllib3.response

    storage = S3Storage("b", endpoint_url=fake_s3, data_plane="lean")
    reader = storage.open("slide.svs")
    calls: list[int] = []
    real = urllib3.response.HTTPResponse.read1

    def counting(self: Any, amt: int | None = None, decode_content: bool | None = None
                 ) -> bytes:
        data = real(self, amt, decode_content=decode_content)
        calls.append(len(data))
        return data
    monkeypatch.setattr(urllib3.response.HTTPResponse, "read1", counting)
    assert reader.read(100, 3000) == DATA[100:3100]
    assert reader.read(5000, 2000) == DATA[5000:7000]
    assert sum(calls) == 5000 and 0 not in calls
    assert storage.getter.pool.num_connections == 1


def test_the_boto3_plane_stays_one_table_entry(fake_s3: str) -> None:
    storage = S3Storage("b", endpoint_url=fake_s3, data_plane="boto3")
    boto3_gets = _no_boto3_reads(storage)
    assert storage.open("slide.svs").read(0, 10) == DATA[:10]
    assert boto3_gets == ["GetObject"]
    with pytest.raises(ValueError, match="data_plane"):
        S3Storage("b", data_plane="nope")


class _RecordingClient:
    """A boto3-shaped client answering every ranged GET with zeros, recording its arguments."""

    def __init__(self) -> None:
        self.calls: list[dict[str, object]] = []

    def get_object(self, **kwargs: object) -> dict[str, object]:
        self.calls.append(kwargs)
        first, last = str(kwargs["Range"]).removeprefix("bytes=").split("-")
        length = int(last) - int(first) + 1
        return {"Body": io.BytesIO(b"\0" * length), "ContentLength": length}


@pytest.mark.parametrize(("etag", "sent"), [('"abc"', '"abc"'), ('W/"abc"', None), ("", None)])
def test_only_a_strong_etag_pins_reads(etag: str, sent: str | None) -> None:
    """A weak ETag (some S3-compatible gateways) would get 412 from every If-Match (strong
    comparison): reads of such an object go unpinned; its identity keeps the tag."""
    from wsi_streamer.io.s3 import S3Reader

    client = _RecordingClient()
    reader = S3Reader(client, "b", "k.svs", "k.svs", size=100, etag=etag)
    assert reader.read(0, 10) == b"\0" * 10
    assert client.calls[0].get("IfMatch") == sent
    assert reader.identity == "s3://b/k.svs#" + etag.removeprefix("W/").strip('"')
