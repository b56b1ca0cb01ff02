"""Patch-streaming benchmark: ``python -m bench.patches [--quick] [--latency-ms 20]``.

On one set of large Aperio slides (``bench.patch_slides``: real CMU-1 tissue islands, 0.25 um/px,
levels at downsample 1/4/16/32) served by ``bench.s3server`` (O(range) GETs, injected latency,
its own request counters), it runs, one process per row and configuration:

- ``ours-s3`` / ``ours-local``: ``wsi_streamer.patches.PatchPipeline`` (``NativeBackend``) from
  S3 and from the local files (``bench.patch_ours``, project venv, fresh ``cache_dir``);
- ``ours-dicom-s3``: the same, from S3, on the same slides converted to DICOM WSI series by
  wsidicomizer (``patch_slides.ensure_dicom``: the same JPEG tiles, one prefix per slide); not
  in ``--quick`` unless ``--systems`` names it;
- ``wsistream-tiffslide-s3fs`` / ``wsistream-openslide-local``: wsistream 0.1.x from PyPI with
  its TiffSlide backend over s3fs on the same S3 endpoint, and with its OpenSlide backend on the
  local files (``bench.patch_peers``, in ``.venv-bench``, created on first use).

After them (not in ``--quick``), the DataLoader rows of configurations A and N
(``bench.patch_loader``: 2 workers by default, ``--loader-workers``) for ``LOADER_SYSTEMS`` on
the same slides and S3 server, with their own table and goals.

Configurations: A (Otsu, ``RandomSampler(224, target_mpp=0.5)``, no filter, no transforms) and
B (the Midnight recipe: ours from ``recipes.midnight()``, wsistream's built from it with its own
classes), both with pool 8, 100 attempts per slide, no cycling, seed 0. Prints one table
(patches/s, time to first patch, GETs and KB per patch, peak memory, ratios) and writes
``bench/out/patches-<mode>.json``. ``--quick``: 3 small slides, 20 attempts per slide, our rows
(and wsistream's only if ``.venv-bench`` already has it); CI runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from . import make_slides, patch_loader, patch_ours, patch_report, patch_slides
from .common import FAKE_AWS_ENV, S3Counters, cpu_seconds
from .patch_common import CONFIG_A, Spec, with_run
from .run import BENCH_PACKAGES, BENCH_VENV, BUCKET, ROOT, s3_server

PEER_PACKAGES = ["wsistream[tiffslide,openslide]==0.1.6", "tqdm"]
OURS = ("ours-s3", "ours-local", "ours-dicom-s3")
DICOM = "ours-dicom-s3"  # the same slides as DICOM WSI series (one S3 prefix each)
FLOOR = "floor-decode"  # decode + assemble only (``bench.patch_floor``), local files
PEERS = ("wsistream-tiffslide-s3fs", "wsistream-openslide-local")
#: The DataLoader rows' systems (issue 21: ours-s3 against wsistream + OpenSlide on local files)
LOADER_SYSTEMS = ("ours-s3", "ours-local", "wsistream-openslide-local")
Row = dict[str, Any]


def bench_python(create: bool) -> tuple[str | None, str]:
    """The ``.venv-bench`` interpreter with wsistream (installed into it, or the venv created,
    when ``create``), else None; and a note."""
    python = os.path.join(BENCH_VENV, "bin", "python")
    probe = [python, "-c", "import wsistream, tiffslide, s3fs, openslide, cv2"]
    if os.path.exists(python) and subprocess.run(probe, capture_output=True).returncode == 0:
        return python, ""
    if not create:
        return None, "wsistream rows skipped: .venv-bench has no wsistream (run without --quick)"
    print(f"preparing {BENCH_VENV} ({', '.join(PEER_PACKAGES)}) ...", flush=True)
    try:
        if not os.path.exists(python):
            subprocess.run([sys.executable, "-m", "venv", BENCH_VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *BENCH_PACKAGES, *PEER_PACKAGES],
                       check=True, timeout=900)
        subprocess.run(probe, check=True)
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"wsistream rows skipped: cannot prepare {BENCH_VENV}: {exc}"
    return python, ""


def configs(ppslide: int) -> tuple[dict[str, tuple[str, Spec, str | None]], list[str]]:
    """``{name: (description, spec, our recipe or None)}`` and notes."""
    notes: list[str] = []
    midnight = patch_ours.recipe_spec("midnight")
    native = {**CONFIG_A, "sampler": {"class": "RandomSampler", "args": {"patch_size": 224}}}
    return {"A": ("Otsu + RandomSampler(224, target_mpp=0.5), no filter/transforms",
                  with_run(CONFIG_A, patches_per_slide=ppslide), None),
            "N": ("Otsu + RandomSampler(224) at level 0 (the same work for every system)",
                  with_run(native, patches_per_slide=ppslide), None),
            "B": ("Midnight recipe", with_run(midnight, patches_per_slide=ppslide),
                  "midnight")}, notes


def run_row(system: str, config: str, spec: Spec, recipe: str | None, slides: list[str],
            endpoint: str, python: str, expected: int, timeout: float) -> Row:
    """One system and configuration in a fresh process; its progress bar goes to stderr."""
    module = "bench.patch_ours" if system in OURS else "bench.patch_peers"
    cmd = [python, "-m", module, "--system", system, "--config", config, "--spec",
           json.dumps(spec), "--slides", json.dumps(slides), "--endpoint", endpoint,
           "--expected", str(expected)]
    if system == FLOOR:
        cmd = [python, "-m", "bench.patch_floor", "--config", config, "--spec",
               json.dumps(spec), "--slides", json.dumps(slides), "--expected", str(expected)]
    if recipe and system in OURS:
        cmd += ["--recipe", recipe]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              timeout=timeout, env={**os.environ, **FAKE_AWS_ENV})
    except subprocess.TimeoutExpired:
        return {"system": system, "config": config, "note": f"timed out after {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"system": system, "config": config, "note": f"failed (rc {proc.returncode})"}
    row: Row = json.loads(lines[-1])
    return row


def median_run(runs: list[Row]) -> Row:
    """The run with the median patches/s (a failed one if any failed); all rates kept."""
    failed = [r for r in runs if r.get("note")]
    if failed:
        return failed[0]
    ordered = sorted(runs, key=lambda r: r["patches_per_s"])
    row = ordered[(len(ordered) - 1) // 2]
    row["runs_patches_per_s"] = [round(r["patches_per_s"], 2) for r in runs]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description="patch-streaming benchmark vs wsistream")
    parser.add_argument("--quick", action="store_true", help="3 small slides, our rows (CI)")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--patches-per-slide", type=int, help="default 100 (quick: 20)")
    parser.add_argument("--configs", default="A,B",
                        help="comma-separated: A, B, N (native 224 px at level 0)")
    parser.add_argument("--systems", default=",".join(OURS + PEERS + (FLOOR,)),
                        help="comma-separated subset of the rows")
    parser.add_argument("--slide-set", choices=sorted(patch_slides.SETS),
                        help="default full (--quick: quick); medium: 8 slides of 16000x12000")
    parser.add_argument("--no-peers", action="store_true", help="our rows only")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per row; the one with the median patches/s is kept")
    parser.add_argument("--loader-workers", default=None,
                        help="DataLoader rows (bench.patch_loader) of configs A and N at these "
                             "comma-separated num_workers, after the one-process rows, on the "
                             "same slides and S3 server; default 2 ('' for none; --quick: none)")
    args = parser.parse_args()
    started = time.perf_counter()
    mode = args.slide_set or ("quick" if args.quick else "full")
    ppslide = args.patches_per_slide or (20 if args.quick else 100)
    slides = patch_slides.ensure_slides(args.quick, name=args.slide_set)
    keys: list[str] = slides["keys"]
    folder = str(slides["dir"])
    all_configs, notes = configs(ppslide)
    unknown = set(args.configs.split(",")) - set(all_configs)
    if unknown:
        parser.error(f"unknown configs {sorted(unknown)}; choose among {sorted(all_configs)}")
    chosen = {c: all_configs[c] for c in args.configs.split(",")}
    systems = [s for s in OURS + PEERS + (FLOOR,) if s in args.systems.split(",")
               and not (s == DICOM and args.quick and args.systems == parser.get_default(
                   "systems"))]
    series = patch_slides.ensure_dicom(slides) if DICOM in systems else None
    if DICOM in systems and series is None:
        systems.remove(DICOM)
        notes.append(f"{DICOM} skipped: wsidicomizer is not installed")
    peers = [s for s in systems if s in PEERS]
    python = None
    if peers and not args.no_peers:
        python, note = bench_python(create=not args.quick)
        notes += [note] if note else []
    if python is not None and args.loader_workers != "" and not args.quick:
        python, more = patch_loader.prepare_peer_python()  # torch and psutil for its rows
        notes += more
    if python is None:
        systems = [s for s in systems if s not in PEERS]
    rows: list[Row] = []
    loader: list[Row] = []
    loader_workers = [int(w) for w in (args.loader_workers if args.loader_workers is not None
                                       else "" if args.quick else "2").split(",") if w]
    loader_configs = {c: patch_loader.loader_spec(spec) for c, (_, spec, recipe) in
                      chosen.items() if recipe is None} if loader_workers else {}
    expected = len(keys) * ppslide
    timeout = 120.0 if args.quick else 3600.0
    with s3_server(folder, args.latency_ms) as endpoint:
        server_pid = int(S3Counters(endpoint).get()["pid"])
        for config, (_, spec, recipe) in chosen.items():
            for system in systems:
                if system == FLOOR and recipe:
                    continue  # the floor is defined for plain reads (A, N)
                local = system.endswith("-local") or system == FLOOR
                paths = ([os.path.join(folder, k) for k in keys] if local
                         else [f"s3://{BUCKET}/{k}" for k in series or ()] if system == DICOM
                         else [f"s3://{BUCKET}/{k}" for k in keys])
                exe = sys.executable if system in OURS + (FLOOR,) else str(python)
                runs = []
                for i in range(max(1, args.repeat)):
                    print(f"{config}: {system} (run {i + 1}) ...", file=sys.stderr, flush=True)
                    cpu0 = cpu_seconds(server_pid)
                    runs.append(run_row(system, config, spec, recipe, paths, endpoint, exe,
                                        expected, timeout))
                    runs[-1]["s3_server_cpu_s"] = cpu_seconds(server_pid) - cpu0
                rows.append(median_run(runs))
        if loader_configs:
            loader = patch_loader.loader_rows(
                loader_configs, [s for s in LOADER_SYSTEMS if s in systems], loader_workers,
                keys, folder, endpoint, server_pid, python,
                patch_loader.LoaderOptions(repeat=args.repeat))
    spec0 = slides["spec"]
    total_gb = sum(slides["bytes"]) / 1e9
    title = (f"wsi_streamer patch bench ({mode}): {len(keys)} Aperio slides "
             f"{spec0['width']}x{spec0['height']} ({total_gb:.2f} GB, 0.25 um/px, downsamples "
             f"{'/'.join(map(str, patch_slides.DOWNSAMPLES))}), {args.latency_ms:g} ms per S3 "
             f"request, pool 8, {ppslide} attempts per slide, no cycling")
    host = patch_report.host()
    goal_rows = patch_report.goals(rows, chosen)
    print()
    print(title)
    print(f"host: {host}")
    for name, (desc, _, _) in chosen.items():
        print(f"config {name}: {desc}")
    print(patch_report.table(rows, chosen))
    for g in goal_rows if not args.quick else ():  # goals concern the full run
        print(patch_report.goal_line(g))
    if loader:
        print()
        print(patch_loader.loader_title(slides, mode, args.latency_ms, list(loader_configs),
                                        patch_loader.LoaderOptions()))
        print(patch_loader.table(loader, loader_workers))
        for g in patch_loader.goals(loader):
            print(f"goal: {g['goal']}: {g['value']:.2f}: {'met' if g['met'] else 'NOT met'}")
    print(f"load average (1, 5, 15 min) at the end: "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("notes: one process per row, started cold (ours: fresh cache_dir; local files are in "
          "the OS page cache). patches/s over the whole run from constructing the pipeline; "
          "steady/s after the first patch. GETs/KB per patch: S3 rows from the S3 server's "
          "counters; ours-local from our io/requests, KB from read() bytes (/proc/self/io). "
          "peak MB = ru_maxrss of the process. S3 ms/p: CPU the S3 server spent per patch "
          "(on this host's cores too).")
    for note in notes + [f"{r['config']} {r['system']}: {r['note']}" for r in rows
                         if r.get("note")]:
        print("note:", note)
    os.makedirs(make_slides.OUT, exist_ok=True)
    out_json = os.path.join(make_slides.OUT, f"patches-{mode}.json")
    with open(out_json, "w") as f:
        json.dump({"title": title, "host": host, "latency_ms": args.latency_ms,
                   "slides": slides, "configs": {k: {"description": d, "spec": s}
                                                 for k, (d, s, _) in chosen.items()},
                   "rows": rows, "goals": goal_rows, "loader_rows": loader,
                   "loader_goals": patch_loader.goals(loader), "notes": notes}, f, indent=1)
    print(f"wrote {out_json} in {time.perf_counter() - started:.0f} s")
    failed = [r for r in rows + loader if r.get("note")]
    if failed:  # a row that measured nothing fails the run (the table says which and why)
        sys.exit(f"{len(failed)} row(s) measured nothing: " + "; ".join(
            f"{r.get('config', '')} {r['system']}: {r['note']}".strip() for r in failed))


if __name__ == "__main__":
    main()
