"""wsistream 0.1.6's README, docs and ``examples/`` code, run against ``wsi_streamer.patches``
(issue 22), from the sdist ``scripts/wsistream_compat.py`` downloads (``--docs``).

Every ```` ```python ```` block of ``README.md`` and ``docs/**/*.md`` (in page order, the blocks
of one page in one namespace, as a reader runs them) and every ``examples/*.py`` is taken with
the prefix ``wsistream`` -> ``wsi_streamer.patches`` rewritten (``rewrite``) and the
substitutions of ``SUBS`` only: slide paths become generated slides (``format.demo``'s
synthetic slide, 0.25 um/px, under TCGA names, readable by OpenSlide), the pages' ``...``
placeholders take the defaults, training stand-ins are named in ``PRELUDE``, and loader sizes
fit a 2-core machine. Streams are endless (``cycle=True``), so each pipeline stops after
``LIMIT`` patches (the one harness patch). ``NOT_RUN`` lists each block that cannot run here and
why. Prints one line per block and a count; the exit status is 1 when a block fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

LIMIT = 64  # patches per pipeline (a DataLoader worker's stream included)
SLIDE_NAMES = ("TCGA-BRCA/TCGA-3L-AA1B-01Z-00-DX1.tif", "TCGA-BRCA/TCGA-A1-A0SB-01Z-00-DX1.tif",
               "TCGA-LUAD/TCGA-05-4244-01Z-00-DX1.tif")


@dataclass(frozen=True)
class Sub:
    where: str  # a block id prefix ("" for every block)
    old: str  # a regular expression
    new: str
    why: str


SUBS = (
    Sub("", r'"(/data/tcga|/path/to/slides)"', "SLIDES", "a folder of generated slides"),
    Sub("", r'"(path/to/slide\.svs|slide\.svs)"', "SLIDE", "a generated slide"),
    Sub("", r"(?m)^(\s+)\.\.\.,\s*$", r"\1slide_paths=SLIDES,",
        "an elided first argument (`...,`): the generated slides"),
    Sub("", r"(?m)^\s+\.\.\.\s*\n", "", "an elided rest of the arguments (`...`): none"),
    Sub("", r"=\.\.\.(,|\n|\s*#|\))", r"=None\1", "`name=...` placeholders: the default, None"),
    Sub("", r"\(\.\.\.\)", "()", "`Name(...)` (as in the block above): the defaults"),
    Sub("", r"num_workers=4\b", "num_workers=2", "fits a 2-core machine"),
    *(Sub(page, r"\A", "from wsi_streamer.patches import OpenSlideBackend, PatchPipeline\n",
          "a block showing arguments on a page that never imports PatchPipeline: the import")
      for page in ("docs/components/filters.md#2", "docs/components/sampling.md#5",
                   "docs/concepts/architecture.md#")),
    Sub("docs/integration/benchmarking.md", r"world_size=4", "world_size=1",
        "one rank on a 2-core machine"),
    Sub("docs/integration/benchmarking.md", r"num_workers=\[1, 2, 4, 8\]", "num_workers=[2]",
        "one configuration (the sweep takes hours on 2 cores)"),
    Sub("docs/integration/benchmarking.md", r"pool_size=\[4, 8\]", "pool_size=[4]",
        "one configuration"),
    Sub("docs/integration/benchmarking.md", r"patches_per_visit=\[1, 4, 16\]",
        "patches_per_visit=[1]", "one configuration"),
    Sub("docs/integration/benchmarking.md", r"batch_size=64,",
        "batch_size=8, warmup_batches=1, measure_batches=2,", "a short measure"),
    Sub("examples/train_ddp.py", r'"nccl"', '"gloo"', "no GPU: gloo on CPU"),
    Sub("examples/train_ddp.py", r"torch\.cuda\.set_device\(local_rank\)", "pass",
        "no GPU"),
    Sub("examples/train_ddp.py", r'f"cuda:\{local_rank\}"', '"cpu"', "no GPU"),
    Sub("examples/train_ddp.py", r"device_ids=\[local_rank\]", "device_ids=None",
        "no GPU (DDP on CPU takes no device ids)"),
)

# Blocks that cannot run here, and why (ids: page#n, n counting the page's python blocks).
NOT_RUN = {
    "docs/components/dataset-adapters.md#3": "queries the GDC API (network); ours is tested "
    "against a loopback fake of it (tests/unit/patches/test_gdc.py)",
    "docs/components/dataset-adapters.md#4": "downloads TCGA slides from the GDC (network)",
    "docs/components/dataset-adapters.md#5": "saves the manifest the GDC query (#3) returns",
    "docs/components/dataset-adapters.md#6": "queries and downloads TCGA slides (network)",
    "docs/components/dataset-adapters.md#7": "an output shown (the statistics dict), not code",
    "docs/components/views.md#5": "a fragment: `loader` over the page's views is never built",
    "docs/integration/pytorch-dataloader.md#2": "a fragment: `batch` of a views loader, "
    "never built on the page",
}

PRELUDE = f'''
import itertools, json, sys, traceback, types
import torch
from wsi_streamer.patches.pipeline import PatchPipeline

_iter = PatchPipeline.__iter__


def _bounded(self):  # endless streams (cycle=True) stop after LIMIT patches
    inner = _iter(self)
    try:
        yield from itertools.islice(inner, {LIMIT})
    finally:
        inner.close()


PatchPipeline.__iter__ = _bounded
sys.modules["wandb"] = types.SimpleNamespace(init=lambda **k: None, log=lambda *a, **k: None)
SLIDES = sys.argv[1]
SLIDE = sys.argv[2]
slide_paths, all_slides = SLIDES, json.loads(sys.argv[3])
rank, world_size, total_steps, device = 0, 1, 2, torch.device("cpu")
_weight = torch.zeros(1, requires_grad=True)
model = lambda images: images.float().mean() * _weight + images.float().mean()
optimizer = torch.optim.SGD([_weight], lr=0.1)
_NS = dict(__name__="__main__", SLIDES=SLIDES, SLIDE=SLIDE, slide_paths=slide_paths,
           all_slides=all_slides, rank=rank, world_size=world_size, total_steps=total_steps,
           device=device, model=model, optimizer=optimizer)


def _run(block_id, code):
    try:
        exec(compile(code, block_id, "exec"), _NS)
        print(json.dumps({{"id": block_id, "ok": True}}), flush=True)
    except BaseException as exc:  # noqa: BLE001 - reported per block
        where = traceback.format_exception(exc)[-2].strip().splitlines()[0]
        print(json.dumps({{"id": block_id, "ok": False,
                           "error": f"{{type(exc).__name__}}: {{exc}} ({{where}})"}}), flush=True)
'''


def blocks(text: str) -> list[str]:
    """The ```` ```python ```` blocks of a Markdown page, in order."""
    return re.findall(r"(?ms)^```python\n(.*?)^```", text)


def substituted(block_id: str, code: str) -> str:
    for sub in SUBS:
        if block_id.startswith(sub.where):
            code = re.sub(sub.old, sub.new, code)
    return code


def make_slides(folder: Path) -> tuple[Path, list[str]]:
    """The generated slides under ``folder`` (one synthetic slide, copied under TCGA names)."""
    from wsi_streamer.format.demo import demo_slide_bytes

    data = demo_slide_bytes()
    paths = []
    for name in SLIDE_NAMES:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(str(path))
    return folder, paths


def run_docs(sdist: Path, work: Path, rewrite: object, timeout: float = 1200,
             examples: bool = True) -> int:
    """Run every block and example; print the results; return the exit status."""
    assert callable(rewrite)
    src = work / "src"
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            rel = member.name.split("/", 1)[-1]
            if member.isfile() and ".." not in rel and (
                    rel == "README.md" or rel.startswith(("docs/", "examples/"))):
                dest = src / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                data = tar.extractfile(member)
                assert data is not None
                dest.write_bytes(data.read())
    slides, paths = make_slides(work / "slides")
    cwd = work / "cwd"
    cwd.mkdir()
    results: list[dict[str, object]] = []
    pages = [src / "README.md", *sorted((src / "docs").rglob("*.md"))]
    for page in pages:
        rel = page.relative_to(src).as_posix()
        calls = []
        for n, code in enumerate(blocks(page.read_text()), 1):
            block_id = f"{rel}#{n}"
            if block_id in NOT_RUN:
                results.append({"id": block_id, "skip": NOT_RUN[block_id]})
                continue
            text = substituted(block_id, rewrite(code))
            try:
                compile(text, block_id, "exec")
            except SyntaxError as exc:
                results.append({"id": block_id, "skip": f"not Python ({exc.msg}): an output "
                                "shown or a fragment of the block before"})
                continue
            calls.append(f"_run({block_id!r}, {text!r})")
        if calls:
            script = cwd / "page.py"
            script.write_text(PRELUDE + "\n".join(calls) + "\n")
            results += _results(subprocess.run(
                [sys.executable, str(script), str(slides), paths[0], json.dumps(paths)],
                cwd=cwd, text=True, capture_output=True, timeout=timeout), rel)
    if examples:
        results += run_examples(src / "examples", slides, paths, cwd, rewrite, timeout)
    return report(results)


def run_examples(folder: Path, slides: Path, paths: list[str], cwd: Path, rewrite: object,
                 timeout: float) -> list[dict[str, object]]:
    assert callable(rewrite)
    out = cwd / "demo-output"
    commands = {
        "demo_pipeline.py": [["--slide", paths[0], "--backend", "openslide", "--output-dir",
                              str(out)],
                             ["--slide", paths[0], "--backend", "tiffslide", "--output-dir",
                              str(out), "--compare-augmentations"]],
        "train_single_gpu.py": [["--slides", str(slides), "--steps", "3", "--batch-size", "8",
                                 "--num-workers", "2", "--log-every", "1"]],
        "train_ddp.py": [["--slides", str(slides), "--steps", "3", "--batch-size", "8",
                          "--num-workers", "1", "--log-every", "1"]],
    }
    results: list[dict[str, object]] = []
    for name, runs in commands.items():
        block_id = f"examples/{name}"
        script = cwd / name
        script.write_text(substituted(block_id, rewrite((folder / name).read_text())))
        for args in runs:
            launcher = [sys.executable]
            if name == "train_ddp.py":
                launcher += ["-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node", "2"]
            env = dict(os.environ, OMP_NUM_THREADS="1")
            proc = subprocess.run([*launcher, str(script), *args], cwd=cwd, text=True,
                                  capture_output=True, timeout=timeout, env=env)
            shown = f"{block_id} {' '.join(a for a in args[2:4])}".rstrip()
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            results.append({"id": shown, "ok": proc.returncode == 0,
                            "error": f"exit {proc.returncode}: {tail[0][:300]}"})
    shutil.rmtree(out, ignore_errors=True)
    return results


def _results(proc: subprocess.CompletedProcess[str], page: str) -> list[dict[str, object]]:
    found = []
    for line in proc.stdout.splitlines():
        if line.startswith('{"id"'):
            found.append(json.loads(line))
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [""]
        found.append({"id": f"{page} (process)", "ok": False,
                      "error": f"exit {proc.returncode}: {tail[0][:300]}"})
    return found


def report(results: list[dict[str, object]]) -> int:
    ran = [r for r in results if "skip" not in r]
    ok = [r for r in ran if r["ok"]]
    for r in results:
        state = ("not run: " + str(r["skip"]) if "skip" in r
                 else "ok" if r["ok"] else "FAILED " + str(r.get("error", "")))
        print(f"{r['id']}: {state}")
    print(f"wsistream 0.1.6's README, docs and examples against wsi_streamer.patches: "
          f"{len(ok)} of {len(ran)} run ({len(results) - len(ran)} not run, each with its "
          "reason above)")
    print("substitutions besides the prefix: " + "; ".join(
        f"{s.where or 'all'}: {s.why}" for s in SUBS))
    if not ran:
        print("FAIL: no block or example ran (nothing to compare)")
        return 1
    return 0 if len(ok) == len(ran) else 1
