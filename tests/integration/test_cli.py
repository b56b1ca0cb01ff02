"""``check`` (both entry points) against a local folder and a loopback moto S3, and startup
errors for bad configuration: clear output, non-zero exit on failure, never a traceback."""

from __future__ import annotations

import json
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


def cli(args: list[str], env: dict[str, str], entry: str = "flask", timeout: float = 60,
        drop_aws_keys: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a command with ``env`` over the inherited environment less its ``WSI_*`` (and,
    with ``drop_aws_keys``, less the session's fake AWS keys: ``env`` gives its own or none).
    """
    full = {k: v for k, v in os.environ.items() if not k.startswith("WSI_")}
    if drop_aws_keys:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                     "AWS_SECURITY_TOKEN"):
            full.pop(name, None)
    full.update({k: v for k, v in env.items() if v != "" or not k.startswith("AWS_")})
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


# --- issue 14: the console script as operators meet it --------------------------------------

def _one_failure_line(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """The run failed with one line (no traceback) holding every word; that line."""
    assert_failed(result, *words)
    lines = [ln for ln in (result.stdout + result.stderr).splitlines()
             if "FAILED" in ln or ln.startswith("Error:")]
    assert len(lines) == 1, result.stdout + result.stderr
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]
    return lines[0]


def test_help_and_version_build_nothing(tmp_path: Path) -> None:
    """With a configuration that cannot start (bad size, missing folder), help and version
    still answer: nothing is built, nothing logged."""
    env = {"WSI_CACHE_BLOCKS": "12XB", "WSI_SLIDES_DIR": str(tmp_path / "nowhere")}
    top = cli(["--help"], env, "wsi-streamer")
    assert top.returncode == 0, top.stderr
    assert "whole-slide images" in top.stdout and "Show the Flask version" not in top.stdout
    assert top.stderr == "" and "serving" not in top.stdout
    for command in ("serve", "check", "sign-url", "demo"):
        sub = cli([command, "--help"], env, "wsi-streamer")
        assert sub.returncode == 0 and sub.stderr == "", sub.stderr
    serve = cli(["serve", "--help"], env, "wsi-streamer").stdout
    assert "[env WSI_JPEG_QUALITY; default: 80]" in " ".join(serve.split())
    # issue 23: each value shows its real type, not TEXT
    for shown in ("--port INTEGER", "--cache-blocks SIZE", "--request-deadline SECONDS",
                  "--color-mode [embed|srgb|ignore]", "--slides-dir PATH"):
        assert shown in serve, shown
    version = cli(["--version"], env, "wsi-streamer")
    assert version.returncode == 0 and version.stderr == ""
    assert version.stdout.startswith("wsi_streamer ") and "pylibjpeg" in version.stdout
    assert not (tmp_path / "nowhere").exists()
    flask = cli(["--help"], {"WSI_SLIDES_DIR": str(tmp_path)}, "flask")
    assert flask.returncode == 0 and "check" in flask.stdout and "sign-url" in flask.stdout


def _tile_headers(url: str, origin: str) -> tuple[int, dict[str, str]]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"Origin": origin})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - loopback
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers)


def test_serve_flags_reach_the_running_app(slides_dir: Path, tmp_path: Path) -> None:
    """A real ``wsi-streamer serve``: each flag wins over its variable in the workers' config
    (seen in what they serve), and the secret comes from a file, never the command line."""
    from tests.servers import stop_process, wait_healthy
    from wsi_streamer.server.auth import signed_url

    secret = tmp_path / "secret"
    secret.write_text("file-secret-0123\n")
    port = free_port()
    args = [str(slides_dir), "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--threads", "2", "--jpeg-quality", "55", "--cache-max-age", "77",
            "--cors-origins", "https://a.example", "--auth-enabled",
            "--auth-secret-file", str(secret), "--tile-cache-dir", str(tmp_path / "tc"),
            "--log-format", "json"]
    full = {k: v for k, v in os.environ.items() if not k.startswith("WSI_")}
    full.update(WSI_JPEG_QUALITY="90", WSI_CACHE_MAX_AGE="5", WSI_CORS_ORIGINS="*",
                WSI_AUTH_SECRET="variable-secret", WSI_LOG_FORMAT="text",
                WSI_PORT=str(free_port()))
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(BIN / "wsi-streamer"), "serve", *args], cwd=REPO_ROOT,
                                   env=full, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(process, url, log.read_text, timeout=60)
        path = f"/tiles/{SLIDE_ID}/0/0/0.jpg"
        status, _ = _tile_headers(url + path, "https://a.example")
        assert status == 401  # --auth-enabled
        assert _tile_headers(url + signed_url("variable-secret", path, 60), "x")[0] == 401
        status, headers = _tile_headers(url + signed_url("file-secret-0123", path, 3600),
                                        "https://a.example")
        assert status == 200, headers
        assert headers["X-Tile-Quality"] == "55"
        assert headers["Cache-Control"] == "public, max-age=77"
        assert headers["Access-Control-Allow-Origin"] == "https://a.example"
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        assert b"file-secret-0123" not in cmdline
        access = [json.loads(line) for line in log.read_text().splitlines()
                  if '"wsi_streamer.access"' in line]
        assert any(r["path"] == path and r["status"] == 200 for r in access)  # --log-format
    finally:
        stop_process(process)


def test_serve_source_wins_over_storage_variables(tmp_path: Path) -> None:
    """``WSI_STORAGE=<a CDN> WSI_S3_BUCKET=prod wsi-streamer serve <empty folder>`` serves
    the folder (with its demo slide), not the CDN or the bucket."""
    import urllib.request

    from tests.servers import stop_process, wait_healthy

    folder = tmp_path / "empty"
    folder.mkdir()  # a named folder must exist; only ./slides is created (issue 23)
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("WSI_")}
    full.update(WSI_STORAGE=f"http://127.0.0.1:{free_port()}/cdn", WSI_S3_BUCKET="prod",
                WSI_TILE_CACHE_DIR=str(tmp_path / "tc"), PROMETHEUS_MULTIPROC_DIR="")
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(BIN / "wsi-streamer"), "serve", str(folder), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1", "--threads", "2"],
            cwd=REPO_ROOT, env=full, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(process, url, log.read_text, timeout=60)
        with urllib.request.urlopen(url + "/slides", timeout=30) as resp:  # noqa: S310
            listing = json.loads(resp.read())
        assert "demo-slide.tif" in json.dumps(listing), listing
        assert (folder / "demo-slide.tif").is_file()
        assert f"{folder} was empty" in log.read_text()
        # issue 23: the start prints the first slide's viewer, and / links to it
        assert f"viewer of demo-slide.tif: {url}/view/demo-slide.tif" in log.read_text()
        with urllib.request.urlopen(url + "/", timeout=30) as resp:  # noqa: S310
            assert 'href="/view/demo-slide.tif"' in resp.read().decode()
        with urllib.request.urlopen(url + "/health/ready", timeout=30) as resp:  # noqa: S310
            assert json.loads(resp.read())["status"] == "ready"
    finally:
        stop_process(process)


@pytest.mark.parametrize("problem", ["shared", "holds cache.db"])
def test_serve_refuses_an_unsafe_metrics_folder(problem: str, tmp_path: Path) -> None:
    """An explicit PROMETHEUS_MULTIPROC_DIR that others can write, or that holds another
    program's ``*.db`` (a diskcache ``cache.db``), is refused in one line naming the
    variable, and nothing in it is deleted."""
    folder = tmp_path / "metrics"
    folder.mkdir(mode=0o700)
    if problem == "shared":
        folder.chmod(0o777)
        kept, words = folder / "counter_1.db", ["writable by group"]
    else:
        kept, words = folder / "cache.db", ["cache.db", "folder of their own"]
    kept.write_bytes(b"someone else's")
    env = {"PROMETHEUS_MULTIPROC_DIR": str(folder), "WSI_TILE_CACHE_DIR": str(tmp_path / "tc"),
           "WSI_HOST": "127.0.0.1", "WSI_PORT": str(free_port())}
    # (Before the fix the server started instead, and the 30 s subprocess timeout ended it.)
    (tmp_path / "slides").mkdir()
    result = cli(["serve", str(tmp_path / "slides")], env, "wsi-streamer", timeout=30)
    _one_failure_line(result, "PROMETHEUS_MULTIPROC_DIR", str(folder), *words)
    assert kept.read_bytes() == b"someone else's"


def test_serve_port_in_use(slides_dir: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli(["serve", str(slides_dir), "--host", "127.0.0.1", "--port", str(port)],
                     {}, "wsi-streamer")
    _one_failure_line(result, f"port {port}", "already in use", "--port", "WSI_PORT")


def test_check_missing_folder_says_what_to_do(tmp_path: Path) -> None:
    env = {"WSI_SLIDES_DIR": str(tmp_path / "nowhere"),
           "WSI_TILE_CACHE_DIR": str(tmp_path / "tc")}
    _one_failure_line(cli(["check"], env, "wsi-streamer"), str(tmp_path / "nowhere"),
                      "does not exist", "WSI_SLIDES_DIR")


def test_check_s3_one_line_errors(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    env = _s3_env(s3_bucket.name, s3_bucket.endpoint, tmp_path)
    no_keys = dict(env, AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="", AWS_SESSION_TOKEN="",
                   AWS_SECURITY_TOKEN="")
    result = cli(["check"], no_keys, "wsi-streamer", drop_aws_keys=True)
    _one_failure_line(result, "no AWS credentials", "AWS_ACCESS_KEY_ID",
                      "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE")
    _one_failure_line(cli(["check"], _s3_env("nope", s3_bucket.endpoint, tmp_path),
                          "wsi-streamer"), "bucket nope", "does not exist", "WSI_S3_BUCKET")
    port = free_port()
    _one_failure_line(cli(["check"], _s3_env(s3_bucket.name, f"http://127.0.0.1:{port}",
                                             tmp_path), "wsi-streamer"),
                      "unreachable", f"http://127.0.0.1:{port}", "WSI_S3_ENDPOINT")


def test_check_s3_access_denied(tmp_path: Path) -> None:
    """A moto server that enforces IAM after its first three calls (user, key, bucket): the
    new user's key has no policy, so reading the bucket is denied."""
    import boto3

    from tests.servers import stop_process

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
    server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port, server)
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")
        iam.create_user(UserName="reader")
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket="locked")
        denied = dict(_s3_env("locked", endpoint, tmp_path),
                      AWS_ACCESS_KEY_ID=key["AccessKeyId"],
                      AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])
        result = cli(["check"], denied, "wsi-streamer", drop_aws_keys=True)
        _one_failure_line(result, "bucket locked", "access denied", "AWS_ACCESS_KEY_ID",
                          "policy")
    finally:
        stop_process(server)  # type: ignore[arg-type]


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    import socket
    import time

    for _ in range(300):  # bounded: 30 s
        assert process.poll() is None, "moto_server exited"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError("moto_server did not listen")


# --- issue 23: serve fails fast, and a typo is not a new folder -----------------------------

def test_serve_refuses_storage_that_cannot_work(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    """``serve s3://...`` with no credentials, a missing bucket or a refused endpoint exits
    non-zero with the ``check`` command's one line, instead of starting and answering 500s.
    (Before the fix the server started, and the subprocess timeout ended it.)"""
    base = {"WSI_TILE_CACHE_DIR": str(tmp_path / "tc"), "WSI_HOST": "127.0.0.1",
            "WSI_PORT": str(free_port()), "WSI_WORKERS": "1"}
    no_keys = dict(base, AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="", AWS_SESSION_TOKEN="",
                   AWS_SECURITY_TOKEN="")
    result = cli(["serve", f"s3://{s3_bucket.name}", "--s3-endpoint", s3_bucket.endpoint],
                 no_keys, "wsi-streamer", timeout=45, drop_aws_keys=True)
    _one_failure_line(result, "no AWS credentials", "AWS_ACCESS_KEY_ID")
    result = cli(["serve", "s3://no-such-bucket-23", "--s3-endpoint", s3_bucket.endpoint],
                 base, "wsi-streamer", timeout=45)
    _one_failure_line(result, "no-such-bucket-23", "does not exist")
    down = f"http://127.0.0.1:{free_port()}"
    result = cli(["serve", f"s3://{s3_bucket.name}", "--s3-endpoint", down], base,
                 "wsi-streamer", timeout=45)
    _one_failure_line(result, "unreachable", down)


@pytest.mark.parametrize("how", ["SOURCE", "--slides-dir", "WSI_SLIDES_DIR"])
def test_serve_refuses_a_mistyped_folder(how: str, tmp_path: Path) -> None:
    """A named folder that does not exist is an error naming it; nothing is created."""
    typo = tmp_path / "slidez"
    env = {"WSI_TILE_CACHE_DIR": str(tmp_path / "tc"), "WSI_HOST": "127.0.0.1",
           "WSI_PORT": str(free_port())}
    args = ["serve"]
    if how == "SOURCE":
        args.append(str(typo))
    elif how == "--slides-dir":
        args += ["--slides-dir", str(typo)]
    else:
        env["WSI_SLIDES_DIR"] = str(typo)
    result = cli(args, env, "wsi-streamer", timeout=30)
    _one_failure_line(result, str(typo), "does not exist", how)
    assert not typo.exists()


# --- issue 23: one spelling per option, one line per failure --------------------------------

def test_check_takes_source_and_the_storage_flags(s3_bucket: S3Bucket, slide_bytes: bytes,
                                                  tmp_path: Path) -> None:
    """``check`` names its storage as ``serve`` does: SOURCE and ``--s3-endpoint``."""
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=SLIDE_ID, Body=slide_bytes)
    result = cli(["check", f"s3://{s3_bucket.name}", "--s3-endpoint", s3_bucket.endpoint,
                  "--list-slides"], {"WSI_TILE_CACHE_DIR": str(tmp_path / "tc")},
                 "wsi-streamer")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"s3://{s3_bucket.name}/" in result.stdout and SLIDE_ID in result.stdout


def test_patches_commands_fail_in_one_line(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    """An existing file the pipeline cannot read, and a bucket without credentials: one
    ``Error:`` line, exit 1, advice naming this command's own flags and variables."""
    from tests.unit.server.test_one_spelling import _ndpi_like

    ndpi = tmp_path / "x.ndpi"
    ndpi.write_bytes(_ndpi_like())
    result = cli(["patches", "preview", str(ndpi), "-o", str(tmp_path / "p.png")], {},
                 "wsi-streamer")
    line = _one_failure_line(result, "patches preview", "x.ndpi", "not supported",
                             "--openslide-fallback")
    assert "slide not found" not in line and "could not open" not in result.stderr, (
        result.stderr)  # no warning line before the Error line
    no_keys = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "",
               "AWS_SECURITY_TOKEN": ""}
    result = cli(["patches", "bench", f"s3://{s3_bucket.name}/x/", "--s3-endpoint",
                  s3_bucket.endpoint, "-n", "5"], no_keys, "wsi-streamer",
                 drop_aws_keys=True)
    line = _one_failure_line(result, "patches bench", "AWS_ACCESS_KEY_ID")
    assert "WSI_S3_BUCKET" not in line
    result = cli(["patches", "bench", "s3://no-such-bucket-23/x/", "--s3-endpoint",
                  s3_bucket.endpoint, "-n", "5"], {}, "wsi-streamer")
    line = _one_failure_line(result, "patches bench", "no-such-bucket-23")
    assert "WSI_S3_BUCKET" not in line, line
