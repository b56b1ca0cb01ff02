"""The libcurl data plane (issue 21, ``io/s3_curl.py``): the lean plane's faults on both
transports (a 503 retried, a short body retried, a longer one refused with its connection, a
stalled body stopped at the deadline, HTTPS), the default plane, connections shared by
threads, and handles of their own in a forked child (a DataLoader worker)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.unit.io.test_s3_lean import DATA, PLANES, FakeS3, fake_s3  # noqa: F401
from wsi_streamer.errors import StorageConnectionError, StorageError, StorageTimeout
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
def test_a_body_cut_short_is_retried_then_a_truncated_response(fake_s3: str,  # noqa: F811
                                                               plane: str) -> None:
    reader = S3Storage("b", endpoint_url=fake_s3, data_plane=plane).open("slide.svs")
    FakeS3.faults = ["cut"]
    assert reader.read(0, 4000) == DATA[:4000]
    FakeS3.faults = ["cut"] * 3
    with pytest.raises(StorageError, match="truncated response") as raised:
        reader.read(0, 4000)
    assert not isinstance(raised.value, StorageConnectionError)
    assert _gets() == 5


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


def test_short_lived_threads_share_connections(fake_s3: str) -> None:  # noqa: F811
    """``open_probed`` reads from two new threads per call: their GETs reuse the idle
    connections of the calls before (as urllib3's pool does), not one new pair per open."""
    pytest.importorskip("pycurl")
    storage = S3Storage("b", endpoint_url=fake_s3, data_plane="curl")
    for _ in range(4):
        storage.open_probed("slide.svs", 100, 100)
    assert _gets() == 8 and len(set(FakeS3.ports)) <= 2


def test_curl_is_the_default_where_pycurl_imports(fake_s3: str,  # noqa: F811
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pycurl")
    from wsi_streamer.io.s3_curl import CurlGet

    storage = S3Storage("b", endpoint_url=fake_s3)
    assert storage.data_plane == "curl" and isinstance(storage.getter, CurlGet)
    monkeypatch.setitem(sys.modules, "pycurl", None)  # as if it did not import
    assert default_data_plane() == "lean"
    assert S3Storage("b", endpoint_url=fake_s3).data_plane == "lean"


def test_a_forked_child_reads_with_its_own_handle(fake_s3: str) -> None:  # noqa: F811
    """The parent's handle (and its open connection) is never used in the child: the child's
    read comes on a new connection, and the parent's connection still serves the parent."""
    pytest.importorskip("pycurl")
    storage = S3Storage("b", endpoint_url=fake_s3, data_plane="curl")
    reader = storage.open("slide.svs")
    assert reader.read(0, 100) == DATA[:100]
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            ok = reader.read(300, 100) == DATA[300:400]
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
    first, child, last = FakeS3.ports  # the server's view: which connection each GET came on
    assert first == last != child


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.mark.parametrize("plane", PLANES)
def test_https_trusts_what_python_trusts(fake_s3: str, plane: str,  # noqa: F811
                                         tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Both planes verify the endpoint against Python's trust store (``SSL_CERT_FILE`` here),
    not libcurl's own CA bundle; an untrusted certificate is refused."""
    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeS3)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    endpoint = f"https://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(StorageConnectionError):
            S3Storage("b", endpoint_url=endpoint, data_plane=plane,
                      max_attempts=1).open_probed("slide.svs", 100, 100)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        storage = S3Storage("b", endpoint_url=endpoint, data_plane=plane)
        _, parts = storage.open_probed("slide.svs", 100, 100)
        assert parts == [(0, DATA[:100]), (len(DATA) - 100, DATA[-100:])]
    finally:
        server.shutdown()
        server.server_close()
