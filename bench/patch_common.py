"""Shared by both sides of the patch benchmark (standard library only, so it imports in the
project venv and in ``.venv-bench``): the configurations as neutral data, building them with one
library's classes, and the measurement loop that every system runs in its own process.

A configuration is a dict of ``PatchPipeline`` keyword arguments in which a component is
``{"class": "RandomSampler", "args": {...}}``. Both libraries use the same class and argument
names (``wsi_streamer.patches`` keeps wsistream's), so one spec builds either side; arguments a
class does not take are dropped and reported.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from wsi_streamer.progress import Progress

from .common import S3Counters

Spec = dict[str, Any]

#: The knobs every run shares (the issue's protocol): pool of 8 slides, 100 attempts per slide,
#: one pass (no cycling), a fixed seed.
RUN = {"pool_size": 8, "patches_per_slide": 100, "cycle": False, "seed": 0}

#: Config A: Otsu, RandomSampler(224, target_mpp=0.5), no filter, no transforms.
CONFIG_A: Spec = {
    "tissue_detector": {"class": "OtsuTissueDetector", "args": {}},
    "sampler": {"class": "RandomSampler", "args": {"patch_size": 224, "target_mpp": 0.5}},
}

#: ``PatchPipeline`` arguments wsistream 0.1.x knows (ours adds storage, cache and I/O ones).
WSISTREAM_PIPELINE_ARGS = (
    "tissue_detector", "sampler", "patch_filter", "transforms", "dataset_adapter",
    "thumbnail_size", "slide_sampling", "pool_size", "patches_per_slide", "patches_per_visit",
    "cycle", "replacement", "seed", "views", "shared_transforms", "tissue_mask_cache_size")
_TUPLES = {"hue_range", "sat_range", "val_range", "thumbnail_size", "mpp_range", "scale",
           "ratio", "mean", "std"}


def with_run(spec: Spec, **overrides: Any) -> Spec:
    """``spec`` with the shared run knobs (``RUN``) and ``overrides`` applied."""
    return {**spec, **RUN, **overrides}


def describe(value: Any) -> Any:
    """A JSON-able spec of a component (its constructor arguments, read back from the object's
    attributes of the same name, or ``_name``) or of a plain value."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in value.items()}
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()  # a numpy scalar
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = [f.name for f in dataclasses.fields(value) if f.init]
    else:
        params = inspect.signature(type(value).__init__).parameters.values()
        names = [p.name for p in params if p.name != "self"
                 and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    args = {}
    for name in names:
        for attr in (name, "_" + name):
            if hasattr(value, attr):
                args[name] = describe(getattr(value, attr))
                break
    return {"class": type(value).__name__, "args": args}


def build(spec: Any, namespace: Any, dropped: list[str]) -> Any:
    """Objects from ``spec``, classes looked up on ``namespace`` (a module); arguments a class
    does not accept are left out and listed in ``dropped``."""
    if isinstance(spec, list):
        return [build(v, namespace, dropped) for v in spec]
    if not (isinstance(spec, dict) and "class" in spec):
        return spec
    cls = getattr(namespace, spec["class"])
    accepted = inspect.signature(cls).parameters
    args = {}
    for name, value in spec.get("args", {}).items():
        if name not in accepted:
            dropped.append(f"{spec['class']}.{name}")
            continue
        built = build(value, namespace, dropped)
        args[name] = tuple(built) if name in _TUPLES and isinstance(built, list) else built
    return cls(**args)


def build_pipeline_kwargs(spec: Spec, namespace: Any, known: Iterable[str] | None,
                          dropped: list[str]) -> dict[str, Any]:
    """``PatchPipeline`` keyword arguments from a configuration spec."""
    out = {}
    for name, value in spec.items():
        if known is not None and name not in known:
            dropped.append(f"PatchPipeline.{name}")
            continue
        built = build(value, namespace, dropped)
        out[name] = tuple(built) if name in _TUPLES and isinstance(built, list) else built
    return out


def _rchar() -> int:
    """Bytes this process has read through read()-like syscalls (files, sockets)."""
    try:
        with open("/proc/self/io") as f:
            return int(dict(line.split(": ") for line in f.read().splitlines())["rchar"])
    except (OSError, KeyError, ValueError):
        return 0


def measure(system: str, config: str, make: Callable[[], Any], expected: int,
            endpoint: str | None, io_keys: tuple[str, str] | None = None) -> dict[str, Any]:
    """Build the pipeline with ``make`` (timed: a system may do work at construction), iterate
    it to the end, and return the row: patches, time to first patch, patches/s (whole run and
    after the first patch), S3 requests/GETs/bytes from the S3 server's own counters (reset
    first), bytes read by the process, peak RSS and the pipeline's ``stats_dict()``."""
    counters = S3Counters(endpoint) if endpoint else None
    if counters:
        counters.reset()
    rchar0 = _rchar()
    bar = Progress(f"{system} {config}", total=expected, unit="patch")
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    pipeline = make()
    first = math.nan
    n, shapes = 0, set()
    for result in pipeline:
        if n == 0:
            first = time.perf_counter() - t0
        n += 1
        image = result.image if result.image is not None else next(iter(result.views.values()))
        shapes.add(tuple(image.shape))
        bar.update(1)
    total = time.perf_counter() - t0
    cpu = time.process_time() - cpu0  # every thread of the row process
    bar.close()
    stats = {k: v for k, v in pipeline.stats_dict().items()
             if isinstance(v, (int, float))}
    s3 = counters.get() if counters else {}
    row: dict[str, Any] = {
        "system": system, "config": config, "patches": n, "seconds": total, "ttfp_s": first,
        "patches_per_s": n / total if total > 0 else math.nan,
        "cpu_s": cpu, "load_1m": os.getloadavg()[0],
        "steady_per_s": (n - 1) / (total - first) if n > 1 and total > first else math.nan,
        "s3_requests": s3.get("requests"), "s3_gets": s3.get("by_op", {}).get("get"),
        "s3_bytes": s3.get("bytes"), "read_bytes": _rchar() - rchar0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "shapes": sorted(list(s) for s in shapes), "stats": stats}
    if io_keys is not None:  # the pipeline's own count of storage requests and bytes
        row["own_requests"], row["own_bytes"] = (stats.get(io_keys[0]), stats.get(io_keys[1]))
    return row


def emit(row: dict[str, Any]) -> None:
    """The result line the runner reads: the last line of stdout."""
    sys.stdout.write(json.dumps(row) + "\n")
    sys.stdout.flush()


def set_fake_aws() -> None:
    from .common import FAKE_AWS_ENV

    for name, value in FAKE_AWS_ENV.items():
        os.environ.setdefault(name, value)
