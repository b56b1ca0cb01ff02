"""IIIF against native tiles, under gunicorn over the loopback S3 server (``bench.s3server``).

Rows, on the 0.25 mpp slides of ``bench.patch_slides`` (Aperio layout, levels 1/4/16/32):

- ``tiles cold`` / ``iiif cold``: N distinct level-0 tiles each, one at a time, first request
  of each (``/tiles/{id}/0/x/y.jpg`` and the IIIF request OpenSeadragon makes for the same
  tile, ``/iiif/3/{id}/{x},{y},{w},{h}/{w},/0/default.jpg``, on different tiles);
- ``tiles cached`` / ``iiif cached``: the same tiles again through both (one cache entry);
- ``region 0.5 mpp``: 1024x1024 px at 0.5 mpp (a 2048x2048 level-0 box) at random places,
  with the tiles it covers at the level read (count and stored bytes, from the file) next to
  what storage served.

Run: ``python -m bench.iiif [--quick] [--tiles N] [--latency-ms MS]``. Prints one table."""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from typing import Any

import requests
import tifffile

from . import patch_slides
from .common import FAKE_AWS_ENV, S3Counters
from .http_bench import gunicorn
from .run import BUCKET, s3_server

TILE = 256
REGION = 2048  # level-0 px: 1024 px at 0.5 mpp from 0.25 mpp


def timed_get(url: str) -> tuple[float, requests.Response]:
    t0 = time.perf_counter()
    response = requests.get(url, timeout=120)
    ms = (time.perf_counter() - t0) * 1000
    assert response.status_code == 200, (url, response.status_code, response.text[:200])
    return ms, response


def measure(counters: S3Counters, urls: list[str]) -> dict[str, float]:
    """Median ms and storage requests/bytes per URL, fetched one at a time."""
    times = []
    counters.reset()
    hits = 0
    for url in urls:
        ms, response = timed_get(url)
        times.append(ms)
        hits += response.headers.get("X-Tile-Cache-Hit") == "true"
    stats = counters.get()
    n = len(urls)
    return {"n": n, "ms": statistics.median(times), "requests": stats["requests"] / n,
            "bytes": stats["bytes"] / n, "hits": hits}


def covered_tiles(path: str, x: int, y: int, size: int) -> tuple[int, int]:
    """Tiles of level 0 covering the box and their stored bytes (level 1 has downsample 4,
    more than the request's 2, so level 0 is the one read)."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        across = -(-page.imagewidth // TILE)  # type: ignore[union-attr]
        counts = page.databytecounts  # type: ignore[union-attr]
        tiles = [(tx, ty) for ty in range(y // TILE, (y + size - 1) // TILE + 1)
                 for tx in range(x // TILE, (x + size - 1) // TILE + 1)]
        return len(tiles), sum(int(counts[ty * across + tx]) for tx, ty in tiles)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small slides, few requests")
    parser.add_argument("--tiles", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    os.environ.update(FAKE_AWS_ENV)
    slides = patch_slides.ensure_slides(args.quick)
    key = slides["keys"][0]
    path = os.path.join(slides["dir"], key)
    with tifffile.TiffFile(path) as tif:
        width, height = tif.pages[0].imagewidth, tif.pages[0].imagelength  # type: ignore
    n = args.tiles or (8 if args.quick else 40)
    rng = random.Random(0)
    grid = [(x, y) for y in range(height // TILE) for x in range(width // TILE)]
    picked = rng.sample(grid, 2 * n)
    a, b = picked[:n], picked[n:]
    rows: list[tuple[str, dict[str, Any]]] = []
    log = os.path.join(patch_slides.ms.OUT, "gunicorn-iiif.log")
    with s3_server(slides["dir"], args.latency_ms) as endpoint:
        counters = S3Counters(endpoint)
        with gunicorn(endpoint, BUCKET, log) as server:
            timed_get(f"{server.base}/slides/{key}")  # open the slide (not measured)

            def tile(x: int, y: int) -> str:
                return f"{server.base}/tiles/{key}/0/{x}/{y}.jpg"

            def iiif(x: int, y: int) -> str:
                return (f"{server.base}/iiif/3/{key}/{x * TILE},{y * TILE},{TILE},{TILE}/"
                        f"{TILE},/0/default.jpg")

            rows.append(("tiles cold", measure(counters, [tile(*t) for t in a])))
            rows.append(("iiif cold", measure(counters, [iiif(*t) for t in b])))
            rows.append(("tiles cached", measure(counters, [tile(*t) for t in a + b])))
            rows.append(("iiif cached", measure(counters, [iiif(*t) for t in a + b])))
            regions = []
            for _ in range(3 if args.quick else 8):
                x = rng.randrange(0, width - REGION) // 16 * 16
                y = rng.randrange(0, height - REGION) // 16 * 16
                regions.append((x, y))
            stats = measure(counters, [f"{server.base}/iiif/3/{key}/{x},{y},{REGION},{REGION}/"
                                       "1024,1024/0/default.jpg" for x, y in regions])
            covered = [covered_tiles(path, x, y, REGION) for x, y in regions]
            stats["tiles_covered"] = statistics.mean(c for c, _ in covered)
            stats["covered_bytes"] = statistics.mean(b for _, b in covered)
            rows.append(("region 0.5 mpp", stats))
    print(f"slide {key} {width}x{height} (0.25 mpp), {n} tiles per cold row, latency "
          f"{args.latency_ms:g} ms")
    print(f"{'row':<16}{'n':>4}{'median ms':>11}{'S3 req/img':>12}{'S3 KiB/img':>12}"
          f"{'cache hits':>11}{'tiles cov.':>11}{'cov. KiB':>10}")
    for name, r in rows:
        cov = (f"{r['tiles_covered']:>11.1f}{r['covered_bytes'] / 1024:>10.0f}"
               if "tiles_covered" in r else "")
        print(f"{name:<16}{r['n']:>4}{r['ms']:>11.2f}{r['requests']:>12.2f}"
              f"{r['bytes'] / 1024:>12.1f}{r['hits']:>11}{cov}")
    cold = rows[1][1]["ms"] / rows[0][1]["ms"]
    cached = rows[3][1]["ms"] / rows[2][1]["ms"]
    print(f"iiif/tiles median: cold {cold:.2f}, cached {cached:.2f} (goal within 1.10)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
