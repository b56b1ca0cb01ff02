"""Our server under gunicorn (``gunicorn -c gunicorn.conf.py``), driven over loopback HTTP by
thread pools in the runner process (separate from gunicorn's)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests

from .common import FAKE_AWS_ENV, Result, S3Counters, cpu_seconds, median

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_local = threading.local()


def server_available() -> str | None:
    """None when the server can be benchmarked, else why not."""
    for rel in ("wsi_streamer/server/app.py", "gunicorn.conf.py"):
        if not os.path.exists(os.path.join(ROOT, rel)):
            return f"{rel} does not exist yet"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Server:
    base: str  # http://127.0.0.1:port
    pid: int  # the gunicorn master (workers are its children)


@contextmanager
def gunicorn(endpoint: str, bucket: str, log_path: str, app: str | None = None
             ) -> Iterator[Server]:
    """Start gunicorn against the S3 endpoint with a fresh tile cache. ``app`` replaces the
    WSGI app (same configuration otherwise)."""
    port = _free_port()
    with tempfile.TemporaryDirectory() as cache_dir, open(log_path, "w") as log:
        env = {**os.environ, **FAKE_AWS_ENV, "WSI_S3_BUCKET": bucket,
               "WSI_S3_ENDPOINT": endpoint, "WSI_HOST": "127.0.0.1", "WSI_PORT": str(port),
               "WSI_TILE_CACHE_DIR": cache_dir, "WSI_LOG_LEVEL": "warning"}
        exe = os.path.join(os.path.dirname(sys.executable), "gunicorn")
        proc = subprocess.Popen([exe, "-c", "gunicorn.conf.py", *([app] if app else [])],
                                cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"gunicorn exited with {proc.returncode}; see {log_path}")
                try:
                    if requests.get(base + "/health", timeout=5).ok:
                        break
                except (requests.ConnectionError, requests.Timeout):
                    pass  # still starting (a loaded host can take seconds to answer)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not answer /health; see {log_path}")
                time.sleep(0.1)
            yield Server(base, proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _get(url: str) -> tuple[float, requests.Response]:
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    t0 = time.perf_counter()
    resp = session.get(url, timeout=60)
    elapsed = (time.perf_counter() - t0) * 1000
    if resp.status_code != 200:
        raise RuntimeError(f"GET {url}: {resp.status_code} {resp.text[:200]}")
    return elapsed, resp


def _parallel(urls: list[str], threads: int) -> tuple[float, list[float]]:
    """``(requests per second, latencies ms)`` of ``urls`` fetched by ``threads`` clients."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        lat = [ms for ms, _ in pool.map(_get, urls)]
    return len(urls) / (time.perf_counter() - t0), lat


def baseline_ms(base: str, n: int = 30) -> float:
    """Median latency of ``/health`` (a small response): tens of ms means a Nagle stall."""
    _get(base + "/health")
    return median([_get(base + "/health")[0] for _ in range(n)])


def cached_vs_trivial(cached_urls: list[str], trivial_base: str | None, nbytes: int,
                      requests_n: int, rounds: int = 3) -> dict[str, float]:
    """Requests/s of cached tiles and, alternately, of a trivial route returning ``nbytes``
    (same gunicorn configuration), at 1 and 32 clients; medians of ``rounds`` alternations,
    so that a noisy neighbour hits both sides alike."""
    reps = (cached_urls * (requests_n // len(cached_urls) + 1))[:requests_n]
    one = reps[: max(len(cached_urls), requests_n // 4)]
    trivial = [f"{trivial_base}/bytes/{nbytes}"] * requests_n
    if trivial_base is not None:
        _parallel(trivial[:32], 32)  # connections and workers warm
    runs: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, urls in (("cached", reps), ("trivial", trivial)):
            if name == "trivial" and trivial_base is None:
                continue
            runs.setdefault(f"{name}_tput1", []).append(_parallel(urls[: len(one)], 1)[0])
            tput, lat = _parallel(urls, 32)
            runs.setdefault(f"{name}_tput32", []).append(tput)
            runs.setdefault(f"{name}32_p50_ms", []).append(median(lat))
    return {name: median(values) for name, values in runs.items()}


def run_server(server: Server, counters: S3Counters, key: str, first: tuple[int, int],
               cold: list[tuple[int, int]], parallel: list[tuple[int, int]],
               cached_requests: int, trivial: Server | None = None) -> Result:
    """Time to first tile (cold server), sequential cold and cached tiles, throughput at 1 and
    32 clients for distinct cold tiles (with the CPU each process spent per tile) and for
    cached tiles, thumbnail and DZI tiles."""
    base = server.base
    result = Result(system="server", slide=key)
    tile = f"{base}/tiles/{key}/0/{{}}/{{}}.jpg"
    first_run: dict[str, float] = {}
    with counters.measure(first_run):
        _get(tile.format(*first))
    result.ttft_s = first_run["s"]
    result.first_requests, result.first_bytes = first_run["requests"], first_run["bytes"]
    result.first_rtt = first_run["round_trips"]
    cold_run: dict[str, float] = {}
    hits = []
    with counters.measure(cold_run):
        for x, y in cold:
            ms, resp = _get(tile.format(x, y))
            result.cold_ms.append(ms)
            hits.append(resp.headers.get("X-Tile-Cache-Hit"))
    result.cold_requests = cold_run["requests"] / len(cold)
    result.cold_bytes = cold_run["bytes"] / len(cold)
    result.tput = len(cold) / cold_run["s"]
    cached_urls = [tile.format(x, y) for x, y in cold]
    sizes = []
    for url in cached_urls:
        ms, resp = _get(url)
        result.warm_ms.append(ms)
        hits.append(resp.headers.get("X-Tile-Cache-Hit"))
        sizes.append(len(resp.content))
    extra: dict[str, Any] = result.extra
    extra["tile_bytes"] = int(median(sizes))
    extra["cache_hit_headers"] = {h: hits.count(h) for h in set(hits)}
    par_run: dict[str, float] = {}
    s3_pid = int(counters.get().get("pid", 0))
    cpu = (cpu_seconds(server.pid, descendants=True), cpu_seconds(s3_pid), time.process_time())
    with counters.measure(par_run):
        result.tput32, lat = _parallel([tile.format(x, y) for x, y in parallel], 32)
    spent = (cpu_seconds(server.pid, descendants=True) - cpu[0], cpu_seconds(s3_pid) - cpu[1],
             time.process_time() - cpu[2])
    extra_cpu = {name: value * 1000 / len(parallel)
                 for name, value in zip(("server", "s3", "client"), spent, strict=True)}
    extra["cold32_p50_ms"], extra["cold32_requests_per_tile"] = median(lat), (
        par_run["requests"] / len(parallel))
    extra["cold32_cpu_ms_per_tile"] = extra_cpu
    extra.update(cached_vs_trivial(cached_urls, trivial.base if trivial else None,
                                   extra["tile_bytes"], cached_requests))
    thumb: dict[str, float] = {}
    with counters.measure(thumb):
        _get(f"{base}/slides/{key}/thumbnail")
    extra["thumbnail_cold_ms"], extra["thumbnail_s3_requests"] = thumb["s"] * 1000, (
        thumb["requests"])
    extra["thumbnail_warm_ms"] = _get(f"{base}/slides/{key}/thumbnail")[0]
    _, resp = _get(f"{base}/slides/{key}/dzi")
    width, height = (int(v) for v in re.findall(r'(?:Width|Height)="(\d+)"', resp.text)[:2])
    top = max(width, height).bit_length() if max(width, height) & (max(width, height) - 1) \
        else max(width, height).bit_length() - 1
    dzi = f"{base}/slides/{key}/dzi_files/{{}}/{{}}_{{}}.jpg"
    size = int(re.findall(r'TileSize="(\d+)"', resp.text)[0])
    col, row = (first[0] * 256) // size, (first[1] * 256) // size
    dz: dict[str, float] = {}
    with counters.measure(dz):
        _get(dzi.format(top, col, row))
    extra["dzi_top_cold_ms"], extra["dzi_top_s3_requests"] = dz["s"] * 1000, dz["requests"]
    extra["dzi_top_warm_ms"] = _get(dzi.format(top, col, row))[0]
    with counters.measure(dz):
        _get(dzi.format(top - 3, col // 8, row // 8))
    extra["dzi_low_cold_ms"], extra["dzi_low_s3_requests"] = dz["s"] * 1000, dz["requests"]
    return result
