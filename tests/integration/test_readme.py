"""Every command snippet of README.md runs here (issue 11.7), so the docs cannot drift.

The README's fenced ``sh``/``python`` blocks, its plain fenced blocks and its inline command
spans (`` `wsi-streamer ...` ``, `` `pip ...` ``...) are extracted and matched, by their first
line, against ``COVERAGE``: each one is run by a named test of this module, or exempted with a
reason, or (plain blocks only) a known output listing. A snippet missing from the table fails
``test_every_snippet_is_covered`` ("new README snippet not covered"), and so does an entry whose
snippet left the README. Snippets run for real (servers on free loopback ports, a loopback
moto S3 holding generated slides, real ``DataLoader`` workers), as written but for the
substitutions of ``SUBSTITUTIONS``, each with its reason; a substitution whose text is no longer
in its snippet fails too. Shell runs under ``bash -euo pipefail`` in a temp folder with the
venv's ``bin`` first on PATH; Python runs in a subprocess of ``sys.executable``.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import REPO_ROOT, S3Bucket
from tests.servers import free_port, wait_healthy

README = REPO_ROOT / "README.md"
BIN = Path(sys.executable).parent  # the venv's bin: wsi-streamer, flask, gunicorn
SLIDE = "CMU-1-Small-Region.svs"  # the id the README's examples use (a generated slide here)
STARTUP_S = 90.0  # bounded readiness polling of a server on a loaded 2-core machine
COMMAND_S = 120.0  # bound of one snippet's run
COMMAND_WORDS = ("wsi-streamer ", "flask ", "python ", "python3 ", "torchrun ", "gunicorn ",
                 "pip ", "curl ", "docker ", "kubectl ", "pytest")


# --- the README's snippets -------------------------------------------------------------------

@dataclass(frozen=True)
class Snippet:
    kind: str  # "sh", "python", any other fence language, "" (plain fence) or "inline"
    text: str
    line: int  # 1-based line of the README where it starts
    source: str = "README.md"  # or docs/NAME.md

    @property
    def key(self) -> str:
        """First line, stripped (an inline span: its whitespace-normalised text)."""
        if self.kind == "inline":
            return " ".join(self.text.split())
        return self.text.strip().splitlines()[0].strip()


FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
SPAN = re.compile(r"`([^`]+)`")


DOCS = REPO_ROOT / "docs"


def readme_snippets(text: str | None = None) -> list[Snippet]:
    """The snippets of README.md and of every docs/*.md (or of ``text``)."""
    if text is not None:
        return file_snippets(text, "README.md")
    found = file_snippets(README.read_text(), "README.md")
    for doc in sorted(DOCS.glob("*.md")):
        found += file_snippets(doc.read_text(), f"docs/{doc.name}")
    return found


def file_snippets(text: str, source: str) -> list[Snippet]:
    """Fenced blocks, then inline code spans that start with a command word."""
    snippets = []
    prose = text
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 2
        snippets.append(Snippet(match.group(1), match.group(2), line, source))
        blank = "\n" * match.group(0).count("\n")  # keeps the line numbers of the prose
        prose = prose.replace(match.group(0), blank, 1)
    for match in SPAN.finditer(prose):
        span = match.group(1)
        if "\n\n" not in span and span.startswith(COMMAND_WORDS):
            snippets.append(Snippet("inline", span, prose.count("\n", 0, match.start()) + 1,
                                    source))
    return snippets


@dataclass(frozen=True)
class Run:
    test: str  # the test of this module that runs the snippet


@dataclass(frozen=True)
class Exempt:
    reason: str


@dataclass(frozen=True)
class Output:
    what: str  # a plain block that is an output listing, not something to run


IDC_BLOCK = "from wsi_streamer.patches import PatchPipeline, RandomSampler"
S3_BLOCK = ("export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...      # or any boto3 "
            "credential source")
DOCKER = ("no container engine or cluster here; test_deploy.py runs the Dockerfile's build "
          "and runtime steps as written, checks docker-compose.yml and validates the manifests")
COVERAGE: dict[str, Run | Exempt | Output] = {
    # Set-up
    "python3 -m venv .venv && . .venv/bin/activate && pip install . && wsi-streamer serve":
        Run("test_setup_serve_writes_and_serves_the_demo_slide"),
    'python3 -m venv .venv-test && . .venv-test/bin/activate && pip install -e ".[test]" '
    '&& pytest':
        Exempt("the install is what .ci/run does on a fresh machine, and `pytest` is this "
               "suite; test_install_extras_exist checks the extras it names"),
    'pip install ".[patches,torch]"':
        Exempt("installs into the environment; test_install_extras_exist checks its extras"),
    'pip install -e ".[patches,torch]"':
        Exempt("installs into the environment; test_install_extras_exist checks its extras"),
    "pip install torch --index-url https://download.pytorch.org/whl/cpu":
        Exempt("downloads PyTorch; the suite runs on such a CPU-only build"),
    IDC_BLOCK: Run("test_idc_block"),
    "moto_server -p 5000 &                           # a local S3 on port 5000":
        Run("test_local_s3_training_block"),
    # docs/api.md, docs/patches.md, docs/reliability.md: synopses with placeholders
    "wsi-streamer serve [SOURCE]":
        Exempt("a synopsis; test_cli.py runs serve with SOURCE and each storage flag"),
    "wsi-streamer check [SOURCE] [--list-slides] [--test-slide ID]":
        Exempt("a synopsis; test_check_commands and test_cli.py::test_check_takes_source_"
               "and_the_storage_flags run it"),
    "wsi-streamer sign-url --path P [--ttl S] [--base-url U] [--param k=v] [--format "
    "url|json]":
        Exempt("a synopsis; test_sign_url_block_is_accepted_by_the_server runs sign-url"),
    "torchrun --nproc_per_node=N examples/train_ddp.py SOURCE --recipe prov_gigapath":
        Exempt("a synopsis; test_torch_ddp.py runs examples/train_ddp.py under torchrun"),
    "wsi-streamer patches preview SOURCE [--recipe R] [-n 64] [-o preview.png]":
        Exempt("a synopsis; test_patches_commands and tests/unit/patches/test_preview_cli.py "
               "run preview"),
    "wsi-streamer patches bench SOURCE... [--recipe R] [-n 1000]":
        Exempt("a synopsis; test_patches_commands and test_local_s3_training_block run bench"),
    "wsi-streamer serve --help":
        Exempt("test_cli.py::test_help_and_version_build_nothing runs it"),
    "pip wheel": Exempt("names what the slow deployment test of test_deploy.py runs"),
    # Serving slides from S3
    S3_BLOCK:
        Run("test_s3_serving_block"),
    "wsi-streamer check --list-slides --test-slide ID": Run("test_check_commands"),
    "flask --app wsi_streamer check ...": Run("test_check_commands"),
    # API
    "curl localhost:3000/slides": Run("test_curl_block"),
    "export WSI_AUTH_SECRET=change-me": Run("test_sign_url_block_is_accepted_by_the_server"),
    # IIIF
    '<div id="viewer" style="width: 100%; height: 600px"></div>': Run("test_iiif_blocks"),
    '{"id": "http://localhost:3000/iiif/3/CMU-1-Small-Region.svs/full/max/0/default.jpg",':
        Run("test_iiif_blocks"),
    "import io, json, urllib.request": Run("test_iiif_blocks"),
    # Reading slides from Python
    "from wsi_streamer.slide import open_slide, read_region, SlideNotFound, UnsupportedFormat":
        Run("test_open_slide_block"),
    # Training on slides in a bucket
    'pip install ".[openslide]"':
        Exempt("installs into the environment (the test extra has OpenSlide); "
               "test_openslide_fallback.py serves the real NDPI through it"),
    "from wsi_streamer.patches import (PatchPipeline, OtsuTissueDetector, RandomSampler,":
        Run("test_patch_pipeline_block"),
    "from torchdata.stateful_dataloader import StatefulDataLoader  # torch's DataLoader, "
    "resumable": Run("test_torch_dataloader_block"),
    'old = [torch.load(f"checkpoint/rank-{r}.pt")["loader"] for r in range(old_world_size)]':
        Exempt("docs/resume.md's elastic form: it runs in test_torch_resume.py::test_elastic_"
               "resume_on_other_topologies_consumes_each_budget_once (2x2 -> 1x3, 3x1) and, "
               "from the example's checkpoint files, in test_torch_ddp.py::test_train_ddp_"
               "example_keeps_replicas_in_sync"),
    "torchrun --nproc_per_node=N examples/train_ddp.py s3://bucket/prefix/ --recipe "
    "prov_gigapath":
        Exempt("N ranks for minutes; examples/train_ddp.py runs under torchrun (2 ranks, "
               "2 workers, moto) in test_torch_ddp.py::test_train_ddp_example_keeps_replicas_"
               "in_sync"),
    "wsi-streamer patches preview SLIDE [--recipe uni] [-n 64] -o preview.png":
        Run("test_patches_commands"),
    "wsi-streamer patches bench SOURCE": Run("test_patches_commands"),
    "wsi-streamer demo slides": Run("test_patches_commands"),
    "wsi-streamer patches preview slides/demo-slide.tif -n 32": Run("test_patches_commands"),
    "config   system                        patches patches/s  steady/s    TTFP s GETs/patch  "
    "KB/patch   peak MB   S3 ms/p  mpp served":
        Output("python -m bench.patches's table"),
    "python -m bench.patches":
        Exempt("minutes of benchmark; its --quick mode runs in test_bench_patches.py"),
    "scripts/wsistream_compat.sh --no-unit --min-passed 0 -- -m e2e --slide-dir DIR --backend "
    "openslide": Exempt("wsistream's e2e suite in its own venv over a folder of TCGA-named real "
                        "slides (minutes); its unit suite runs in .ci/run with a floor"),
    "config   system                        patches patches/s  steady/s  CPU ms/p    TTFP s "
    "GETs/patch  KB/patch   peak MB   S3 ms/p  mpp served":
        Output("python -m bench.patches's tables: the one-process rows with CPU ms per patch, "
               "the floor row and the S3 server's CPU, then the DataLoader rows"),
    "client      16 threads    1 thread":
        Output("python -m bench.s3client's CPU per ranged GET of each data plane"),
    "python -m bench.patches --slide-set medium --configs A,N --repeat 3":
        Exempt("ten minutes of benchmark; its --quick mode (floor row included) runs in "
               "test_bench_patches.py"),
    "python -m bench.patch_cpu --system ours-local --config A|N --slide-set medium "
    "--io-threads 2|4|16":
        Exempt("minutes of benchmark on the medium slide set (issue 21's choice of io_threads); "
               "the default it chose is tested in test_pipeline.py::test_io_threads_default_"
               "follows_the_storage"),
    "python -m bench.patch_cpu --system ours-local --config A --slide-set medium":
        Exempt("a minute of benchmark on the medium slide set (issue 21's cost of opens); the "
               "detection thumbnail it measures is tested in test_patch_pixels.py and "
               "tests/unit/slide/test_overview_fill.py"),
    "python -m bench.s3client --gets 1500 --size 96000 --threads 16|1 --latency-ms 20 --rows "
    "ours-lean,ours-curl,obstore":
        Exempt("a minute of benchmark against the loopback S3 server (issue 21's choice of "
               "S3 client); both data planes are tested in tests/unit/io"),
    "python -m bench.patch_cpu --system ours-s3 --config A --again":
        Exempt("a minute of benchmark on the medium slide set (issue 21's cost of opens, cold "
               "against a warm host cache); the host cache's masks and structures are tested "
               "in tests/unit/patches/test_pipeline.py"),
    "python -m bench.patch_cpu --system ours-s3 --config N":
        Exempt("a minute of benchmark on the medium slide set (issue 21's CPU breakdown); "
               "benchmarks stay out of the suite, the pipeline it wraps is bench.patch_ours'"),
    "python -m bench.s3client --gets 2000 --threads 1|16":
        Exempt("a minute of benchmark against the loopback S3 server (issue 21's choice of "
               "S3 client); the data plane it measures is tested in tests/unit/io"),
    "python -m bench.s3client --fork-check":
        Exempt("starts the loopback S3 server and waits up to 20 s per client that hangs "
               "after fork (obstore); the lean plane's fork handling is its pool per pid"),
    "client     1 thread      16 threads    86 KB, +20 ms, 16 threads":
        Output("python -m bench.s3client's CPU ms per GET, three rounds as ranges"),
    # Deployment
    'docker build -t wsi_streamer . && docker run -p 3000:3000 -v "$PWD/slides:/data/slides:ro"'
    " wsi_streamer": Exempt(DOCKER),
    "gunicorn -c gunicorn.conf.py": Run("test_s3_serving_block"),
    # docs/reliability.md, Soak and fuzz
    ".venv-test/bin/python -m bench.soak     # 10 min of mixed traffic against gunicorn, storage "
    "misbehaving": Exempt("a 10-minute soak and a 5-minute fuzz campaign, kept out of CI by "
                          "design (issue 11); the fuzz harness's cases are test_fuzz.py's"),
    "kind         requests  2xx/304    4xx  5xx ok 5xx bad   p50 ms   p99 ms   max s":
        Output("python -m bench.soak's table"),
    # Layout, Benchmarks
    "wsi_streamer/": Run("test_layout_block_names_existing_folders"),
    "python -m bench.run":
        Exempt("minutes of benchmark; its --quick mode runs in test_bench_smoke.py"),
    "slide        system          open req  open KB open RTT  open ms 1st-tile req  1st RTT  "
    "TTFT ms cold p50 cold p95 warm p50  KB/tile req/tile tiles/s 1c tiles/s 32c":
        Output("python -m bench.run's table"),
}


@dataclass(frozen=True)
class Sub:
    old: str
    new: str  # str.format fields: {port}, {url}, {bucket}, {endpoint}, {slide}, {folder}
    why: str


LOCAL_S3 = "moto_server -p 5000 &                           # a local S3 on port 5000"
SUBSTITUTIONS: dict[str, tuple[Sub, ...]] = {
    LOCAL_S3: (
        Sub("moto_server -p 5000 &", "moto_server -p {port} >moto.log 2>&1 &\n"
            "trap 'kill $!' EXIT\nuntil python -c \"import socket; socket.create_connection("
            "('127.0.0.1', {port}), 1)\" 2>/dev/null; do sleep 0.2; done",
            "a free port; the server is awaited, and stopped when the block ends"),
        Sub("127.0.0.1:5000", "127.0.0.1:{port}", "the same free port"),
        Sub("-n 100", "-n 16", "16 patches: a 2-core CI")),
    "python3 -m venv .venv && . .venv/bin/activate && pip install . && wsi-streamer serve": (
        Sub("python3 -m venv .venv && . .venv/bin/activate && pip install . && ", "",
            "the install half is exempt: .ci/run does it on a fresh machine, and this venv "
            "already holds the editable install"),),
    S3_BLOCK: (
        Sub("AWS_ACCESS_KEY_ID=...", "AWS_ACCESS_KEY_ID=testing", "the test's fake keys"),
        Sub("AWS_SECRET_ACCESS_KEY=...", "AWS_SECRET_ACCESS_KEY=testing", "the test's fake keys"),
        Sub("my-bucket", "{bucket}", "a bucket on the loopback moto server"),
        Sub("WSI_S3_BUCKET=slides ", "WSI_S3_BUCKET={bucket} ", "the same bucket"),
        Sub("http://127.0.0.1:9000", "{endpoint}", "the moto server")),
    "wsi-streamer check --list-slides --test-slide ID": (
        Sub("ID", "{slide}", "a generated slide in WSI_SLIDES_DIR"),),
    "flask --app wsi_streamer check ...": (
        Sub("...", "--list-slides --test-slide {slide}", "the options of the line above"),),
    "curl localhost:3000/slides": (
        Sub("localhost:3000", "127.0.0.1:{port}", "the server the test started"),
        Sub("curl ", "curl -fsS ", "-f: an HTTP error fails the block")),
    "export WSI_AUTH_SECRET=change-me": (
        Sub("http://localhost:3000", "{url}", "the server the test started"),),
    "from wsi_streamer.slide import open_slide, read_region, SlideNotFound, UnsupportedFormat": (
        Sub("my-bucket", "{bucket}", "a bucket on the loopback moto server"),
        Sub("http://minio:9000", "{endpoint}", "the moto server")),
    "from wsi_streamer.patches import (PatchPipeline, OtsuTissueDetector, RandomSampler,": (
        Sub("my-bucket", "{bucket}", "a bucket on the loopback moto server"),
        Sub("http://minio:9000", "{endpoint}", "the moto server")),
    IDC_BLOCK: (
        Sub("<crdc_series_uuid>", "{series}", "a DICOM series made in the run, uploaded to an "
            "idc-open-data bucket on the loopback moto server (WSI_S3_ENDPOINT)"),),
    "from torchdata.stateful_dataloader import StatefulDataLoader  # torch's DataLoader, "
    "resumable": (
        Sub("my-bucket", "{bucket}", "a bucket on the loopback moto server"),
        Sub("batch_size=256", "batch_size=8", "fits a 2-core CI"),
        Sub("num_workers=8", "num_workers=2", "fits a 2-core CI (still real worker processes)")),
    "wsi-streamer patches preview SLIDE [--recipe uni] [-n 64] -o preview.png": (
        Sub("SLIDE", "{slide}", "a slide large enough for uni's CLAM area filter"),
        Sub("[", "", "the optional arguments given"), Sub("]", "", "the same"),
        Sub("-n 64", "-n 16", "16 patches of uni's 256 px from 512 px regions: a 2-core CI")),
    "wsi-streamer patches bench SOURCE": (
        Sub("SOURCE", "{folder} -n 16", "the demo slide's folder; 16 patches, not the default "
            "1000 (a 2-core CI)"),),
}


def snippet(key: str) -> Snippet:
    """The snippet of ``key`` (several files may repeat it, word for word)."""
    found = [s for s in readme_snippets() if s.key == key]
    assert found and len({s.text for s in found}) == 1, (
        f"README snippet {key!r}: found {len(found)} different times")
    return found[0]


def substituted(key: str, **values: str) -> str:
    """The snippet's text with its substitutions applied; each must still apply."""
    text = snippet(key).text
    for sub in SUBSTITUTIONS.get(key, ()):
        assert sub.old in text, f"substitution {sub.old!r} no longer applies to {key!r}"
        text = text.replace(sub.old, sub.new.format(**values))
    return text


# --- running -----------------------------------------------------------------------------------

def shell_env(tmp_path: Path, extra: Mapping[str, str] = {}) -> dict[str, str]:
    """The inherited environment (fake AWS keys from conftest) without WSI_*, the venv's bin
    first on PATH, TMPDIR under ``tmp_path`` (so host caches are the test's own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSI_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir(exist_ok=True)
    env.update({"TMPDIR": str(tmpdir), "OMP_NUM_THREADS": "1"})
    env.update(extra)
    return env


def server_env(tmp_path: Path, port: int) -> dict[str, str]:
    return {"WSI_HOST": "127.0.0.1", "WSI_PORT": str(port), "WSI_WORKERS": "1",
            "WSI_THREADS": "4", "WSI_TILE_CACHE_DIR": str(tmp_path / "tile-cache")}


def bash(script: str, cwd: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=COMMAND_S)
    assert done.returncode == 0, f"{script}\n-> {done.returncode}\n{done.stdout}{done.stderr}"
    return done


@contextmanager
def background(script: str, cwd: Path, env: Mapping[str, str], url: str,
               log_path: Path) -> Iterator[None]:
    """``script`` under bash in its own process group until ``url``/health answers; the group
    (bash, gunicorn and its workers) is stopped at exit: SIGTERM, SIGKILL after 15 s."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=cwd,
                                   env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        wait_healthy(process, url, lambda: f"{script}\n{log_path.read_text(errors='replace')}",
                     STARTUP_S)
        yield
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group ``process`` leads, SIGKILL after 15 s; returns once the
    leader is reaped and no process of the group is left (gunicorn's workers included)."""
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            process.poll()  # reap the leader: a zombie still counts as a member
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                process.wait()
                return
            time.sleep(0.05)
    process.wait()


PYTHON_RUNNER = '''
import sys

class EnoughSteps(Exception):
    """Raised by the train_step stub after its budget: the README's loops stream forever."""

calls = []

def train_step(*args):
    calls.append(args)
    if BUDGET is not None and len(calls) >= BUDGET:
        raise EnoughSteps

if __name__ == "__main__":
    namespace = {"__name__": "__readme__", "train_step": train_step, "epochs": 2,
                 "steps_per_epoch": 2, "calls": calls}
    try:
        exec(compile(SNIPPET, "README.md:%d" % LINE, "exec"), namespace)
    except EnoughSteps:
        pass
    exec(compile(CHECKS, "checks", "exec"), namespace)
    print("SNIPPET OK")
'''


def run_python(code: str, line: int, checks: str, budget: int | None, cwd: Path,
               env: Mapping[str, str]) -> str:
    """``code`` exec'd in a namespace holding the stubs (``train_step`` recording its
    arguments in ``calls`` and stopping the loop after ``budget`` calls, ``epochs``,
    ``steps_per_epoch``), then ``checks`` in the same namespace; in a subprocess."""
    script = cwd / "run_snippet.py"
    script.write_text(f"SNIPPET = {code!r}\nLINE = {line}\nCHECKS = {checks!r}\n"
                      f"BUDGET = {budget!r}\n" + PYTHON_RUNNER)
    done = subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=COMMAND_S)
    assert done.returncode == 0 and "SNIPPET OK" in done.stdout, done.stdout + done.stderr
    return done.stdout


# --- slides ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def svs_bytes() -> bytes:
    """An Aperio-like SVS of 1536 x 1152 px, 256 px tiles (6 x 5 at level 0), 4 levels."""
    from tests.fixtures.slides import make_svs

    return make_svs(1536, 1152, levels=4, tile=256).data


@pytest.fixture(scope="module")
def patch_slides(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tissue-island SVS at 0.25 um/px (levels 1, 4, 16) for the training snippets."""
    from tests.fixtures.patch_slides import write_islands_svs

    folder = tmp_path_factory.mktemp("patch-slides")
    return [write_islands_svs(folder, f"case-{i}.svs", seed=i) for i in range(2)]


@pytest.fixture(scope="module")
def clam_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5632 x 5120 px of tissue at 0.25 um/px, for the uni recipe: its CLAM detector keeps
    only components above ``a_t`` = 100 x 512^2 level-0 pixels (26.2 M), so the smaller
    slides above (and the demo slide's islands) give it no tissue."""
    import numpy as np

    from tests.fixtures.images import tissue
    from tests.fixtures.patch_slides import levels_of
    from tests.fixtures.slides import make_svs

    image = np.tile(tissue(256, 256, 0), (20, 22, 1))
    slide = make_svs(images=levels_of(image, (1, 4, 16)), tile=256, mpp=0.25, qualities=(70,),
                     associated=False)
    return slide.write(tmp_path_factory.mktemp("clam-slide"), "tissue.svs")


def slides_folder(root: Path, data: bytes, *ids: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for slide_id in ids:
        (root / slide_id).parent.mkdir(parents=True, exist_ok=True)
        (root / slide_id).write_bytes(data)
    return root


# --- the coverage table ------------------------------------------------------------------------

def test_every_snippet_is_covered() -> None:
    snippets = readme_snippets()
    keys = [s.key for s in snippets]
    texts: dict[str, set[str]] = {}
    for s in snippets:
        texts.setdefault(s.key, set()).add(s.text)
    shared = sorted(key for key, found in texts.items() if len(found) > 1)
    assert not shared, f"two different snippets share a first line: {shared}"
    uncovered = [f"{s.source}:{s.line} ({s.kind or 'plain'}): {s.key}"
                 for s in snippets if s.key not in COVERAGE]
    assert not uncovered, "new README snippet not covered (run it here, or exempt it in " \
        "COVERAGE with a reason):\n" + "\n".join(uncovered)
    gone = [key for key in COVERAGE if key not in keys]
    assert not gone, f"COVERAGE entries no longer in the README: {gone}"
    assert set(SUBSTITUTIONS) <= set(COVERAGE)
    for s in snippets:
        entry = COVERAGE[s.key]
        if s.kind in ("sh", "python", "inline"):
            assert not isinstance(entry, Output), f"{s.key!r} is code, not an output listing"
        else:  # a plain block (or another language): an output listing, or checked here
            assert not isinstance(entry, Exempt), f"{s.key!r}: mark it Output or check it"
        if isinstance(entry, Run):
            assert callable(globals().get(entry.test)), f"{s.key!r}: no test {entry.test}"
        if isinstance(entry, Exempt | Output):
            assert (entry.reason if isinstance(entry, Exempt) else entry.what).strip()


def test_readme_snippets_are_found() -> None:
    text = ("a\n```sh\nfoo --x\nbar\n```\n`wsi-streamer demo\n  slides` and `not a command`\n"
            "```\nout table\n```\n")
    found = readme_snippets(text)
    assert [(s.kind, s.key, s.line) for s in found] == [
        ("sh", "foo --x", 3), ("", "out table", 9), ("inline", "wsi-streamer demo slides", 6)]


def test_install_extras_exist() -> None:
    """Every ``wsi_streamer[...]`` extra a README install line names is in setup.cfg."""
    parser = configparser.ConfigParser()
    parser.read(REPO_ROOT / "setup.cfg")
    extras = set(parser["options.extras_require"])
    named = set()
    for s in readme_snippets():
        if "pip install" in s.text:
            for group in re.findall(r'\[([\w,]+)\]"', s.text):
                named.update(group.split(","))
    assert named and named <= extras, f"README names extras {named - extras} not in setup.cfg"


def test_layout_block_names_existing_folders() -> None:
    text = snippet("wsi_streamer/").text
    top = None
    for line in text.splitlines():
        match = re.match(r"( *)([\w.-]+)/", line)
        if not match:
            continue
        if not match.group(1):
            top = REPO_ROOT / match.group(2)
            assert top.is_dir(), line
        else:
            assert top is not None and (top / match.group(2)).is_dir(), line


# --- Set-up ------------------------------------------------------------------------------------

def test_readme_is_short_and_links_the_rest() -> None:
    """What it is, the two commands, a quickstart per half, the extras, links to docs/ (the
    README was 577 lines with training from line 279, issue 23)."""
    text = README.read_text()
    assert len(text.splitlines()) <= 300, "keep the README short: details go to docs/"
    sections = re.findall(r"^## (.+)$", text, re.M)
    assert sections[0] == "Set-up" and sections[-1] == "More", sections
    assert text.index("## Training on slides in a bucket") < len(text) * 2 // 3
    assert "| run the tests | `test` |" in text and "download.pytorch.org/whl/cpu" in text


def test_setup_commands_are_independent_and_install_from_the_clone() -> None:
    """The two set-up commands use two environments, the service's a plain (not editable)
    install, so the test command's editable reinstall never swaps the files of a running
    viewer (issue 23: OpenSeadragon's script went 404), and the long runs use the test one;
    every install line installs from the clone, as the package is not on PyPI."""
    sh = [s for s in readme_snippets() if s.source == "README.md" and s.kind == "sh"]
    serve = next(s.text for s in sh if s.text.strip().endswith("wsi-streamer serve"))
    test = next(s.text for s in sh if s.text.strip().endswith("&& pytest"))
    envs = [re.findall(r"python3 -m venv (\S+) && \. \1/bin/activate", text)
            for text in (serve, test)]
    assert len(envs[0]) == len(envs[1]) == 1 and envs[0] != envs[1], envs
    assert "pip install . " in serve and "-e" not in serve
    # the bench runners need the test extra (tifffile, psutil, ...): the test environment's
    bench = [line for s in readme_snippets() if s.kind == "sh"
             for line in s.text.splitlines() if " -m bench." in line]
    assert bench and all(line.startswith(f"{envs[1][0]}/bin/python -m bench.") for line in bench)
    lines = [s.text for s in readme_snippets() if "pip install" in s.text]
    assert lines and not [t for t in lines if re.search(r"pip install \S*wsi.streamer", t)]
    assert "not on PyPI" in README.read_text()

def test_setup_serve_writes_and_serves_the_demo_slide(tmp_path: Path) -> None:
    key = "python3 -m venv .venv && . .venv/bin/activate && pip install . && wsi-streamer serve"
    script = substituted(key)
    cwd = tmp_path / "empty"
    cwd.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with background(script, cwd, shell_env(tmp_path, server_env(tmp_path, port)), url,
                    tmp_path / "serve.log"):
        health = requests.get(url + "/health", timeout=10)
        assert health.json()["status"] == "healthy"
        view = requests.get(url + "/view/demo-slide.tif", timeout=30)
        assert view.status_code == 200 and "text/html" in view.headers["Content-Type"]
        info = requests.get(url + "/slides/demo-slide.tif", timeout=30)
        assert info.status_code == 200, info.text
    assert (cwd / "slides" / "demo-slide.tif").is_file()


# --- Serving slides from S3 ----------------------------------------------------------------------

def test_s3_serving_block(tmp_path: Path, s3_bucket: S3Bucket, svs_bytes: bytes) -> None:
    """Each server line of the block (with the block's exports), then /health and a listing.
    The lines written for AWS get the moto endpoint from WSI_S3_ENDPOINT in the environment
    (boto3's credential chain and endpoint stand-in); the MinIO line names its own. The keys
    are emptied in the environment, so the block's own export is what provides them."""
    key = S3_BLOCK
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=f"slides/{SLIDE}", Body=svs_bytes)
    text = substituted(key, bucket=s3_bucket.name, endpoint=s3_bucket.endpoint)
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    exports = [ln for ln in lines if ln.startswith("export ")]
    servers = [ln for ln in lines if not ln.startswith("export ")]
    assert len(servers) == 3 and "gunicorn -c gunicorn.conf.py" in servers[1], servers
    cwd = tmp_path / "checkout"  # gunicorn -c gunicorn.conf.py runs from a checkout
    cwd.mkdir()
    (cwd / "gunicorn.conf.py").write_text((REPO_ROOT / "gunicorn.conf.py").read_text())
    expected = [SLIDE, SLIDE, f"slides/{SLIDE}"]  # the MinIO line has no prefix
    for n, (line, slide_id) in enumerate(zip(servers, expected, strict=True)):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = shell_env(tmp_path, {**server_env(tmp_path, port),
                                   "WSI_S3_ENDPOINT": s3_bucket.endpoint,
                                   "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
        with background("\n".join([*exports, line]), cwd, env, url, tmp_path / f"s3-{n}.log"):
            listing = requests.get(url + "/slides", timeout=30)
            assert listing.status_code == 200, listing.text
            assert listing.json()["slides"] == [slide_id], (line, listing.text)
            info = requests.get(f"{url}/slides/{slide_id}", timeout=30)
            assert info.status_code == 200 and info.json()["width"] == 1536, info.text


def test_check_commands(tmp_path: Path, svs_bytes: bytes) -> None:
    folder = slides_folder(tmp_path / "slides", svs_bytes, SLIDE)
    env = shell_env(tmp_path, {"WSI_SLIDES_DIR": str(folder),
                               "WSI_TILE_CACHE_DIR": str(tmp_path / "tile-cache")})
    for key in ("wsi-streamer check --list-slides --test-slide ID",
                "flask --app wsi_streamer check ..."):
        out = bash(substituted(key, slide=SLIDE), tmp_path, env).stdout
        assert "reachable" in out and f"  {SLIDE}" in out and "tile 0/0/0: 256x256 px" in out
        assert out.rstrip().endswith("ok"), out


# --- API -----------------------------------------------------------------------------------------

def test_curl_block(tmp_path: Path, svs_bytes: bytes) -> None:
    from PIL import Image

    folder = slides_folder(tmp_path / "slides", svs_bytes, SLIDE, "folder/slide.svs")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = shell_env(tmp_path, {**server_env(tmp_path, port), "WSI_SLIDES_DIR": str(folder)})
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    with background("exec wsi-streamer serve", cwd, env, url, tmp_path / "serve.log"):
        out = bash(substituted("curl localhost:3000/slides", port=str(port)), cwd, env).stdout
    assert '"folder/slide.svs"' in out and f'"{SLIDE}"' in out
    assert '"width":1536' in out.replace(" ", "") and "<Image" in out  # metadata, DZI
    with Image.open(cwd / "tile.jpg") as tile:
        assert tile.format == "JPEG" and tile.size == (256, 128)  # the last row: 1152 px
    with Image.open(cwd / "thumb.jpg") as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) == 256


def test_sign_url_block_is_accepted_by_the_server(tmp_path: Path, svs_bytes: bytes) -> None:
    key = "export WSI_AUTH_SECRET=change-me"
    secret = re.match(r"export WSI_AUTH_SECRET=(\S+)", snippet(key).text)
    assert secret
    folder = slides_folder(tmp_path / "slides", svs_bytes, SLIDE, "a.svs")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = shell_env(tmp_path, {**server_env(tmp_path, port), "WSI_SLIDES_DIR": str(folder),
                               "WSI_AUTH_ENABLED": "true", "WSI_AUTH_SECRET": secret.group(1)})
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    with background("exec wsi-streamer serve", cwd, env, url, tmp_path / "serve.log"):
        cli_env = {k: v for k, v in env.items() if k != "WSI_AUTH_SECRET"}  # the block sets it
        out = bash(substituted(key, url=url), cwd, cli_env).stdout.splitlines()
        assert len(out) == 2, out
        view_url, signed = out[0], json.loads(out[1])
        assert view_url.startswith(f"{url}/view/{SLIDE}?")
        assert requests.get(f"{url}/view/{SLIDE}", timeout=30).status_code == 401  # auth is on
        view = requests.get(view_url, timeout=30)
        assert view.status_code == 200 and "text/html" in view.headers["Content-Type"]
        assert signed["params"] == {"quality": "90"} and signed["url"].startswith("/tiles/")
        tile = requests.get(url + signed["url"], timeout=30)
        assert tile.status_code == 200 and tile.headers["Content-Type"] == "image/jpeg"


# --- Reading slides from Python ------------------------------------------------------------------

OPEN_SLIDE_CHECKS = """
from PIL import Image
assert slide.dimensions == (1536, 1152) and slide.format_name
assert isinstance(tile, Image.Image) and tile.mode == "RGB" and tile.size == (256, 256)
assert region.size == (512, 512) and region.getpixel((0, 511)) == (255, 255, 255)
assert overview.size == (256, 256) and level == len(slide.levels) - 1
"""


def test_iiif_blocks(tmp_path: Path) -> None:
    """The OpenSeadragon page's script, images and tile source answer (the Chromium test of
    test_viewer_browser.py opens the same page: stock OpenSeadragon on info.json), the
    Mirador body's image and service exist, and the 0.5 um/px example gives 1024 x 1024 px
    of a 0.25 um/px slide (a 2048 px box at level 0)."""
    from tests.fixtures.slides import make_svs

    data = make_svs(2560, 2304, levels=3, tile=256, mpp=0.25).data
    folder = slides_folder(tmp_path / "slides", data, SLIDE)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = shell_env(tmp_path, {**server_env(tmp_path, port), "WSI_SLIDES_DIR": str(folder)})
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    html = snippet('<div id="viewer" style="width: 100%; height: 600px"></div>').text
    body = json.loads(snippet('{"id": "http://localhost:3000/iiif/3/CMU-1-Small-Region.svs'
                              '/full/max/0/default.jpg",').text)
    with background("exec wsi-streamer serve", cwd, env, url, tmp_path / "serve.log"):
        links = re.findall(r'"(http://localhost:3000/[^"]+)"', html)
        assert len(links) == 3, links
        for link in links:
            target = link.replace("http://localhost:3000", url)
            if target.endswith("/images/"):
                target += "home_rest.png"  # a folder: one of the button images in it
            assert requests.get(target, timeout=30).status_code == 200, link
        info = requests.get(url + "/iiif/3/" + SLIDE + "/info.json", timeout=30).json()
        service = body["service"][0]
        assert service["id"].replace("http://localhost:3000", url) == info["id"]
        assert (service["type"], service["profile"]) == (info["type"], info["profile"])
        image = requests.get(body["id"].replace("http://localhost:3000", url), timeout=60)
        assert image.status_code == 200 and image.headers["Content-Type"] == body["format"]
        code = snippet("import io, json, urllib.request").text.replace(
            "http://localhost:3000", url)
        out = run_python(code, snippet("import io, json, urllib.request").line,
                         "assert region.size == (1024, 1024) and side == 2048", None, cwd,
                         shell_env(tmp_path))
    assert "(1024, 1024)" in out


def test_open_slide_block(tmp_path: Path, s3_bucket: S3Bucket, svs_bytes: bytes) -> None:
    key = "from wsi_streamer.slide import open_slide, read_region, SlideNotFound, UnsupportedFormat"
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="slides/case.svs", Body=svs_bytes)
    code = substituted(key, bucket=s3_bucket.name, endpoint=s3_bucket.endpoint)
    out = run_python(code, snippet(key).line, OPEN_SLIDE_CHECKS, None, tmp_path,
                     shell_env(tmp_path))
    assert "(1536, 1152)" in out


# --- Training on slides in a bucket --------------------------------------------------------------

# The shapes the blocks' comments state (`# PatchResult(image (224, 224, 3) uint8, ...)`,
# `# (B, 3, 256, 256) uint8`) are checked: SHAPE is read from the comment.
PIPELINE_CHECKS = """
assert len(calls) == 12, len(calls)
for image, mpp in calls:
    assert image.shape == SHAPE and str(image.dtype) == "uint8", image.shape
    assert abs(mpp - 0.5) <= 0.01, mpp
"""

TORCH_CHECKS = """
import json
assert len(calls) == epochs * steps_per_epoch, len(calls)
for images, mpps in calls:
    assert tuple(images.shape) == (8, *SHAPE[1:]) and str(images.dtype) == "torch.uint8", \
        images.shape
stats = dataset.stats_dict()
assert stats["pipeline/patches_extracted"] >= epochs * steps_per_epoch * 8, stats
saved = [s for s in json.loads(json.dumps(checkpoint["loader"]))["_snapshot"][
    "_worker_snapshots"].values()]
assert all(s["dataset_state"]["pipeline"] is not None for s in saved), saved
"""


def stated_shape(code: str, pattern: str) -> str:
    """``SHAPE = (...)`` from the shape a snippet's comment states (B stands for the batch)."""
    match = re.search(pattern, code)
    assert match, f"the snippet no longer states its shape ({pattern})"
    return f"SHAPE = ({match.group(1).replace('B', 'None')})\n"


def upload(bucket: S3Bucket, paths: list[Path], prefix: str) -> None:
    for path in paths:
        bucket.client.upload_file(str(path), bucket.name, prefix + path.name)


def test_patch_pipeline_block(tmp_path: Path, s3_bucket: S3Bucket,
                              patch_slides: list[Path]) -> None:
    key = "from wsi_streamer.patches import (PatchPipeline, OtsuTissueDetector, RandomSampler,"
    upload(s3_bucket, patch_slides, "tcga/")
    code = substituted(key, bucket=s3_bucket.name, endpoint=s3_bucket.endpoint)
    shape = stated_shape(code, r"image \((\d+, \d+, 3)\) uint8")
    run_python(code, snippet(key).line, shape + PIPELINE_CHECKS, 12, tmp_path,
               shell_env(tmp_path))


def test_torch_dataloader_block(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    """The quickstart on the slide a new user has: the demo slide (``wsi-streamer demo``), as
    the local-S3 block uploads it, under two keys so each of the two DataLoader workers has a
    slide; it must yield every batch the loop asks for. WSI_S3_ENDPOINT in the environment:
    the block names no endpoint (boto3's chain)."""
    pytest.importorskip("torch")
    from wsi_streamer.format.demo import demo_slide_bytes

    key = ("from torchdata.stateful_dataloader import StatefulDataLoader  # torch's DataLoader, "
           "resumable")
    demo = demo_slide_bytes()
    for name in ("demo-0.tif", "demo-1.tif"):
        s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=f"tcga/{name}", Body=demo)
    code = substituted(key, bucket=s3_bucket.name)
    env = shell_env(tmp_path, {"WSI_S3_ENDPOINT": s3_bucket.endpoint})
    shape = stated_shape(code, r"# \((B, 3, \d+, \d+)\) uint8")
    run_python(code, snippet(key).line, shape + TORCH_CHECKS, None, tmp_path, env)


def test_idc_block(tmp_path: Path, s3_bucket: S3Bucket, dicom_series: Any) -> None:
    """The public DICOM collection's block, anonymous, on a loopback ``idc-open-data``
    bucket holding one series made in the run (no request leaves the machine)."""
    folder = dicom_series("jpeg")
    client = s3_bucket.client
    if "idc-open-data" not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket="idc-open-data")
    for path in sorted(folder.glob("*.dcm")):
        client.upload_file(str(path), "idc-open-data", f"series-1/{path.name}",
                           ExtraArgs={"ACL": "public-read"})
    code = substituted(IDC_BLOCK, series="series-1")
    shape = stated_shape(code, r"# \((\d+, \d+, 3)\) uint8")
    env = shell_env(tmp_path, {"WSI_S3_ENDPOINT": s3_bucket.endpoint,
                               "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
    out = run_python(code, snippet(IDC_BLOCK).line, shape, None, tmp_path, env)
    lines = [line for line in out.splitlines() if "idc-open-data/series-1" in line]
    assert len(lines) == 8 and all(str((224, 224, 3)) in line for line in lines), out


def test_local_s3_training_block(tmp_path: Path) -> None:
    """The training quickstart's local S3: moto's server, the demo slide uploaded, and bench
    reading patches from the bucket with the quickstart's recipe."""
    env = shell_env(tmp_path, {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
    out = bash(substituted(LOCAL_S3, port=str(free_port())), tmp_path, env).stdout
    assert "wrote slides/demo-slide.tif" in out, out
    assert re.search(r"^patches +16$", out, re.M) and "patches/s" in out, out


def test_patches_commands(tmp_path: Path, clam_slide: Path) -> None:
    """`wsi-streamer demo slides`, then both preview lines and the bench line, in one folder."""
    from PIL import Image

    env = shell_env(tmp_path)
    out = bash("\n".join([snippet("wsi-streamer demo slides").text,
                          snippet("wsi-streamer patches preview slides/demo-slide.tif -n 32")
                          .text]), tmp_path, env).stdout
    assert "wrote slides/demo-slide.tif" in out, out
    assert "preview.png: demo-slide.tif: 32 patches" in out, out
    with Image.open(tmp_path / "preview.png") as picture:
        assert picture.format == "PNG"
    (tmp_path / "preview.png").unlink()
    key = "wsi-streamer patches preview SLIDE [--recipe uni] [-n 64] -o preview.png"
    out = bash(substituted(key, slide=str(clam_slide)), tmp_path, env).stdout
    assert re.search(r"preview.png: \S+: 16 patches", out), out
    assert (tmp_path / "preview.png").is_file()
    out = bash(substituted("wsi-streamer patches bench SOURCE", folder="slides"), tmp_path,
               env).stdout
    assert re.search(r"^patches +16$", out, re.M) and "patches/s" in out, out


def test_patches_cli_recipe_with_counts(clam_slide: Path) -> None:
    """`--patches-per-slide` with a recipe that sets patches_per_slide (uni) is one value, not
    a TypeError ("got multiple values for keyword argument"); `preview -n` had the same bug,
    which the `preview SLIDE [--recipe uni]` line of test_patches_commands shows."""
    from click.testing import CliRunner

    from wsi_streamer.patches.cli import patches_group

    runner = CliRunner()
    args = ["bench", str(clam_slide), "--recipe", "uni", "-n", "4", "--patches-per-slide", "4",
            "--pool-size", "1", "--no-cache"]
    result = runner.invoke(patches_group, args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert re.search(r"^patches +4$", result.output, re.M), result.output
