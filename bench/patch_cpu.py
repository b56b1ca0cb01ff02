"""Where the CPU of a patch goes: ``python -m bench.patch_cpu --system ours-local|ours-s3
--config A|N [--slide-set medium] [--io-threads N] [--prefetch N]``.

Runs our pipeline once (as ``bench.patch_ours`` does: fresh ``cache_dir``, one process) with
the main steps wrapped by per-thread CPU clocks (``time.thread_time``), each step charged only
its own time (a step inside another is taken out of the outer one): opening (structure,
thumbnail fetch/decode/resample, tissue detection, tables), planning (sampler tables, draws,
hand-off to the readers), per patch (tile fetch, S3 GET client, decode, assembly and
resampling, the rest of the read), the consumer (results, tissue fraction) and what no step
accounts for in each thread pool (queues, futures, GIL hand-offs). Prints ms of CPU per patch
per step and the process total (``time.process_time``), so the steps can be compared with
what the whole run cost. The clocks cost about 1 us a call: the run is a little slower than
``bench.patches`` measures it. ``--again``: a second pipeline in the same process on the same
``cache_dir`` (the host cache warm: no detection, no structure parse), so the difference
between the two is what opening costs per patch (and the process's first-use costs).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures.thread as cft
import functools
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from . import patch_slides
from .patch_common import build_pipeline_kwargs, set_fake_aws
from .patch_ours import make_ours
from .run import BUCKET, s3_server

_tls = threading.local()
_lock = threading.Lock()
TOTALS: collections.Counter[str] = collections.Counter()
CALLS: collections.Counter[str] = collections.Counter()
THREADS: dict[int, tuple[str, int]] = {}  # ident -> (name, cpu clock id)
ENDED: collections.Counter[str] = collections.Counter()  # CPU of threads that ended, by pool


def _charge(label: str, seconds: float) -> None:
    with _lock:
        TOTALS[label] += seconds


def wrap(owner: Any, name: str, label: str) -> None:
    """Charge calls of ``owner.name`` to ``label`` (exclusive of wrapped calls inside)."""
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        stack = getattr(_tls, "stack", None)
        if stack is None:
            stack = _tls.stack = []
        now = time.thread_time()
        if stack:
            _charge(stack[-1][0], now - stack[-1][1])
        outer = stack[0][0].split(":")[0] if stack else ""
        key = f"{outer}:{label}" if outer and not label.startswith(outer + ":") else label
        stack.append([key, now])
        try:
            return fn(*args, **kwargs)
        finally:
            end = time.thread_time()
            entry = stack.pop()
            _charge(entry[0], end - entry[1])
            with _lock:
                CALLS[entry[0]] += 1
            if stack:
                stack[-1][1] = end

    setattr(owner, name, timed)


def _pool_of(name: str) -> str:
    return name.rsplit("_", 1)[0] if "_" in name else name


def _track_workers() -> None:
    """Record each pool thread's CPU clock (read at the end, or when the thread ends)."""
    real: Callable[..., Any] = cft._worker  # type: ignore[attr-defined]

    def worker(*args: Any, **kwargs: Any) -> Any:
        me = threading.current_thread()
        THREADS[me.ident or 0] = (me.name, time.pthread_getcpuclockid(me.ident or 0))
        try:
            return real(*args, **kwargs)
        finally:
            with _lock:
                ENDED[_pool_of(me.name)] += time.thread_time()
                THREADS.pop(me.ident or 0, None)

    cft._worker = worker  # type: ignore[attr-defined]


def instrument() -> None:
    from wsi_streamer.format.tiff.slide import TiffSlide
    from wsi_streamer.io import s3 as s3mod
    from wsi_streamer.io.block_cache import BlockStore
    from wsi_streamer.patches import engine, pipeline
    from wsi_streamer.patches.backends import native
    from wsi_streamer.patches.masks import MaskStore
    from wsi_streamer.slide import region

    wrap(pipeline.PatchPipeline, "open_for_pool", "open")
    wrap(native.NativeBackend, "open_slide", "open:structure")
    wrap(native.NativeSlide, "get_thumbnail_fit", "open:thumbnail")  # get_thumbnail too
    wrap(MaskStore, "detect", "open:detect")
    wrap(pipeline.PatchPipeline, "make_entry", "plan:entry")
    wrap(engine.StreamRun, "next_task", "plan:draw")
    wrap(engine.StreamRun, "plan", "plan")
    wrap(pipeline.PatchPipeline, "read_patch", "read")
    wrap(TiffSlide, "read_raw_tiles", "fetch")
    wrap(BlockStore, "_fetch_group", "fetch:storage")
    wrap(s3mod, "_get_range", "s3-get")
    wrap(TiffSlide, "decode_tile", "decode")
    wrap(region, "_finish", "crop/resample")
    wrap(engine.StreamRun, "finish", "consume")
    _track_workers()


def report(cpu: float, patches: int, main_cpu: float) -> dict[str, Any]:
    pools: collections.Counter[str] = collections.Counter(ENDED)
    for name, clock in list(THREADS.values()):
        pools[_pool_of(name)] += time.clock_gettime(clock)
    pools["main"] = main_cpu
    per = 1000.0 / max(1, patches)
    steps = {k: round(v * per, 3) for k, v in sorted(TOTALS.items(), key=lambda kv: -kv[1])}
    threads = {k: round(v * per, 3) for k, v in pools.items()}
    return {"patches": patches, "process_ms_per_patch": round(cpu * per, 3),
            "steps_ms_per_patch": steps, "threads_ms_per_patch": threads,
            "steps_sum": round(sum(TOTALS.values()) * per, 3),
            "calls": dict(CALLS), "load_1m": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--system", choices=("ours-s3", "ours-local"), required=True)
    parser.add_argument("--config", choices=("A", "N"), required=True)
    parser.add_argument("--slide-set", choices=sorted(patch_slides.SETS), default="medium")
    parser.add_argument("--patches-per-slide", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--io-threads", type=int)
    parser.add_argument("--prefetch", type=int)
    parser.add_argument("--again", action="store_true",
                        help="then run a second pipeline on the same cache_dir (masks and "
                             "structures from the host cache) and print its figures too")
    args = parser.parse_args()
    set_fake_aws()
    from wsi_streamer import patches

    from .patches import configs

    slides = patch_slides.ensure_slides(False, name=args.slide_set)
    spec = configs(args.patches_per_slide)[0][args.config][1]
    kwargs = build_pipeline_kwargs(spec, patches, None, [])
    for knob in ("io_threads", "prefetch"):
        if getattr(args, knob) is not None:
            kwargs[knob] = getattr(args, knob)
    instrument()
    with s3_server(str(slides["dir"]), args.latency_ms) as endpoint:
        paths = ([os.path.join(slides["dir"], k) for k in slides["keys"]]
                 if args.system == "ours-local"
                 else [f"s3://{BUCKET}/{k}" for k in slides["keys"]])
        with tempfile.TemporaryDirectory(prefix="bench-patch-cache-") as cache_dir:
            for host_cache in ("cold", "warm")[:1 + args.again]:
                for counter in (TOTALS, CALLS, ENDED):
                    counter.clear()
                main0, cpu0, t0 = time.thread_time(), time.process_time(), time.perf_counter()
                n = sum(1 for _ in make_ours(args.system, paths, kwargs, endpoint, cache_dir))
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
                main_cpu = time.thread_time() - main0
                if n == 0:
                    raise SystemExit(f"bench.patch_cpu: {args.system} {args.config} yielded "
                                     "no patch")
                out = report(cpu, n, main_cpu)
                out.update(system=args.system, config=args.config, host_cache=host_cache,
                           seconds=round(wall, 2), patches_per_s=round(n / wall, 1),
                           kwargs={k: kwargs.get(k) for k in ("io_threads", "prefetch")})
                print(json.dumps(out, indent=1), flush=True)


if __name__ == "__main__":
    main()
