"""``check`` (both entry points) against a local folder and a loopback moto S3, and startup
errors for bad configuration: clear output, non-zero exit on failure, never a traceback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import S3Bucket
from tests.integration.conftest_faults import BIN, REPO_ROOT
from tests.servers import free_port

SLIDE_ID = "cases/a.svs"


@pytest.fixture(scope="module")
def slide_bytes() -> bytes:
    from tests.fixtures.slides import make_svs

    return make_svs(600, 400, levels=2, tile=256, associated=False).data


@pytest.fixture
def slides_dir(tmp_path: Path, slide_bytes: bytes) -> Path:
    root = tmp_path / "slides"
    (root / "cases").mkdir(parents=True)
    (root / SLIDE_ID).write_bytes(slide_bytes)
    (root / "notes.txt").write_text("not a slide")
    return root


def cli(args: list[str], env: dict[str, str], entry: str = "flask", timeout: float = 60
        ) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("WSI_")}
    full.update(env)
    cmd = ([str(BIN / "flask"), "--app", "wsi_streamer"] if entry == "flask"
           else [str(BIN / "wsi-streamer")])
    return subprocess.run(cmd + args, cwd=REPO_ROOT, env=full, capture_output=True, text=True,
                          timeout=timeout)


def assert_failed(result: subprocess.CompletedProcess[str], *words: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    for word in words:
        assert word.lower() in output.lower(), output


@pytest.mark.parametrize("entry", ["flask", "wsi-streamer"])
def test_check_local_folder(slides_dir: Path, tmp_path: Path, entry: str) -> None:
    env = {"WSI_SLIDES_DIR": str(slides_dir), "WSI_TILE_CACHE_DIR": str(tmp_path / "tc")}
    result = cli(["check"], env, entry)
    assert result.returncode == 0, result.stderr
    assert "reachable" in result.stdout
    result = cli(["check", "--list-slides", "--test-slide", SLIDE_ID], env, entry)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert SLIDE_ID in out and "notes.txt" not in out
    assert "Aperio SVS" in out and "600x400" in out and "2 levels" in out
    assert "tile 0/0/0: 256x256 px" in out
    assert out.rstrip().endswith("ok")


def test_check_local_failures(slides_dir: Path, tmp_path: Path) -> None:
    env = {"WSI_SLIDES_DIR": str(slides_dir), "WSI_TILE_CACHE_DIR": str(tmp_path / "tc")}
    assert_failed(cli(["check", "--test-slide", "cases/missing.svs"], env),
                  "cases/missing.svs", "not found")
    assert_failed(cli(["check", "--test-slide", "../../etc/passwd"], env), "failed")
    (slides_dir / "bad.svs").write_bytes(b"II*\0" + b"\xff" * 100)
    assert_failed(cli(["check", "--test-slide", "bad.svs"], env), "bad.svs", "failed")
    gone = {"WSI_SLIDES_DIR": str(tmp_path / "nowhere"),
            "WSI_TILE_CACHE_DIR": str(tmp_path / "tc")}
    assert_failed(cli(["check"], gone), "failed", "does not exist")


def _s3_env(bucket: str, endpoint: str, tmp_path: Path) -> dict[str, str]:
    return {"WSI_S3_BUCKET": bucket, "WSI_S3_ENDPOINT": endpoint,
            "WSI_TILE_CACHE_DIR": str(tmp_path / "tc")}


@pytest.mark.parametrize("entry", ["flask", "wsi-streamer"])
def test_check_s3(s3_bucket: S3Bucket, slide_bytes: bytes, tmp_path: Path, entry: str) -> None:
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=SLIDE_ID, Body=slide_bytes)
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="readme.md", Body=b"x")
    env = _s3_env(s3_bucket.name, s3_bucket.endpoint, tmp_path)
    result = cli(["check", "--list-slides", "--test-slide", SLIDE_ID], env, entry)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"s3://{s3_bucket.name}/" in out and "reachable" in out
    assert SLIDE_ID in out and "readme.md" not in out
    assert "tile 0/0/0: 256x256 px" in out and out.rstrip().endswith("ok")


def test_check_s3_failures(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    env = _s3_env(s3_bucket.name, s3_bucket.endpoint, tmp_path)
    assert_failed(cli(["check", "--test-slide", "missing.svs"], env), "missing.svs",
                  "not found")
    missing_bucket = _s3_env("no-such-bucket-here", s3_bucket.endpoint, tmp_path)
    assert_failed(cli(["check"], missing_bucket), "no-such-bucket-here", "failed")
    down = _s3_env(s3_bucket.name, f"http://127.0.0.1:{free_port()}", tmp_path)
    # A refused endpoint fails instead of hanging: cli()'s 60 s subprocess timeout is the
    # hang bound (no wall-clock assert: interpreter start-up alone varies on a loaded host).
    assert_failed(cli(["check"], down), "unreachable")


@pytest.mark.parametrize("env, variable", [
    ({"WSI_CACHE_BLOCKS": "12XB"}, "WSI_CACHE_BLOCKS"),
    ({"WSI_AUTH_ENABLED": "true"}, "WSI_AUTH_SECRET"),
    ({"WSI_PORT": "http"}, "WSI_PORT"),
])
def test_config_errors_name_the_variable(env: dict[str, str], variable: str,
                                         tmp_path: Path) -> None:
    env = dict(env, WSI_SLIDES_DIR=str(tmp_path), WSI_TILE_CACHE_DIR=str(tmp_path / "tc"))
    assert_failed(cli(["check"], env, "wsi-streamer"), variable)
    # flask's own loader prints the exception (with flask's traceback) but names it too.
    result = cli(["check"], env, "flask")
    assert result.returncode != 0
    assert variable in result.stderr
    # The production server refuses to start, saying why.
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("WSI_")}
    full.update(env, WSI_HOST="127.0.0.1", WSI_PORT=str(port), WSI_WORKERS="1")
    if variable == "WSI_PORT":
        return  # gunicorn's bind address itself is what is wrong
    server = subprocess.run([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py"], cwd=REPO_ROOT,
                            env=full, capture_output=True, text=True, timeout=60)
    assert server.returncode != 0
    assert variable in server.stderr + server.stdout
