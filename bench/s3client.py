"""CPU per ranged GET of S3 clients against the loopback server: ``python -m bench.s3client``.

Issue 21: the data plane's client, chosen by measurement. Each row makes ``--gets`` ranged GETs
of ``--size`` bytes at random offsets of one object (``If-Match`` pinned, as our reads are) from
``bench.s3server`` (a separate process, so its CPU is not counted), ``--threads`` at a time, and
reports the client process's CPU per GET (user + system, all threads), requests and bytes (the
server's counters) and the load average. Rows:

- ``boto3``: ``client.get_object(...)["Body"].read()`` (the client as today's ``S3Storage``
  configures it: standard retries, no parameter validation, lean timestamp parser);
- ``ours-boto3`` / ``ours-lean`` / ``ours-curl``: our ``RangeReader.read`` through
  ``io/factory.py`` with the data plane chosen by ``S3Storage(data_plane=...)`` (deadline,
  slots, If-Match, stats; ``ours-curl``: libcurl through pycurl, when it imports);
- ``botocore-signer+urllib3``: botocore's ``S3SigV4Auth`` over a urllib3 pool;
- ``obstore``: ``obstore.get`` with a range and ``if_match`` (when ``obstore`` imports;
  ``--obstore-path DIR`` adds a folder it was installed into with ``pip install --target``).

``--fork-check`` instead reads once in this process, forks (as a DataLoader starts its workers)
and reads again in the child with the same client and with a new one: ``ok`` or ``HUNG`` (no
answer in 20 s; obstore 0.12.1's runtime does not survive a fork).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .common import FAKE_AWS_ENV, S3Counters
from .run import BUCKET, s3_server

Get = Callable[[int, int], bytes]


def _boto3(endpoint: str, key: str, etag: str) -> Get:
    from wsi_streamer.io.s3 import S3Storage

    client = S3Storage(BUCKET, endpoint_url=endpoint, data_plane="boto3").client

    def get(offset: int, length: int) -> bytes:
        resp = client.get_object(Bucket=BUCKET, Key=key, IfMatch=f'"{etag}"',
                                 Range=f"bytes={offset}-{offset + length - 1}")
        data: bytes = resp["Body"].read()
        return data
    return get


def _ours(kind: str) -> Callable[[str, str, str], Get]:
    def make(endpoint: str, key: str, etag: str) -> Get:
        from wsi_streamer.io.factory import open_storage

        if kind == "curl":
            import pycurl  # noqa: F401  (the row is skipped without it)
        reader = open_storage(f"s3://{BUCKET}", endpoint_url=endpoint, data_plane=kind).open(key)
        return reader.read
    return make


def _signer(endpoint: str, key: str, etag: str) -> Get:
    import botocore.session
    import urllib3
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest

    creds = botocore.session.get_session().get_credentials()
    pool = urllib3.PoolManager(maxsize=32)
    url = f"{endpoint}/{BUCKET}/{key}"

    def get(offset: int, length: int) -> bytes:
        request = AWSRequest("GET", url, headers={
            "Range": f"bytes={offset}-{offset + length - 1}", "If-Match": f'"{etag}"'})
        S3SigV4Auth(creds.get_frozen_credentials(), "s3", "us-east-1").add_auth(request)
        resp = pool.request("GET", url, headers=dict(request.headers.items()),
                            preload_content=False)
        data: bytes = resp.read()
        resp.release_conn()
        return data
    return get


def _obstore(endpoint: str, key: str, etag: str) -> Get:
    import obstore
    from obstore.store import S3Store

    store = S3Store(BUCKET, endpoint=endpoint, region="us-east-1",
                    access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
                    secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
                    client_options={"allow_http": True}, virtual_hosted_style_request=False)

    def get(offset: int, length: int) -> bytes:
        result = obstore.get(store, key, options={"range": (offset, offset + length),
                                                  "if_match": f'"{etag}"'})
        return bytes(result.bytes())
    return get


ROWS: dict[str, Callable[[str, str, str], Get]] = {
    "boto3": _boto3, "ours-boto3": _ours("boto3"), "botocore-signer+urllib3": _signer,
    "ours-lean": _ours("lean"), "ours-curl": _ours("curl"), "obstore": _obstore}


def run_row(make: Callable[[str, str, str], Get], endpoint: str, key: str, etag: str,
            size: int, gets: int, threads: int, object_size: int) -> dict[str, float]:
    get = make(endpoint, key, etag)
    rng = random.Random(0)
    offsets = [rng.randrange(0, object_size - size) for _ in range(gets)]
    for offset in offsets[:20]:  # warm: connections, credentials, imports
        assert len(get(offset, size)) == size
    counters = S3Counters(endpoint)
    counters.reset()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if threads == 1:
        for offset in offsets:
            get(offset, size)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda o: get(o, size), offsets))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    stats = counters.get()
    return {"cpu_ms": 1000 * cpu / gets, "wall_ms": 1000 * wall / gets,
            "requests": stats["requests"], "bytes": stats["bytes"],
            "load": os.getloadavg()[0]}


def fork_check(make: Callable[[str, str, str], Get], endpoint: str, key: str,
               etag: str) -> str:
    """Whether a client used before ``fork()`` and one made after it work in the child."""
    get = make(endpoint, key, etag)
    assert len(get(0, 100)) == 100
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            ok = len(get(0, 100)) == 100 and len(make(endpoint, key, etag)(0, 100)) == 100
        finally:
            os._exit(0 if ok else 1)
    give_up = time.monotonic() + 20
    while time.monotonic() < give_up:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return "ok" if status == 0 else f"failed (status {status})"
        time.sleep(0.1)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return "HUNG (no answer in 20 s)"


def main() -> None:
    parser = argparse.ArgumentParser(description="CPU per ranged GET of S3 clients")
    parser.add_argument("--gets", type=int, default=400)
    parser.add_argument("--size", type=int, default=38 * 1024, help="bytes per GET")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--obstore-path", help="a folder obstore was pip-installed into")
    parser.add_argument("--fork-check", action="store_true",
                        help="does each client work in a forked child?")
    args = parser.parse_args()
    os.environ.update(FAKE_AWS_ENV)
    if args.obstore_path:
        sys.path.insert(0, args.obstore_path)
    folder = os.path.join(os.path.dirname(__file__), "out", "s3client")
    os.makedirs(folder, exist_ok=True)
    key = "object.bin"
    path = os.path.join(folder, key)
    if not os.path.exists(path) or os.path.getsize(path) != 64 << 20:
        with open(path, "wb") as f:
            f.write(random.Random(1).randbytes(64 << 20))
    with s3_server(folder, args.latency_ms) as endpoint:
        import urllib.request
        head = urllib.request.Request(f"{endpoint}/{BUCKET}/{key}", method="HEAD")
        etag = urllib.request.urlopen(head).headers["ETag"].strip('"')
        if args.fork_check:
            for name in args.rows.split(","):
                try:
                    print(f"{name:<26}{fork_check(ROWS[name], endpoint, key, etag)}", flush=True)
                except ImportError as exc:
                    print(f"{name:<26}skipped ({exc})")
            return
        print(f"{args.gets} ranged GETs of {args.size} B, {args.threads} thread(s), "
              f"+{args.latency_ms:g} ms per request; client process CPU only")
        print(f"{'client':<26}{'CPU ms/GET':>11}{'wall ms/GET':>12}{'requests':>9}"
              f"{'MB':>8}{'load 1m':>8}")
        for name in args.rows.split(","):
            try:
                row = run_row(ROWS[name], endpoint, key, etag, args.size, args.gets,
                              args.threads, 64 << 20)
            except ImportError as exc:
                print(f"{name:<26}skipped ({exc})")
                continue
            print(f"{name:<26}{row['cpu_ms']:>11.3f}{row['wall_ms']:>12.3f}"
                  f"{row['requests']:>9.0f}{row['bytes'] / 1e6:>8.1f}{row['load']:>8.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
