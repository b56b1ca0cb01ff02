"""The libcurl data plane (issue 21, ``io/s3_curl.py``): the lean plane's faults on both
transports (a 503 retried, a short body retried, a longer one refused with its connection, a
stalled body stopped at the deadline), the default plane, and a handle per process after a
fork (a DataLoader worker)."""

from __future__ import annotations

import os
import time

import pytest

from tests.unit.io.test_s3_lean import DATA, PLANES, FakeS3, fake_s3  # noqa: F401
from wsi_streamer.errors import StorageError, StorageTimeout
from wsi_streamer.io.s3 import S3Storage, default_data_plane
from wsi_streamer.io.transfer import ReadDeadline


def _gets() -> int:
    return sum(1 for method, _ in FakeS3.seen if method == "GET")


@pytest.mark.parametrize("plane", PLANES)
def test_a_503_and_a_short_body_are_retried(fake_s3: str, plane: str) -> None:  # noqa: F811
    reader = S3Storage("b", endpoint_url=fake_s3, data_plane=plane).open("slide.svs")
    FakeS3.faults = ["503", "short"]
    assert reader.read(1000, 2000) == DATA[1000:3000]
    assert _gets() == 3 and FakeS3.faults == []


@pytest.mark.parametrize("plane", PLANES)
def test_a_longer_body_is_refused_and_its_connection_never_reused(
        fake_s3: str, plane: str) -> None:  # noqa: F811
    reader = S3Storage("b", endpoint_url=fake_s3, data_plane=plane).open("slide.svs")
    assert reader.read(0, 100) == DATA[:100]
    assert reader.read(200, 100) == DATA[200:300]
    assert len(set(FakeS3.ports)) == 1  # one connection, kept
    FakeS3.faults = ["long"]
    with pytest.raises(StorageError, match="more bytes than the range"):
        reader.read(1000, 2000)
    assert reader.read(0, 100) == DATA[:100]
    assert _gets() == 4 and len(set(FakeS3.ports)) == 2 and FakeS3.ports[-1] != FakeS3.ports[-2]


@pytest.mark.parametrize("plane", PLANES)
def test_a_stalled_body_stops_at_the_deadline(fake_s3: str, plane: str) -> None:  # noqa: F811
    deadline = ReadDeadline(base_s=0.5, min_rate=10 << 20)
    storage = S3Storage("b", endpoint_url=fake_s3, data_plane=plane, deadline=deadline)
    reader = storage.open("slide.svs")
    FakeS3.faults = ["stall"]
    with pytest.raises(StorageTimeout):
        reader.read(0, 4000)  # the server would hold it 30 s: pytest-timeout bounds a hang
    assert reader.read(0, 100) == DATA[:100]  # on a new connection
    assert _gets() == 2 and FakeS3.ports[0] != FakeS3.ports[1]


def test_curl_is_the_default_where_pycurl_imports(fake_s3: str,  # noqa: F811
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pycurl")
    from wsi_streamer.io.s3_curl import CurlGet

    storage = S3Storage("b", endpoint_url=fake_s3)
    assert storage.data_plane == "curl" and isinstance(storage.getter, CurlGet)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert default_data_plane() == "lean"
    assert S3Storage("b", endpoint_url=fake_s3).data_plane == "lean"


def test_a_forked_child_reads_with_its_own_handle(fake_s3: str) -> None:  # noqa: F811
    """The parent's handle (and its open connection) is never used in the child: the child's
    read comes on a new connection, and the parent's connection still serves the parent."""
    pytest.importorskip("pycurl")
    storage = S3Storage("b", endpoint_url=fake_s3, data_plane="curl")
    reader = storage.open("slide.svs")
    assert reader.read(0, 100) == DATA[:100]
    parent = storage.getter.handle()
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            ok = (reader.read(300, 100) == DATA[300:400]
                  and storage.getter.handle() is not parent)
        finally:
            os._exit(0 if ok else 1)
    give_up = time.monotonic() + 60  # a hung child fails the test, it does not hang it
    status = None
    while status is None and time.monotonic() < give_up:
        done, code = os.waitpid(pid, os.WNOHANG)
        status = code if done else None
        time.sleep(0.02)
    if status is None:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert status == 0
    assert reader.read(500, 100) == DATA[500:600]
    assert storage.getter.handle() is parent
    first, child, last = FakeS3.ports
    assert first == last != child
