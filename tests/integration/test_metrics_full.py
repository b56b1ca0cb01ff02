"""A full metrics folder never takes the server down (issue 26, item 3): real gunicorn with 2
workers and ``PROMETHEUS_MULTIPROC_DIR`` on a tiny tmpfs (mounted in a private mount namespace:
``unshare -m``). Full before the start: every request is answered, ``/metrics`` is 503
``metrics_off``, the log has one warning and gunicorn booted 2 workers, not a restart loop (it
was SIGBUS at every boot: prometheus_client writes through a mapping of a sparse file). Filled
after the start: new label values keep coming and no worker dies."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.conftest_faults import REPO_ROOT, http_get
from tests.servers import free_port, stop_process, wait_healthy

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("nsenter") is None,
    reason="a tmpfs in a private mount namespace needs root and util-linux (unshare, nsenter)")

SLIDE = "m.svs"
# Routes and statuses that each add label values (new records in the metric files).
PATHS = [f"/tiles/{SLIDE}/0/{x}/{y}.jpg" for x in range(4) for y in range(2)] + [
    f"/slides/{SLIDE}", f"/slides/{SLIDE}/dzi", "/slides", "/no/such/route",
    "/tiles/missing.svs/0/0/0.jpg", f"/tiles/{SLIDE}/9/0/0.jpg", f"/view/{SLIDE}",
    f"/slides/{SLIDE}/thumbnail?max_size=64"]
EXPECTED = {"/no/such/route": 404, "/tiles/missing.svs/0/0/0.jpg": 404,
            f"/tiles/{SLIDE}/9/0/0.jpg": 400}


@pytest.fixture(scope="module")
def slides_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.fixtures.slides import make_svs

    folder = tmp_path_factory.mktemp("slides")
    (folder / SLIDE).write_bytes(make_svs(1024, 512, levels=1, tile=256,
                                          associated=False).data)
    return folder


@contextmanager
def gunicorn_on_tmpfs(tmp_path: Path, slides_dir: Path, size: str, fill: bool
                      ) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """2 workers, ``PROMETHEUS_MULTIPROC_DIR`` a tmpfs of ``size`` (filled first when
    ``fill``) visible to gunicorn only; (the master, its URL, its log)."""
    metrics = tmp_path / "metrics"
    metrics.mkdir(mode=0o700)
    port = free_port()
    env = {**os.environ, "WSI_HOST": "127.0.0.1", "WSI_PORT": str(port), "WSI_WORKERS": "2",
           "WSI_THREADS": "4", "WSI_SLIDES_DIR": str(slides_dir),
           "WSI_TILE_CACHE_DIR": str(tmp_path / "tiles"), "WSI_LOG_LEVEL": "info",
           "PROMETHEUS_MULTIPROC_DIR": str(metrics), "PYTHONUNBUFFERED": "1"}
    filling = f"dd if=/dev/zero of={metrics}/fill bs=4k 2>/dev/null; " if fill else ""
    script = (f"mount -t tmpfs -o size={size},mode=0700 tmpfs {metrics} && {filling}"
              f"exec {Path(sys.executable).with_name('gunicorn')} -c gunicorn.conf.py")
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                                    script], cwd=REPO_ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(process, url, lambda: log_path.read_text(errors="replace"), timeout=60)
        yield process, url, log_path
    finally:
        stop_process(process)


def answered(url: str) -> dict[str, int]:
    statuses = {path: http_get(url + path, timeout=30)[0] for path in PATHS}
    assert statuses == {path: EXPECTED.get(path, 200) for path in PATHS}
    return statuses


def boots(log_path: Path) -> int:
    return log_path.read_text(errors="replace").count("Booting worker")


def test_full_at_start_metrics_off_server_up(tmp_path: Path, slides_dir: Path) -> None:
    with gunicorn_on_tmpfs(tmp_path, slides_dir, "64k", fill=True) as (process, url, log):
        for _ in range(3):
            answered(url)
        status, _, body = http_get(url + "/metrics")
        assert status == 503
        error = json.loads(body)
        assert error["error"] == "metrics_off"
        assert "PROMETHEUS_MULTIPROC_DIR" in error["message"] and "free" in error["message"]
        assert boots(log) == 2, log.read_text()[-3000:]
        assert process.poll() is None
    text = log.read_text(errors="replace")
    warnings = [line for line in text.splitlines() if "metrics off" in line]
    assert len(warnings) == 1, warnings
    assert "PROMETHEUS_MULTIPROC_DIR" in warnings[0] and "Traceback" not in text


def test_filled_after_start_no_worker_dies(tmp_path: Path, slides_dir: Path) -> None:
    with gunicorn_on_tmpfs(tmp_path, slides_dir, "2m", fill=False) as (process, url, log):
        assert http_get(url + "/metrics")[0] == 200
        started = boots(log)
        assert started == 2
        subprocess.run(["nsenter", "-t", str(process.pid), "-m", "sh", "-c",
                        f"dd if=/dev/zero of={tmp_path / 'metrics'}/fill bs=4k 2>/dev/null; "
                        f"df {tmp_path / 'metrics'}"], check=False, timeout=30)
        for _ in range(3):
            answered(url)
        assert http_get(url + "/metrics")[0] in (200, 503)  # 503 only if a file had to grow
        assert boots(log) == started, log.read_text()[-3000:]
        assert process.poll() is None
