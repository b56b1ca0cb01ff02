"""Soak run: mixed traffic against the real server under gunicorn while storage misbehaves.

    .venv/bin/python -m bench.soak                  # 10 minutes (the reliability figures)
    .venv/bin/python -m bench.soak --duration 60    # a shorter look

Storage is the loopback S3 server of ``bench.s3server`` behind the fault proxy of the tests
(``tests/integration/fault_proxy.py``), which cycles through phases: pass, connection resets,
500s, 503s (SlowDown), 0.3 s delays, truncated bodies, 3 s stalls, and replaced objects (a
slide's bytes swapped for another slide's, so its ETag changes under open readers). Clients
mix cold tiles (random slide, level, tile, quality), warm tiles, DZI descriptors and tiles,
thumbnails, metadata, listings, hostile requests (bad integers, traversal, huge parameters,
unknown and broken slides) and requests for hostile tiles (a progressive-JPEG scan bomb and
a JPEG 2000 bomb slide: each must be 415 at once, within its request's budget).

It prints a table per request kind and exits non-zero unless: no unexpected 5xx (a 5xx is
expected only for storage-bound requests while a fault phase is on, plus a short grace after,
and only as the API's JSON error); every request answered within one storage read timeout
(no stuck threads); worker RSS flat after warm-up (growth under 15%); the tile cache folder
within its bound (``WSI_CACHE_TILES``, write-ahead log included). The caches are small
(``CACHE_LIMIT``, ``BLOCKS``) so that they are full by the end of the warm-up."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

from tests.fixtures.bombs import write_j2k_bomb_svs, write_scan_bomb_svs
from tests.fixtures.slides import make_generic, make_svs
from tests.integration.fault_proxy import FaultProxy
from wsi_streamer.format.demo import demo_slide_bytes
from wsi_streamer.progress import Progress

from .common import FAKE_AWS_ENV, pct
from .s3server import S3Server

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "soak"
CACHE_LIMIT = 16 * 1024 * 1024  # WSI_CACHE_TILES for the run: small, so eviction runs
BLOCKS = 32 * 1024 * 1024  # WSI_CACHE_BLOCKS per worker: small, so it is full after warm-up
WARM_UP = 0.3  # the share of the run after which RSS must be flat (every cache full)
READ_BOUND_S = 35.0  # connect 5 s + read 30 s: the storage timeout of one read
GRACE_S = 2.0  # after a fault phase ends, requests already in flight may still fail
# (mode, seconds); "replace" swaps a slide's bytes during a pass phase.
PHASES = [("pass", 20), ("reset", 8), ("pass", 10), ("500", 8), ("pass", 10), ("503", 8),
          ("pass", 10), ("delay", 10), ("truncate", 8), ("pass", 10), ("stall", 8),
          ("replace", 15)]
HOSTILE = [
    "/tiles/{s}/%C2%B2/0/0.jpg", "/tiles/{s}/0/0/0.jpg?quality=%C2%B2",
    "/tiles/{s}/0/999999999/0.jpg", "/tiles/{s}/-1/0/0.jpg", "/tiles/{s}/99/0/0.jpg",
    "/slides/{s}/thumbnail?max_size=999999999999", "/slides/{s}/thumbnail?max_size=-5",
    "/slides/..%2F..%2Fetc%2Fpasswd", "/tiles/..%2F..%2Fetc%2Fpasswd/0/0/0.jpg",
    "/slides/missing-{r}.svs", "/slides/broken.svs", "/slides/truncated.svs/thumbnail",
    "/slides/notes.txt", "/slides/{s}/dzi_files/99/0_0.jpg", "/slides?limit=%E2%91%A0",
    "/slides/a%00b.svs", "/tiles/{s}/0/0/0.jpg?quality=101", "/slides/" + "x" * 3000 + ".svs",
]


@dataclass
class Record:
    kind: str
    status: int
    seconds: float
    started: float
    json_error: bool
    detail: str = ""


@dataclass
class Timeline:
    """Which fault mode was on when; storage-bound requests may fail during (and just after)
    any phase other than pass."""

    spans: list[tuple[float, float, str]] = field(default_factory=list)

    def faulty(self, start: float, end: float) -> bool:
        return any(mode != "pass" and a < end and start < b + GRACE_S
                   for a, b, mode in self.spans)


def make_slides(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Slides of several layouts plus broken files; returns id -> (width, height, levels)."""
    folder.mkdir(parents=True, exist_ok=True)
    slides = {
        "svs-a.svs": make_svs(3000, 2200, levels=3, tile=256, seed=1),
        "svs-b.svs": make_svs(2400, 1800, levels=3, tile=240, seed=2),
        "svs-c.svs": make_svs(1800, 1400, levels=2, tile=256, seed=3),
        "generic-a.tiff": make_generic(2000, 1500, levels=3, tile=128, seed=4),
        "generic-b.tiff": make_generic(1200, 900, levels=2, tile=256, seed=5),
    }
    info = {}
    for name, slide in slides.items():
        (folder / name).write_bytes(slide.data)
        height, width = slide.levels[0].shape[:2]
        info[name] = (width, height, len(slide.levels))
    (folder / "demo-slide.tif").write_bytes(demo_slide_bytes())
    info["demo-slide.tif"] = (8192, 6144, 5)
    (folder / "broken.svs").write_bytes(b"II*\0" + os.urandom(5000))
    (folder / "truncated.svs").write_bytes(slides["svs-a.svs"].data[:40000])
    (folder / "notes.txt").write_text("not a slide")
    write_scan_bomb_svs(folder, "scan-bomb.svs", extra=20000, width=768, height=512)
    write_j2k_bomb_svs(folder, "j2k-bomb.svs", side=8192)
    return info


BOMBS = [  # hostile tiles: refused (415) before decoding, whatever the request
    "/tiles/{b}/0/0/0.jpg", "/slides/{b}/thumbnail?max_size=256", "/slides/{b}/dzi_files/8/0_0.jpg",
    "/slides/{b}/dzi_files/{top}/0_0.jpg", "/iiif/3/{b}/full/max/0/default.jpg",
    "/iiif/3/{b}/0,0,256,256/256,/0/default.jpg",
]


def requests_for(rng: random.Random, slides: dict[str, tuple[int, int, int]],
                 hot: list[str]) -> tuple[str, str, bool]:
    """(kind, path, storage-bound) of one random request."""
    slide = rng.choice(list(slides))
    width, height, levels = slides[slide]
    roll = rng.random()
    if roll < 0.30:
        level = rng.randrange(levels)
        scale = 4 ** level if not slide.startswith("demo") else 2 ** level
        tile = 256 if slide != "generic-a.tiff" else 128
        x = rng.randrange(max(1, width // scale // tile))
        y = rng.randrange(max(1, height // scale // tile))
        quality = rng.choice((60, 75, 80, 90))
        return "cold tile", f"/tiles/{slide}/{level}/{x}/{y}.jpg?quality={quality}", True
    if roll < 0.55:
        return "warm tile", rng.choice(hot), True
    if roll < 0.63:
        return "dzi", f"/slides/{slide}/dzi", True
    if roll < 0.75:
        level = rng.randrange(8, 12)
        return "dzi tile", f"/slides/{slide}/dzi_files/{level}/0_0.jpg", True
    if roll < 0.83:
        size = rng.choice((128, 256, 512, 1024))
        return "thumbnail", f"/slides/{slide}/thumbnail?max_size={size}", True
    if roll < 0.88:
        return "metadata", f"/slides/{slide}", True
    if roll < 0.90:
        return "listing", "/slides?limit=5", True
    if roll < 0.93:
        bomb, top = rng.choice((("scan-bomb.svs", 10), ("j2k-bomb.svs", 13)))  # top DZI level
        return "bomb", rng.choice(BOMBS).format(b=bomb, top=top), True
    template = rng.choice(HOSTILE)
    return "hostile", template.format(s=slide, r=rng.randrange(10**6)), False


def worker_rss(master: int) -> int:
    try:
        children = psutil.Process(master).children()
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for child in children:
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def folder_bytes(path: str) -> tuple[int, int]:
    """(bytes of the cache's data: value files and the database, bytes of SQLite's
    write-ahead log, which SQLite checkpoints and truncates on its own)."""
    data = wal = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                size = os.path.getsize(os.path.join(dirpath, name))
            except OSError:
                continue
            if name.endswith(("-wal", "-shm")):
                wal += size
            else:
                data += size
    return data, wal


def run(duration: float, clients: int, seed: int) -> int:
    work = Path(tempfile.mkdtemp(prefix="wsi-soak-"))
    slides_dir = work / "bucket"
    print(f"slides and cache under {work}", file=sys.stderr)
    slides = make_slides(slides_dir)
    spare = {name: (slides_dir / name).read_bytes() for name in ("svs-b.svs", "svs-c.svs")}
    s3 = S3Server(str(slides_dir), BUCKET)
    threading.Thread(target=s3.serve_forever, daemon=True).start()
    proxy = FaultProxy(f"http://127.0.0.1:{s3.port}")
    proxy.delay_s = 0.3
    port = _free_port()
    cache_dir = work / "tiles"
    env = {**os.environ, **FAKE_AWS_ENV, "WSI_S3_BUCKET": BUCKET, "WSI_S3_ENDPOINT": proxy.url,
           "WSI_HOST": "127.0.0.1", "WSI_PORT": str(port), "WSI_TILE_CACHE_DIR": str(cache_dir),
           "WSI_CACHE_TILES": str(CACHE_LIMIT), "WSI_CACHE_BLOCKS": str(BLOCKS),
           "WSI_SLIDE_REVALIDATE": "10",
           "WSI_LOG_LEVEL": "warning"}
    log_path = work / "gunicorn.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "gunicorn"),
                                 "-c", "gunicorn.conf.py"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(proc, base, log_path)
        return _soak(base, proc.pid, proxy, slides, spare, slides_dir, cache_dir, duration,
                     clients, seed, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        proxy.close()
        s3.shutdown()
        shutil.rmtree(work, ignore_errors=True)


def _soak(base: str, master: int, proxy: FaultProxy, slides: dict[str, tuple[int, int, int]],
          spare: dict[str, bytes], slides_dir: Path, cache_dir: Path, duration: float,
          clients: int, seed: int, log_path: Path) -> int:
    rng = random.Random(seed)
    hot = [f"/tiles/{s}/0/{x}/{y}.jpg" for s in slides for x in range(2) for y in range(2)]
    records: list[Record] = []
    lock = threading.Lock()
    timeline = Timeline()
    stop = threading.Event()
    start = time.monotonic()
    rss: list[tuple[float, int]] = []

    def faults() -> None:
        index = 0
        while not stop.is_set():
            mode, seconds = PHASES[index % len(PHASES)]
            index += 1
            began = time.monotonic()
            if mode == "replace":
                name = rng.choice(list(spare))
                other = spare["svs-c.svs" if name == "svs-b.svs" else "svs-b.svs"]
                (slides_dir / name).write_bytes(other)  # new bytes, new mtime: new ETag
                spare[name], proxy.mode = other, "pass"
                timeline.spans.append((began, began + seconds, "replace"))
            else:
                proxy.mode = "delay" if mode in ("delay", "stall") else mode
                proxy.delay_s = 3.0 if mode == "stall" else 0.3
            stop.wait(seconds)
            proxy.mode = "pass"
            if mode != "replace":
                timeline.spans.append((began, time.monotonic(), mode))

    def sampler() -> None:
        while not stop.wait(5):
            rss.append((time.monotonic() - start, worker_rss(master)))

    def client(index: int) -> None:
        local = random.Random(seed * 1000 + index)
        session = requests.Session()
        while not stop.is_set():
            kind, path, bound = requests_for(local, slides, hot)
            t0 = time.monotonic()
            try:
                response = session.get(base + path, timeout=READ_BOUND_S * 2)
                status, body = response.status_code, response.content
                is_json = response.headers.get("Content-Type", "").startswith(
                    "application/json")
            except requests.RequestException as exc:
                status, body, is_json = 0, str(exc).encode(), False
            elapsed = time.monotonic() - t0
            record = Record(kind if bound else "hostile", status, elapsed, t0, is_json,
                            body[:160].decode("latin-1") if status >= 500 or status == 0
                            else "")
            with lock:
                records.append(record)

    threads = [threading.Thread(target=faults, daemon=True),
               threading.Thread(target=sampler, daemon=True)]
    threads += [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    progress = Progress("soak", unit="request")
    try:
        while time.monotonic() - start < duration:
            time.sleep(1)
            progress.update(len(records) - progress.done)
    finally:
        progress.close()
        stop.set()
        for thread in threads:
            thread.join(READ_BOUND_S * 2 + 5)
    return report(records, timeline, rss, folder_bytes(str(cache_dir)), duration, log_path)


def report(records: list[Record], timeline: Timeline, rss: list[tuple[float, int]],
           cache: tuple[int, int], duration: float, log_path: Path) -> int:
    cache_bytes, wal_bytes = cache
    by_kind: dict[str, list[Record]] = defaultdict(list)
    unexpected: list[Record] = []
    for record in records:
        by_kind[record.kind].append(record)
        if record.status == 0 or record.status >= 500:
            # Storage-bound (hostile ids of missing or broken slides too): a JSON error while
            # storage was failing is the right answer; anything else is a defect.
            allowed = (record.json_error and record.status > 0
                       and timeline.faulty(record.started, record.started + record.seconds))
            if not allowed:
                unexpected.append(record)
    print(f"{'kind':<12}{'requests':>9}{'2xx/304':>9}{'4xx':>7}{'5xx ok':>8}{'5xx bad':>8}"
          f"{'p50 ms':>9}{'p99 ms':>9}{'max s':>8}")
    for kind in sorted(by_kind):
        rows = by_kind[kind]
        lat = [r.seconds * 1000 for r in rows]
        bad = sum(r in unexpected for r in rows)
        ok5 = sum(r.status >= 500 for r in rows) - bad
        print(f"{kind:<12}{len(rows):>9}{sum(r.status < 400 for r in rows if r.status):>9}"
              f"{sum(400 <= r.status < 500 for r in rows):>7}{ok5:>8}{bad:>8}"
              f"{pct(lat, 0.5):>9.0f}{pct(lat, 0.99):>9.0f}{max(lat) / 1000:>8.1f}")
    stuck = [r for r in records if r.seconds > READ_BOUND_S]
    # A bomb is refused before decoding (415), or fails as storage does during a fault phase.
    unexpected += [r for r in by_kind["bomb"] if r not in unexpected and r.status < 500
                   and (r.status != 415 or not r.json_error)]
    warm = [v for t, v in rss if t >= duration * WARM_UP]
    growth = (warm[-1] / warm[0] - 1) if len(warm) >= 2 and warm[0] else 0.0
    print(f"requests {len(records)} in {duration:.0f} s; unexpected 5xx or no answer: "
          f"{len(unexpected)}; answered after {READ_BOUND_S:.0f} s: {len(stuck)}")
    if warm:
        print(f"worker RSS after warm-up {warm[0] / 2**20:.0f} MB -> {warm[-1] / 2**20:.0f} MB "
              f"(max {max(warm) / 2**20:.0f} MB, growth {growth:+.1%}); every minute: "
              + " ".join(f"{v / 2**20:.0f}" for t, v in rss if int(t) % 60 < 5))
    print(f"tile cache folder {(cache_bytes + wal_bytes) / 2**20:.1f} MB (bound "
          f"{CACHE_LIMIT / 2**20:.0f} MB), of which {wal_bytes / 2**20:.1f} MB write-ahead log")
    print(f"fault phases: {', '.join(sorted({m for _, _, m in timeline.spans}))}; "
          f"gunicorn log: {log_path}")
    for record in unexpected[:10]:
        print(f"  unexpected: {record.kind} {record.status} after {record.seconds:.1f} s: "
              f"{record.detail}")
    ok = (not unexpected and not stuck and growth < 0.15
          and cache_bytes + wal_bytes <= CACHE_LIMIT)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(proc: subprocess.Popen[bytes], base: str, log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited with {proc.returncode}; see {log_path}")
        try:
            if requests.get(base + "/health", timeout=5).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"gunicorn did not answer /health; see {log_path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.exit(run(args.duration, args.clients, args.seed))


if __name__ == "__main__":
    main()
