"""Benchmark runner: ``python -m bench.run [--quick] [--latency-ms 20]``.

Starts ``bench.s3server`` in its own process (O(range) ranged GETs, injected latency, request
counters) over the generated slides, then measures on the same objects and tiles: (a) our engine
in-process, (b) our server under gunicorn (when it exists), (c) peers in ``.venv-bench``
(created on first use: recent s3fs + tiffslide + OpenSlide). Prints one table, writes
``bench/out/results-<mode>.json`` and ``bench/out/bench-<mode>.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import make_slides
from .common import FAKE_AWS_ENV, Result, S3Counters
from .engine_bench import run_engine
from .http_bench import baseline_ms, gunicorn, run_server, server_available
from .peers import PEERS
from .report import plot, server_details, table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_VENV = os.path.join(ROOT, ".venv-bench")
BENCH_PACKAGES = ["tiffslide>=2.4", "s3fs>=2024.1", "matplotlib>=3.8", "openslide-python>=1.4",
                  "openslide-bin>=4.0", "imagecodecs", "boto3", "numpy", "pillow"]
BUCKET = "bench"


def bench_python() -> str | None:
    """The ``.venv-bench`` interpreter, creating the venv on first use; None if impossible."""
    python = os.path.join(BENCH_VENV, "bin", "python")
    probe = [python, "-c", "import tiffslide, s3fs, openslide, matplotlib"]
    if os.path.exists(python) and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"creating {BENCH_VENV} (peers: {', '.join(BENCH_PACKAGES)}) ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", BENCH_VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *BENCH_PACKAGES], check=True,
                       timeout=600)
        subprocess.run(probe, check=True)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"peers skipped: cannot prepare {BENCH_VENV}: {exc}")
        return None
    return python


@contextmanager
def s3_server(root: str, latency_ms: float) -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.s3server", "--root", root, "--bucket",
                             BUCKET, "--latency-ms", str(latency_ms)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = json.loads(proc.stdout.readline())["port"]
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def pick_tiles(spec: make_slides.Spec, n_cold: int, n_par: int) -> dict[str, Any]:
    tx, ty = -(-spec.width // 256), -(-spec.height // 256)
    rng = random.Random(1234)
    picked = rng.sample([(x, y) for y in range(ty) for x in range(tx)], 1 + n_cold + n_par)
    return {"first": picked[0], "cold": picked[1 : 1 + n_cold], "parallel": picked[1 + n_cold :]}


def run_peer(python: str, endpoint: str, key: str, peer: str, tiles: dict[str, Any]) -> Row:
    arg = json.dumps({"first": tiles["first"], "cold": tiles["cold"]})
    proc = subprocess.run([python, "-m", "bench.peers", "--endpoint", endpoint, "--bucket",
                           BUCKET, "--key", key, "--peer", peer, "--tiles", arg], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        print(f"peer {peer} on {key} failed:\n{proc.stderr[-2000:]}")
        return dataclasses.asdict(Result(system=peer, slide=key, note="failed"))
    row: Row = json.loads(proc.stdout.strip().splitlines()[-1])
    return row


Row = dict[str, Any]


def main() -> None:
    parser = argparse.ArgumentParser(description="wsi_streamer benchmark")
    parser.add_argument("--quick", action="store_true", help="small slides, few tiles (CI)")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--tiles", type=int, help="cold tiles per system (default 8 / 40)")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--no-server", action="store_true")
    args = parser.parse_args()
    os.environ.update(FAKE_AWS_ENV)
    mode = "quick" if args.quick else "full"
    started = time.perf_counter()
    spec = make_slides.QUICK if args.quick else make_slides.FULL
    slides = make_slides.ensure_slides(args.quick)
    keys = [slides["aperio"], slides["libvips"]]
    n_cold = args.tiles or (8 if args.quick else 40)
    tiles = pick_tiles(spec, n_cold, 64 if args.quick else 256)
    python = None if args.no_peers else bench_python()
    notes: list[str] = []
    rows: list[Row] = []
    base_ms: float | None = None
    with s3_server(slides["dir"], args.latency_ms) as endpoint:
        counters = S3Counters(endpoint)
        for key in keys:
            print(f"engine: {key}", flush=True)
            rows.append(dataclasses.asdict(run_engine(endpoint, BUCKET, key, tiles["first"],
                                                      tiles["cold"], tiles["parallel"])))
            for peer in PEERS if python is not None else ():
                assert python is not None
                print(f"peer {peer}: {key}", flush=True)
                rows.append(run_peer(python, endpoint, key, peer, tiles))
        why = "disabled (--no-server)" if args.no_server else server_available()
        if why is None:
            log = os.path.join(make_slides.OUT, f"gunicorn-{mode}.log")
            try:
                cached_n = 256 if args.quick else 1024
                with gunicorn(endpoint, BUCKET, log) as server, gunicorn(
                        endpoint, BUCKET, log + ".trivial",
                        app="bench.trivial_app:create_app()") as trivial:
                    base_ms = baseline_ms(server.base)
                    for key in keys:
                        print(f"server: {key}", flush=True)
                        rows.append(dataclasses.asdict(run_server(
                            server, counters, key, tiles["first"], tiles["cold"],
                            tiles["parallel"], cached_n, trivial)))
            except (RuntimeError, OSError) as exc:
                notes.append(f"server skipped: {exc}")
        else:
            notes.append(f"server skipped: {why}")
    if not python and not args.no_peers:
        notes.append("peers skipped: no .venv-bench")
    title = (f"wsi_streamer bench ({mode}: {spec.width}x{spec.height}, {args.latency_ms:g} ms "
             f"injected S3 latency, {n_cold} cold tiles)")
    print()
    print(title)
    print(table(rows))
    if any(r["system"] == "server" for r in rows):
        print(server_details(rows, base_ms))
    print("notes: tile times include decoding (server: also JPEG encoding and HTTP). 'download' "
          "reads tiles from local disk after fetching the whole object; s3fs-default does the "
          "same for objects under 50 MiB. 'x/best': ours / best streaming peer per column "
          "(min for costs, max for tiles/s; peers with no S3 request per cold tile and zero "
          "values are not ranked). Server: 'open'"
          " happens inside its first tile request; 32c = 32 client threads.")
    for note in notes:
        print("note:", note)
    out_json = os.path.join(make_slides.OUT, f"results-{mode}.json")
    with open(out_json, "w") as f:
        json.dump({"title": title, "rows": rows, "baseline_ms": base_ms, "notes": notes}, f,
                  indent=1)
    png = os.path.join(make_slides.OUT, f"bench-{mode}.png")
    try:
        plot(rows, png, title)
    except ImportError:
        if python:
            subprocess.run([python, "-m", "bench.report", out_json, png], cwd=ROOT, check=False)
    print(f"wrote {out_json} and {png} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
