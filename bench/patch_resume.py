"""What checkpointing the loader costs (issue 24): ``python -m bench.patch_resume [--quick]
[--workers 2] [--batches 40] [--rounds 3]``.

One ``WsiStreamDataset`` configuration (A: Otsu, ``RandomSampler(224, target_mpp=0.5)``, pool
8, 100 patches per slide, ``cycle=True``, uint8, batch 32) over ``bench.patch_slides``'s
local slides, three loaders timed in interleaved rounds (plain, stateful, stateful+save,
plain, ...) so that the machine's load drifts over all three alike:

- ``plain``: ``torch.utils.data.DataLoader``;
- ``stateful``: torchdata's ``StatefulDataLoader`` (each worker takes its dataset's
  ``state_dict()`` with every batch: ``snapshot_every_n_steps=1``, its default);
- ``stateful+save``: the same, and ``loader.state_dict()`` serialised to JSON after every step
  (what a trainer saving each step would pay, the file write aside).

Each row: a fresh loader (persistent workers, a warm host cache), ``--warmup`` batches, then
``--batches`` timed. Prints the median patches/s of each loader over the rounds, the
difference to ``plain`` (goal: <= 2%) and the state's size; writes
``bench/out/resume-<mode>.json``. ``--quick``: 3 small slides, 2 rounds of 12 batches.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Any

LOADERS = ("plain", "stateful", "stateful+save")
GOAL = 0.02  # checkpointing every step costs at most 2% of patches/s


def make_dataset(slides: list[str], cache_dir: str) -> Any:
    from wsi_streamer.patches import OtsuTissueDetector, RandomSampler
    from wsi_streamer.patches.torch import WsiStreamDataset

    return WsiStreamDataset(slides, tissue_detector=OtsuTissueDetector(),
                            sampler=RandomSampler(224, target_mpp=0.5), pool_size=8,
                            patches_per_slide=100, seed=0, output_dtype="uint8",
                            cache_dir=cache_dir)


def cpu_seconds() -> float:
    """CPU time of this process and its live children (the DataLoader workers)."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for proc in (me, *me.children(recursive=True)):
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def measure(kind: str, slides: list[str], cache_dir: str, args: argparse.Namespace
            ) -> dict[str, Any]:
    """One row: patches/s over ``args.batches`` batches after the warm-up."""
    from torch.utils.data import DataLoader
    from torchdata.stateful_dataloader import StatefulDataLoader

    dataset = make_dataset(slides, cache_dir)
    make = DataLoader if kind == "plain" else StatefulDataLoader
    loader = make(dataset, batch_size=args.batch_size, num_workers=args.workers,
                  persistent_workers=args.workers > 0)
    dataset.set_epoch(0)
    stream = iter(loader)
    for _ in range(args.warmup):
        next(stream)
    state_bytes = 0
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    for _ in range(args.batches):
        batch = next(stream)
        if kind == "stateful+save":
            state_bytes = len(json.dumps(loader.state_dict()))
    seconds = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu0
    patches = args.batches * len(batch["image"])
    del stream, loader
    return {"loader": kind, "patches_per_s": patches / seconds, "seconds": seconds,
            "cpu_ms_per_patch": 1000 * cpu / patches, "state_bytes": state_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 small slides, short rounds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, help="default 5 (quick: 2)")
    parser.add_argument("--batches", type=int, help="default 40 (quick: 12)")
    parser.add_argument("--rounds", type=int, help="default 3 (quick: 2)")
    args = parser.parse_args()
    args.warmup = args.warmup or (2 if args.quick else 5)
    args.batches = args.batches or (12 if args.quick else 40)
    args.rounds = args.rounds or (2 if args.quick else 3)

    from . import patch_slides

    info = patch_slides.ensure_slides(args.quick)
    slides = [os.path.join(info["dir"], key) for key in info["keys"]]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-resume-") as cache_dir:
        measure("plain", slides, cache_dir, argparse.Namespace(**{**vars(args), "batches": 2}))
        for round_ in range(args.rounds):
            for kind in LOADERS:
                row = measure(kind, slides, cache_dir, args)
                row["round"] = round_
                row["load"] = [round(v, 2) for v in os.getloadavg()]
                rows.append(row)
                print(f"round {round_} {kind:<14} {row['patches_per_s']:8.1f} patches/s "
                      f"{row['cpu_ms_per_patch']:6.2f} CPU ms/patch (load {row['load'][0]})",
                      flush=True)
    median = {kind: statistics.median(r["patches_per_s"] for r in rows if r["loader"] == kind)
              for kind in LOADERS}
    cpu = {kind: statistics.median(r["cpu_ms_per_patch"] for r in rows if r["loader"] == kind)
           for kind in LOADERS}
    state = max(r["state_bytes"] for r in rows)
    print(f"\n{'loader':<14} {'patches/s':>10} {'vs plain':>9} {'CPU ms/p':>9} {'vs plain':>9}")
    for kind in LOADERS:
        print(f"{kind:<14} {median[kind]:10.1f} {median[kind] / median['plain'] - 1:+9.1%} "
              f"{cpu[kind]:9.2f} {cpu[kind] / cpu['plain'] - 1:+9.1%}")
    cost = 1 - median["stateful+save"] / median["plain"]
    cpu_cost = cpu["stateful+save"] / cpu["plain"] - 1
    print(f"\nstate: {state} bytes of JSON for {args.workers} worker(s); checkpointing every "
          f"step costs {cost:+.1%} of patches/s and {cpu_cost:+.1%} CPU per patch (goal <= "
          f"{GOAL:.0%}; medians of {args.rounds} round(s); patches/s moves with the load, "
          f"CPU per patch much less)")
    out = os.path.join(os.path.dirname(__file__), "out",
                       f"resume-{'quick' if args.quick else 'full'}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"rows": rows, "median": median, "cpu_ms_per_patch": cpu,
                   "state_bytes": state, "cost": cost, "cpu_cost": cpu_cost,
                   "args": vars(args)}, f, indent=1)


if __name__ == "__main__":
    main()
