"""Storage requests in flight for backends without their own hooks (local files, HTTP): the
``in_flight`` listeners see every request sent and answered, failed ones included, and a
request that is still running is counted (the server's ``wsi_storage_requests_in_flight``)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from wsi_streamer.errors import StorageError
from wsi_streamer.io import range_reader
from wsi_streamer.io.local import LocalReader


class Counter:
    def __init__(self) -> None:
        self.sent = self.answered = 0
        self.lock = threading.Lock()

    def on_sent(self) -> None:
        with self.lock:
            self.sent += 1

    def on_answered(self) -> None:
        with self.lock:
            self.answered += 1


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> Counter:
    found = Counter()
    monkeypatch.setattr(range_reader, "_in_flight_listeners", [])
    range_reader.listen_in_flight(found.on_sent, found.on_answered)
    range_reader.listen_in_flight(found.on_sent, found.on_answered)  # registered once
    return found


def test_local_reads_are_counted_sent_and_answered(counter: Counter, tmp_path: Path) -> None:
    path = tmp_path / "a.svs"
    path.write_bytes(bytes(range(256)) * 16)
    reader = LocalReader(str(path), "a.svs")
    for offset in range(0, 4096, 512):
        assert reader.read(offset, 16) == bytes(range(offset % 256, offset % 256 + 16))
    assert (counter.sent, counter.answered) == (8, 8)
    reader.close()


def test_a_failed_request_is_answered_too(counter: Counter,
                                          monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    path = tmp_path / "a.svs"
    path.write_bytes(b"x" * 64)
    reader = LocalReader(str(path), "a.svs")

    def broken(fd: int, length: int, offset: int) -> bytes:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("wsi_streamer.io.local.os.pread", broken)
    with pytest.raises(StorageError):
        reader.read(0, 8)
    assert (counter.sent, counter.answered) == (1, 1)


def test_a_running_request_is_in_flight(counter: Counter) -> None:
    started, release = threading.Event(), threading.Event()

    def request() -> None:
        with range_reader.in_flight():
            started.set()
            release.wait(30)

    worker = threading.Thread(target=request)
    worker.start()
    assert started.wait(30)
    assert counter.sent - counter.answered == 1
    release.set()
    worker.join(30)
    assert counter.sent - counter.answered == 0
