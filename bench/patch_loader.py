"""DataLoader benchmark: ``python -m bench.patch_loader [--quick] [--latency-ms 20]``.

The rows of issue 10: ``torch.utils.data.DataLoader`` over a patch dataset, at 0 and 2 workers,
every row timed by OUR ``wsi_streamer.patches.torch.bench.benchmark_throughput`` (the same
window and measures for all: effective patches/s over a fixed number of batches after a
warm-up, p50 / p95 batch time, time to first batch from ``iter(loader)``, peak PSS of the
process and its workers), one fresh process per row:

- ``ours-s3`` / ``ours-local``: ``wsi_streamer.patches.torch.WsiStreamDataset``
  (``NativeBackend``, fresh ``cache_dir``) from ``bench.s3server`` and from the local files;
- ``wsistream-tiffslide-s3fs`` / ``wsistream-openslide-local``: wsistream 0.1.6's
  ``WsiStreamDataset`` (``bench.patch_loader_peer``, in ``.venv-bench``) with its TiffSlide
  backend over s3fs on the same S3 endpoint, and with its OpenSlide backend on the local files.

Same slides (``bench.patch_slides``, 12 x 40000x30000, or ``--slide-set``), configurations of
``bench.patches`` (``--configs``: A, Otsu + ``RandomSampler(224, target_mpp=0.5)``, by default;
N, the same at level 0), pool 8, 100 patches per slide, ``cycle=True``, seed 0,
batch size 32, the same ``output_dtype``, the platform's worker start method (fork) for both.
Prints a table with ratio rows and the goal, writes ``bench/out/loader-<mode>.json``.
``--quick``: 3 small slides, our rows only, few batches (< 60 s).

This module is also the row process of our two systems (``--row``); it imports only the
standard library and ``bench.patch_common`` at the top, so that a row process carries no more
than the dataset it measures (the runner's imports are inside ``main``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict
from typing import Any

from .patch_common import RUN, Spec, build_pipeline_kwargs, set_fake_aws

OURS = ("ours-s3", "ours-local")
PEERS = ("wsistream-tiffslide-s3fs", "wsistream-openslide-local")
SHORT = {"ours-s3": "ours-s3", "ours-local": "ours-local",
         "wsistream-tiffslide-s3fs": "wsistream-s3fs",
         "wsistream-openslide-local": "wsistream-local"}
#: (ratio row label, numerator, denominator)
RATIOS = [("ours-s3 / wsistream-local", "ours-s3", "wsistream-openslide-local"),
          ("ours-s3 / wsistream-s3fs", "ours-s3", "wsistream-tiffslide-s3fs")]
GOAL_WORKERS = 2
GOAL_RATIO = 1.0  # ours-s3 / wsistream-openslide-local effective patches/s, same workers
GOAL_FIRST_S = 1.0  # ours-s3 time to first batch
Row = dict[str, Any]

# --- the row process (both venvs) ------------------------------------------------------------


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def measure_row(system: str, workers: int, make_dataset: Any, slides: list[str],
                benchmark_throughput: Any, args: argparse.Namespace) -> Row:
    """One row: ``benchmark_throughput`` on ``make_dataset`` (a picklable factory with
    wsistream's signature), plus the S3 server's counters over the whole row (reset first:
    warm-up and prefetch included) and the load average before and after."""
    import torch

    from .common import S3Counters

    torch.set_num_threads(args.torch_threads)  # OMP_NUM_THREADS too (the runner sets it)
    counters = S3Counters(args.endpoint) if system.endswith("-s3") or "s3fs" in system else None
    if counters:
        counters.reset()
    load0 = loadavg()
    t0 = time.perf_counter()
    (result,) = benchmark_throughput(
        make_dataset, slides, num_workers=workers, world_size=1, pool_size=args.pool_size,
        patches_per_slide=args.patches_per_slide, patches_per_visit=1,
        batch_size=args.batch_size, warmup_batches=args.warmup_batches,
        measure_batches=args.measure_batches, seed=args.seed, verbose=False)
    wall = time.perf_counter() - t0
    s3 = counters.get() if counters else {}
    row: Row = {"system": system, "workers": workers, **asdict(result), "bench_s": wall,
                "warmup_batches": args.warmup_batches, "measure_batches": args.measure_batches,
                "loadavg_before": load0, "loadavg_after": loadavg(),
                "s3_requests": s3.get("requests"), "s3_gets": s3.get("by_op", {}).get("get"),
                "s3_bytes": s3.get("bytes")}
    return row


def row_parser(systems: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--row", choices=systems, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--spec", required=True, help="configuration spec (JSON)")
    parser.add_argument("--slides", required=True, help="JSON list of paths or s3:// URLs")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--pool-size", type=int, default=8)
    parser.add_argument("--patches-per-slide", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup-batches", type=int, default=5)
    parser.add_argument("--measure-batches", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch-threads", type=int, default=1)
    return parser


def emit(row: Row) -> None:
    sys.stdout.write(json.dumps(row) + "\n")
    sys.stdout.flush()


def make_ours_dataset(slides: list[str], pool_size: int, patches_per_slide: int,
                      patches_per_visit: int, seed: int, *, system: str, spec: Spec,
                      endpoint: str, cache_dir: str, dtype: str) -> Any:
    """The one place our dataset is built (``benchmark_throughput``'s factory signature):
    configuration from ``spec`` with our classes, ``NativeBackend``, fresh ``cache_dir``."""
    from wsi_streamer import patches
    from wsi_streamer.patches.torch import WsiStreamDataset

    kwargs = build_pipeline_kwargs(spec, patches, None, [])
    if system == "ours-s3":
        kwargs["storage_options"] = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    return WsiStreamDataset(slides, backend=patches.NativeBackend(), pool_size=pool_size,
                            patches_per_slide=patches_per_slide,
                            patches_per_visit=patches_per_visit, cycle=True, seed=seed,
                            output_dtype=dtype, cache_dir=cache_dir, **kwargs)


def ours_row_main() -> None:
    args = row_parser(OURS).parse_args()
    set_fake_aws()
    import wsi_streamer
    from wsi_streamer.patches.torch.bench import benchmark_throughput

    with tempfile.TemporaryDirectory(prefix="bench-loader-cache-") as cache_dir:
        factory = functools.partial(make_ours_dataset, system=args.row,
                                    spec=json.loads(args.spec), endpoint=args.endpoint,
                                    cache_dir=cache_dir, dtype=args.dtype)
        row = measure_row(args.row, args.workers, factory, json.loads(args.slides),
                          benchmark_throughput, args)
    row["version"] = f"wsi_streamer {wsi_streamer.__version__}"
    emit(row)


# --- the runner (project venv) ---------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return math.nan
    return a / b


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


COLUMNS = [("eff/s", "effective_sync_throughput"), ("p50 ms", "p50_batch_ms"),
           ("p95 ms", "p95_batch_ms"), ("1st batch s", "time_to_first_batch_s"),
           ("PSS MB", "peak_pss_mb")]


def table(rows: list[Row], workers_list: list[int]) -> str:
    head = (f"{'config':<7}{'workers':>7}  {'system':<28}" + "".join(f"{h:>12}" for h, _ in COLUMNS)
            + f"{'batches':>9}{'row s':>7}{'others':>8}")
    lines = [head]
    configs = list(dict.fromkeys(r.get("config", "A") for r in rows))
    for config in configs:
        for nw in workers_list:
            by = {r["system"]: r for r in rows
                  if r["workers"] == nw and r.get("config", "A") == config}
            for system, r in by.items():
                lead = f"{config:<7}{nw:>7}  {system:<28}"
                if r.get("note"):
                    lines.append(f"{lead}  {r['note']}")
                    continue
                batches = f"{r['warmup_batches']}+{r['measure_batches']}"
                lines.append(lead + "".join(f"{_num(r.get(k)):>12}" for _, k in COLUMNS)
                             + f"{batches:>9}{r['process_s']:>7.0f}{r['others_pct']:>7.0f}%")
            for label, num, den in RATIOS:
                a, b = by.get(num), by.get(den)
                if a is None or b is None or a.get("note") or b.get("note"):
                    continue
                lines.append(f"{config:<7}{nw:>7}  {label:<28}" + "".join(
                    f"{_num(ratio(a.get(k), b.get(k))) + 'x':>12}" for _, k in COLUMNS))
            lines.append("")
    return "\n".join(lines).rstrip()


def goals(rows: list[Row]) -> list[dict[str, Any]]:
    """Per configuration: ours-s3 / wsistream-openslide-local effective patches/s at
    ``GOAL_WORKERS`` workers (issue 21) and ours-s3's time to first batch."""
    out = []
    for config in dict.fromkeys(r.get("config", "A") for r in rows):
        by = {(r["system"], r["workers"]): r for r in rows
              if not r.get("note") and r.get("config", "A") == config}
        ours = by.get(("ours-s3", GOAL_WORKERS))
        local = by.get(("wsistream-openslide-local", GOAL_WORKERS))
        if ours and local:
            value = ratio(ours["effective_sync_throughput"],
                          local["effective_sync_throughput"])
            out.append({"goal": f"{config}, {GOAL_WORKERS} workers: ours-s3 / "
                                f"wsistream-openslide-local effective patches/s >= "
                                f"{GOAL_RATIO:g}x", "value": value, "met": value >= GOAL_RATIO})
        if ours:
            value = ours["time_to_first_batch_s"]
            out.append({"goal": f"{config}, {GOAL_WORKERS} workers: ours-s3 time to first "
                                f"batch < {GOAL_FIRST_S:g} s", "value": value,
                        "met": value < GOAL_FIRST_S})
    return out


def busy_cpu_s() -> float:
    """CPU seconds the whole host has spent busy (all cores, /proc/stat), or NaN."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return math.nan
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_row(python: str, module: str, system: str, workers: int, paths: list[str],
            common: list[str], timeout: float, threads: int) -> Row:
    import subprocess

    from .common import FAKE_AWS_ENV
    from .run import ROOT

    cmd = [python, "-m", module, "--row", system, "--workers", str(workers), "--slides",
           json.dumps(paths), *common]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **FAKE_AWS_ENV, "OMP_NUM_THREADS": str(threads),
                                   "MKL_NUM_THREADS": str(threads)})
    except subprocess.TimeoutExpired:
        return {"system": system, "workers": workers, "note": f"timed out after {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-3000:])
        return {"system": system, "workers": workers, "note": f"failed (rc {proc.returncode})"}
    row: Row = json.loads(lines[-1])
    row["process_s"] = time.perf_counter() - t0
    return row


def median_run(runs: list[Row]) -> Row:
    """The run with the median effective patches/s (a failed one if any failed)."""
    failed = [r for r in runs if r.get("note")]
    if failed:
        return failed[0]
    ordered = sorted(runs, key=lambda r: r["effective_sync_throughput"])
    row = ordered[(len(ordered) - 1) // 2]
    if len(runs) > 1:
        row["runs_effective"] = [round(r["effective_sync_throughput"], 2) for r in runs]
        row["runs_first_batch_s"] = [round(r["time_to_first_batch_s"], 3) for r in runs]
    return row


@dataclasses.dataclass(frozen=True)
class LoaderOptions:
    """What every loader row shares (the runner's flags)."""

    batch_size: int = 32
    dtype: str = "float32"
    warmup: int = 5
    measure: int = 40
    s3fs_batches: tuple[int, int] = (2, 10)
    torch_threads: int = 1
    repeat: int = 1
    timeout: float = 600.0


def loader_rows(configs: dict[str, Spec], systems: list[str], workers_list: list[int],
                keys: list[str], folder: str, endpoint: str, server_pid: int,
                python: str | None, opts: LoaderOptions) -> list[Row]:
    """Every (configuration, workers, system) row against a running S3 server, repeats
    interleaved (alike load for each row); each row keeps the run with the median
    effective patches/s. Peer rows need ``python`` (``.venv-bench``)."""
    from .common import cpu_seconds
    from .run import BUCKET

    runs: dict[tuple[str, int, str], list[Row]] = {}
    for i in range(max(1, opts.repeat)):
        for config, spec in configs.items():
            common = ["--spec", json.dumps(spec), "--dtype", opts.dtype, "--pool-size", "8",
                      "--patches-per-slide", "100", "--batch-size", str(opts.batch_size),
                      "--seed", "0", "--torch-threads", str(opts.torch_threads)]
            for nw in workers_list:
                for system in systems:
                    local = system.endswith("-local")
                    paths = ([os.path.join(folder, k) for k in keys] if local
                             else [f"s3://{BUCKET}/{k}" for k in keys])
                    if system in OURS:
                        exe, module = sys.executable, "bench.patch_loader"
                    elif python is not None:
                        exe, module = python, "bench.patch_loader_peer"
                    else:
                        continue
                    batches = (opts.s3fs_batches if system == "wsistream-tiffslide-s3fs"
                               else (opts.warmup, opts.measure))
                    row_args = [*common, "--endpoint", endpoint, "--warmup-batches",
                                str(batches[0]), "--measure-batches", str(batches[1])]
                    print(f"loader {config} workers={nw}: {system} (run {i + 1}) ...",
                          file=sys.stderr, flush=True)
                    cpu0, busy0, own0 = cpu_seconds(server_pid), busy_cpu_s(), children_cpu_s()
                    row = run_row(exe, module, system, nw, paths, row_args, opts.timeout,
                                  opts.torch_threads)
                    row["config"] = config
                    row["s3_server_cpu_s"] = cpu_seconds(server_pid) - cpu0
                    # the row process and its workers (reaped), and everything else on the
                    # host meanwhile (other users' work; the runner and S3 server excluded)
                    row["row_cpu_s"] = children_cpu_s() - own0
                    row["others_cpu_s"] = max(0.0, busy_cpu_s() - busy0 - row["row_cpu_s"]
                                              - row["s3_server_cpu_s"])
                    row["others_pct"] = (100 * row["others_cpu_s"] / (os.cpu_count() or 1)
                                         / row["process_s"] if row.get("process_s")
                                         else math.nan)
                    if not row.get("note"):
                        print(f"  {row['effective_sync_throughput']:.1f} patches/s, first "
                              f"batch {row['time_to_first_batch_s']:.2f} s, "
                              f"{row['process_s']:.0f} s, others {row['others_pct']:.0f}% "
                              f"of the host", file=sys.stderr, flush=True)
                    runs.setdefault((config, nw, system), []).append(row)
    return [median_run(r) for r in runs.values()]


def prepare_peer_python() -> tuple[str | None, list[str]]:
    """``.venv-bench``'s interpreter with wsistream, torch 2.13.0 (the CPU build from the local
    disk) and psutil, or None; and notes."""
    import subprocess

    from .patches import bench_python

    python, note = bench_python(create=True)
    if python is not None:
        probe = subprocess.run([python, "-c", "import torch, psutil"], capture_output=True)
        if probe.returncode != 0:  # the CPU build from the local disk, never another
            subprocess.run([python, "-m", "pip", "install", "-q", "torch==2.13.0", "psutil"],
                           check=False, timeout=900)
    return python, [note] if note else []


NOTES = ("every row timed by wsi_streamer.patches.torch.bench.benchmark_throughput in "
         "its own process: eff/s = patches over the measured batches / their wall time; "
         "p50/p95 of the time next(loader) took per measured batch; 1st batch from "
         "iter(loader) (worker start-up, slide opens, tissue detection included; the "
         "dataset is built before); PSS = peak proportional set size of the row process "
         "and its workers. batches: warm-up + measured. row s: the row's whole process "
         "(imports included); others: CPU that other work on the host took during the row, "
         "in % of all its cores (from /proc/stat, less the row's processes and the S3 "
         "server; the 1-min load averages are in the JSON). The S3 server runs on the "
         "same cores.")


def main() -> None:
    from . import make_slides, patch_report, patch_slides
    from .common import S3Counters
    from .patches import configs as bench_configs
    from .run import s3_server

    parser = argparse.ArgumentParser(description="DataLoader benchmark vs wsistream")
    parser.add_argument("--quick", action="store_true", help="3 small slides, our rows only")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--configs", default="A", help="comma-separated: A, N (as bench.patches)")
    parser.add_argument("--slide-set", choices=sorted(patch_slides.SETS),
                        help="default full (--quick: quick); medium: 8 slides of 16000x12000")
    parser.add_argument("--workers", default="0,2", help="comma-separated num_workers")
    parser.add_argument("--systems", default=",".join(OURS + PEERS))
    parser.add_argument("--no-peers", action="store_true", help="our rows only")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup-batches", type=int, help="default 5 (quick: 2)")
    parser.add_argument("--measure-batches", type=int, help="default 40 (quick: 6)")
    parser.add_argument("--s3fs-batches", default="2,10",
                        help="warm-up,measured batches of the wsistream-tiffslide-s3fs rows "
                             "(about 5-10 patches/s: 40 batches would take 2-5 min a row)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per row; the one with the median effective patches/s is kept")
    parser.add_argument("--dtype", default="float32", choices=("float32", "uint8"))
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch / OpenMP / MKL threads of every row process (default 1, "
                             "as wsistream's own benchmark pins them; DataLoader workers "
                             "use 1 anyway)")
    args = parser.parse_args()
    started = time.perf_counter()
    mode = args.slide_set or ("quick" if args.quick else "full")
    all_configs = {name: spec for name, (_, spec, recipe) in bench_configs(100)[0].items()
                   if recipe is None}
    unknown = set(args.configs.split(",")) - set(all_configs)
    if unknown:
        parser.error(f"unknown configs {sorted(unknown)}; choose among {sorted(all_configs)}")
    chosen = {c: loader_spec(all_configs[c]) for c in args.configs.split(",")}
    s3fs = tuple(int(v) for v in args.s3fs_batches.split(","))
    opts = LoaderOptions(batch_size=args.batch_size, dtype=args.dtype,
                         warmup=args.warmup_batches or (2 if args.quick else 5),
                         measure=args.measure_batches or (6 if args.quick else 40),
                         s3fs_batches=(s3fs[0], s3fs[1]), torch_threads=args.torch_threads,
                         repeat=args.repeat, timeout=90.0 if args.quick else 600.0)
    slides = patch_slides.ensure_slides(args.quick, name=args.slide_set)
    keys: list[str] = slides["keys"]
    workers_list = [int(w) for w in args.workers.split(",")]
    systems = [s for s in OURS + PEERS if s in args.systems.split(",")]
    notes: list[str] = []
    python = None
    if not args.quick and not args.no_peers and any(s in PEERS for s in systems):
        python, notes = prepare_peer_python()
    if python is None:
        systems = [s for s in systems if s not in PEERS]
    with s3_server(str(slides["dir"]), args.latency_ms) as endpoint:
        server_pid = int(S3Counters(endpoint).get()["pid"])
        rows = loader_rows(chosen, systems, workers_list, keys, str(slides["dir"]), endpoint,
                           server_pid, python, opts)
    title = loader_title(slides, mode, args.latency_ms, list(chosen), opts)
    goal_rows = goals(rows)
    print()
    print(title)
    print(f"host: {patch_report.host()}")
    print(table(rows, workers_list))
    for g in goal_rows if not args.quick else ():
        print(f"goal: {g['goal']}: {g['value']:.2f}: {'met' if g['met'] else 'NOT met'}")
    print("notes:", NOTES)
    for note in notes + [f"{r['workers']} {r['system']}: {r['note']}" for r in rows
                         if r.get("note")]:
        print("note:", note)
    os.makedirs(make_slides.OUT, exist_ok=True)
    out_json = os.path.join(make_slides.OUT, f"loader-{mode}.json")
    with open(out_json, "w") as f:
        json.dump({"title": title, "host": patch_report.host(), "latency_ms": args.latency_ms,
                   "slides": slides, "configs": chosen, "options": dataclasses.asdict(opts),
                   "rows": rows, "goals": goal_rows, "notes": notes}, f, indent=1)
    print(f"wrote {out_json} in {time.perf_counter() - started:.0f} s")
    failed = [r for r in rows if r.get("note")]
    if failed:  # a row that measured nothing fails the run (the table says which and why)
        sys.exit(f"{len(failed)} row(s) measured nothing: " + "; ".join(
            f"{r.get('config', '')} {r['system']}: {r['note']}".strip() for r in failed))


def loader_spec(spec: Spec) -> Spec:
    """A configuration of ``bench.patches`` as the loader rows run it: its components, with
    the DataLoader's own schedule (pool 8, 100 per slide, cycling, seed 0: the row flags)."""
    return {k: v for k, v in spec.items() if k not in RUN}


def loader_title(slides: dict[str, Any], mode: str, latency_ms: float, configs: list[str],
                 opts: LoaderOptions) -> str:
    spec0 = slides["spec"]
    return (f"wsi_streamer DataLoader bench ({mode}): {len(slides['keys'])} Aperio slides "
            f"{spec0['width']}x{spec0['height']} (0.25 um/px), {latency_ms:g} ms per S3 "
            f"request; configs {', '.join(configs)} (A: Otsu + RandomSampler(224, "
            f"target_mpp=0.5); N: RandomSampler(224) at level 0), pool 8, 100 patches per "
            f"slide, cycle, seed 0; batch {opts.batch_size}, {opts.dtype}, {opts.warmup} "
            f"warm-up + {opts.measure} measured batches (s3fs rows: {opts.s3fs_batches[0]} + "
            f"{opts.s3fs_batches[1]}), fork workers, world size 1, torch/OpenMP threads "
            f"{opts.torch_threads}")


if __name__ == "__main__":
    if "--row" in sys.argv:
        ours_row_main()
    else:
        main()
