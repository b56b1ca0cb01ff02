"""The floor of the patch benchmark: what the patches of a configuration cost when nothing but
their tiles is decoded and assembled (issue 21's "floor" row).

``python -m bench.patch_floor --config NAME --spec JSON --slides JSON --expected N`` (local
files) first runs our pipeline on the slides, untimed, to learn the patches it emits (level,
level-0 box, output size); then, with every needed tile's stored bytes already in memory, it
times only this per patch: decode exactly the tiles the box touches with libjpeg-turbo (at
1/2, 1/4 or 1/8 in the DCT domain when the output is that fraction of the box, from the
box's origin moved onto that factor's grid), paste them into a canvas of the box, crop (and
resize when the ratio is no power of two). No I/O, no opens, no tissue detection, no Python
above one call per tile. Prints one JSON row (``cpu_s`` and ``seconds`` of that loop).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import tempfile
import time
from typing import Any

from .patch_common import build_pipeline_kwargs, emit, set_fake_aws


def collect(slides: list[str], kwargs: dict[str, Any], cache_dir: str) -> list[Any]:
    """The coordinates our pipeline emits on ``slides`` (local files)."""
    from wsi_streamer.patches import NativeBackend, PatchPipeline

    pipeline = PatchPipeline(slides, **{"backend": NativeBackend(), **kwargs,
                                        "cache_dir": cache_dir})
    return [result.coordinate for result in pipeline]


def plan(slide: Any, coord: Any) -> tuple[int, list[tuple[int, int]], tuple[int, ...], int]:
    """``(level, tiles, box in reduced level pixels, factor)`` of one patch."""
    from wsi_streamer.slide.region import dct_factor, dct_origin, tile_span

    out = coord.out_size
    info = slide.level(coord.level)
    k = dct_factor(coord.patch_size, coord.patch_size, (out, out))
    x, y = dct_origin(info.downsample, coord.x, coord.y, k) if k > 1 else (coord.x, coord.y)
    lx, ly = round(x / info.downsample), round(y / info.downsample)
    x0, y0, x1, y1 = tile_span(info, lx, ly, coord.patch_size, coord.patch_size)
    tiles = [(tx, ty) for ty in range(y0, y1 + 1) for tx in range(x0, x1 + 1)]
    box = (lx // k, ly // k, (lx + coord.patch_size) // k, (ly + coord.patch_size) // k)
    return coord.level, tiles, box, k


def floor_loop(jobs: list[tuple[Any, ...]]) -> None:
    """The timed part: decode + paste + crop per patch (tile bytes and heads in memory)."""
    from PIL import Image

    for head, datas, positions, size, tw, box, out, k in jobs:
        canvas = Image.new("RGB", size, None)
        for data, (px, py) in zip(datas, positions, strict=True):
            tile = Image.frombytes("RGB", (tw, tw), head + data[2:], "jpeg", "RGB", "", k, 0)
            canvas.paste(tile, (px, py))
        image = canvas if canvas.size == (out, out) else canvas.resize((out, out), box=box)
        image.tobytes()  # the array the pipeline hands over


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--spec", required=True, help="configuration spec (JSON)")
    parser.add_argument("--slides", required=True, help="JSON list of local paths")
    parser.add_argument("--expected", type=int, default=0)
    args = parser.parse_args()
    set_fake_aws()
    from wsi_streamer import patches
    from wsi_streamer.slide.reader import open_slide

    dropped: list[str] = []
    kwargs = build_pipeline_kwargs(json.loads(args.spec), patches, None, dropped)
    with tempfile.TemporaryDirectory(prefix="bench-floor-cache-") as cache_dir:
        coords = collect(json.loads(args.slides), kwargs, cache_dir)
    slides: dict[str, Any] = {}
    jobs = []
    for coord in coords:
        path = os.path.realpath(coord.slide_path)
        slide = slides.get(path) or slides.setdefault(path, open_slide(path))
        level, tiles, box, k = plan(slide, coord)
        head = slide._level_jpeg(level).abbreviated  # prefix: SOI, Adobe, the level's tables
        tw = slide.level(level).tile_width // k
        left, top = box[0], box[1]
        positions = [(tx * tw - left, ty * tw - top) for tx, ty in tiles]
        size = (box[2] - box[0], box[3] - box[1])
        local = (0.0, 0.0, float(size[0]), float(size[1]))
        jobs.append((head, slide.read_raw_tiles(level, tiles), positions, size, tw, local,
                     coord.out_size, k))
    cpu0, t0 = time.process_time(), time.perf_counter()
    floor_loop(jobs)
    cpu, seconds = time.process_time() - cpu0, time.perf_counter() - t0
    n = len(jobs)
    emit({"system": "floor-decode", "config": args.config, "patches": n, "seconds": seconds,
          "ttfp_s": math.nan, "patches_per_s": n / seconds if seconds else math.nan,
          "steady_per_s": math.nan, "cpu_s": cpu, "load_1m": os.getloadavg()[0],
          "tiles_per_patch": sum(len(j[1]) for j in jobs) / max(1, n),
          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          "stats": {}, "dropped": sorted(set(dropped))})


if __name__ == "__main__":
    main()
