"""The one settings table (``config.SETTINGS``, issue 14): ``Config`` fields, variables,
``serve`` flags and the README's configuration table agree; every flag overrides its variable
in the ``Config`` the workers build; secrets never are flags; ``--help`` and ``--version``
build nothing; gunicorn's settings come from the same validated ``Config``."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from wsi_streamer.config import SETTINGS, SETTINGS_BY_FIELD, Config, setting_from_env
from wsi_streamer.errors import ConfigError
from wsi_streamer.io.location import StorageSpec
from wsi_streamer.server import cli
from wsi_streamer.server.gunicorn_settings import settings as gunicorn_settings
from wsi_streamer.server.services import storage_of

ENSURE_DEMO = cli.ensure_demo_slide  # the real one, before Captured replaces it
README = Path(__file__).resolve().parents[3] / "README.md"

# A valid value, other than the default, for every setting (as a user would type it).
SAMPLES = {
    "host": "127.0.0.2", "port": "3456", "storage": "https://tiles.example.org/slides",
    "s3_bucket": "my-bucket", "s3_prefix": "cases/2024", "s3_endpoint": "http://minio:9000",
    "s3_region": "eu-west-3", "s3_anonymous": "true", "slides_dir": "/srv/slides",
    "openslide_fallback": "true",
    "associated_images": "true", "color_mode": "srgb", "auth_enabled": "true",
    "auth_secret": "s3cr3t", "auth_secret_file": "SECRET_FILE", "signature_ttl": "120",
    "cache_slides": "7", "cache_blocks": "64MB", "block_size": "64KB", "cache_tiles": "1GB",
    "tile_cache_dir": "/var/cache/wsi", "jpeg_quality": "55", "cache_max_age": "77",
    "cors_origins": "https://a.example,https://b.example", "threads": "3",
    "revalidate_s": "5", "request_deadline": "2.5", "overview_deadline": "12",
    "storage_deadline": "9", "http_redirects": "none",
    "workers": "2", "keepalive": "5", "worker_timeout": "30",
    "max_requests": "1000", "log_level": "warning", "log_format": "json",
    "forwarded_allow_ips": "10.0.0.1", "control_socket": "true", "metrics_dir": "/run/metrics",
}


def test_every_field_has_one_setting_and_a_sample() -> None:
    names = [f.name for f in dataclasses.fields(Config)]
    assert names == [s.field for s in SETTINGS]
    assert set(SAMPLES) == set(names)
    assert len({s.env for s in SETTINGS}) == len(SETTINGS)
    assert len({s.option for s in SETTINGS if s.option}) == len([s for s in SETTINGS
                                                                if s.option])


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_documented_default_is_the_config_default(setting: Any) -> None:
    default = next(f.default for f in dataclasses.fields(Config) if f.name == setting.field)
    if default is None:
        assert setting.default in ("none", "min(4, cores)") or "$TMPDIR" in setting.default
    elif setting.default == "empty":
        assert default == ""
    else:
        assert setting.parse(setting.default) == default


def readme_rows() -> dict[str, tuple[str, str]]:
    """``variable -> (flag, default)`` of the README's configuration table."""
    section = README.read_text().split("## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = (cells[1].strip("`"), cells[2].strip("`"))
    return rows


def test_readme_table_is_the_settings_table() -> None:
    rows = readme_rows()
    assert list(rows) == [s.env for s in SETTINGS]
    for setting in SETTINGS:
        flag, default = rows[setting.env]
        assert default == setting.default, setting.env
        assert flag == (setting.option or "(none: a secret)"), setting.env


def test_secrets_are_never_flags() -> None:
    secret = [s for s in SETTINGS if s.secret]
    assert [s.env for s in secret] == ["WSI_AUTH_SECRET"]
    assert all(s.option is None for s in secret)
    result = CliRunner().invoke(cli.main, ["serve", "--auth-secret", "x"])
    assert result.exit_code == 2 and "No such option" in result.output


class Captured:
    """``serve`` with gunicorn replaced: the environment it would have started with."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.environ: dict[str, str] | None = None
        self.demo_folders: list[str] = []  # where serve wrote (here: would write) a demo slide
        monkeypatch.setattr(cli, "run_gunicorn", self._run)
        monkeypatch.setattr(cli, "check_port_free", lambda host, port: None)
        monkeypatch.setattr(cli, "ensure_demo_slide", self._demo)
        monkeypatch.setattr(cli, "require_folder", lambda folder, named_by: None)
        monkeypatch.setattr(cli, "startup_check", lambda config: ("(not checked)", None))

    def _run(self, environ: dict[str, str]) -> None:
        self.environ = dict(environ)

    def _demo(self, folder: str) -> None:
        self.demo_folders.append(folder)

    def config(self) -> Config:
        assert self.environ is not None
        return Config.from_env(self.environ)

    def served(self) -> StorageSpec:
        """Where the workers would read slides (``services.storage_of``, as they do)."""
        return storage_of(self.config())[0]


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("WSI_") or name == "PROMETHEUS_MULTIPROC_DIR":
            monkeypatch.delenv(name)


# Variables that outrank a location flag in ``services.storage_of`` (WSI_STORAGE over the
# aliases, WSI_S3_BUCKET over WSI_SLIDES_DIR): set too, the flag must still win.
COMPETING = {
    "storage": {"WSI_S3_BUCKET": "env-bucket", "WSI_SLIDES_DIR": "/env/slides"},
    "s3_bucket": {"WSI_STORAGE": "https://env.example/p", "WSI_SLIDES_DIR": "/env/slides"},
    "s3_prefix": {"WSI_STORAGE": "s3://env-bucket/env-prefix", "WSI_SLIDES_DIR": "/env/slides"},
    "slides_dir": {"WSI_STORAGE": "https://env.example/p", "WSI_S3_BUCKET": "env-bucket"},
}
SERVED = {
    "storage": StorageSpec("https", "tiles.example.org", "slides"),
    "s3_bucket": StorageSpec("s3", "my-bucket", ""),
    "s3_prefix": StorageSpec("s3", "env-bucket", "cases/2024"),  # the variable's bucket
    "slides_dir": StorageSpec("file", "", "/srv/slides"),
}


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.option], ids=lambda s: s.option)
def test_each_flag_overrides_its_variable(setting: Any, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    """flag -> the workers' environment -> ``Config.from_env``: the field has the flag's
    value although the variable says something else (or the default)."""
    _clean_env(monkeypatch)
    captured = Captured(monkeypatch)
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-the-file\n")
    sample = SAMPLES[setting.field].replace("SECRET_FILE", str(secret_file))
    env = {"WSI_AUTH_SECRET": "from-the-variable"}  # auth_enabled needs a secret
    if not setting.boolean and setting.field != "auth_secret_file":
        env[setting.env] = setting.default if setting.default[0] not in "n$me" else "x"
        if setting.field in ("workers",):
            env[setting.env] = "5"
    env.update(COMPETING.get(setting.field, {}))
    args = ["serve", setting.option if setting.boolean else f"{setting.option}={sample}"]
    result = CliRunner().invoke(cli.main, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    config = captured.config()
    expected = setting.parse(sample)
    if setting.field == "auth_secret_file":
        assert config.auth_secret == "from-the-file"  # the file wins over the variable
    assert getattr(config, setting.field) == expected
    if setting.field in SERVED:  # the storage the workers open is the flag's
        assert captured.served() == SERVED[setting.field]


def test_booleans_have_a_negative_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    captured = Captured(monkeypatch)
    result = CliRunner().invoke(cli.main, ["serve", "--no-control-socket"],
                                env={"WSI_CONTROL_SOCKET": "true"})
    assert result.exit_code == 0, result.output
    assert captured.config().control_socket is False


def test_source_argument(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _clean_env(monkeypatch)
    captured = Captured(monkeypatch)
    for source, served in (("s3://bkt/a/b", StorageSpec("s3", "bkt", "a/b")),
                           ("https://h.example/p", StorageSpec("https", "h.example", "p")),
                           (str(tmp_path), StorageSpec("file", "", str(tmp_path)))):
        result = CliRunner().invoke(cli.main, ["serve", source])
        assert result.exit_code == 0, result.output
        assert captured.served() == served
    assert captured.demo_folders == [str(tmp_path)]  # only the folder gets a demo slide


@pytest.mark.parametrize(("env", "source", "served"), [
    ({"WSI_STORAGE": "https://cdn.example/p"}, "FOLDER", StorageSpec("file", "", "FOLDER")),
    ({"WSI_S3_BUCKET": "prod"}, "FOLDER", StorageSpec("file", "", "FOLDER")),
    ({"WSI_STORAGE": "file:///srv"}, "s3://other/x", StorageSpec("s3", "other", "x")),
    ({"WSI_S3_BUCKET": "prod", "WSI_S3_PREFIX": "old", "WSI_SLIDES_DIR": "/env"},
     "https://h.example/p", StorageSpec("https", "h.example", "p")),
    ({"WSI_STORAGE": "s3://prod/p", "WSI_SLIDES_DIR": "/env"}, "s3://other",
     StorageSpec("s3", "other", "")),
], ids=["cdn-vs-folder", "bucket-vs-folder", "file-vs-s3", "bucket-vs-https", "s3-vs-s3"])
def test_source_wins_over_the_environment(env: dict[str, str], source: str,
                                          served: StorageSpec, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    """``WSI_STORAGE=https://cdn.example/p wsi-streamer serve /tmp`` serves /tmp: SOURCE is
    WSI_STORAGE, above every storage variable of the environment."""
    _clean_env(monkeypatch)
    captured = Captured(monkeypatch)
    folder = str(tmp_path / "slides")
    source = source.replace("FOLDER", folder)
    served = dataclasses.replace(served, prefix=served.prefix.replace("FOLDER", folder))
    result = CliRunner().invoke(cli.main, ["serve", source], env=env)
    assert result.exit_code == 0, result.output
    assert captured.served() == served
    assert captured.demo_folders == ([folder] if served.scheme == "file" else [])


@pytest.mark.parametrize("env", [{"WSI_S3_BUCKET": "prod"}, {"WSI_STORAGE": "s3://prod/p"},
                                 {"WSI_STORAGE": "file:///srv"}])
def test_storage_flag_wins_over_source_variables(env: dict[str, str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    captured = Captured(monkeypatch)
    result = CliRunner().invoke(cli.main, ["serve", "--storage", "https://h.example/q"],
                                env=env)
    assert result.exit_code == 0, result.output
    assert captured.served() == StorageSpec("https", "h.example", "q")
    assert captured.demo_folders == []


@pytest.mark.parametrize(("args", "env"), [
    (["FOLDER"], {"WSI_STORAGE": "https://cdn.example/p"}),  # SOURCE
    (["--slides-dir", "FOLDER"], {"WSI_S3_BUCKET": "prod"}),  # --slides-dir
    ([], {"WSI_SLIDES_DIR": "FOLDER"}),  # WSI_SLIDES_DIR
    ([], {"WSI_STORAGE": "file://FOLDER", "WSI_SLIDES_DIR": "/elsewhere"}),  # file:// URL
], ids=["source", "slides-dir", "WSI_SLIDES_DIR", "file-url"])
def test_a_local_folder_gets_the_demo_slide(args: list[str], env: dict[str, str],
                                            monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    """However the folder is named, an empty one gets the demo slide (the real
    ``ensure_demo_slide``: the file is written) and is what the workers serve."""
    _clean_env(monkeypatch)
    captured = Captured(monkeypatch)
    monkeypatch.setattr(cli, "ensure_demo_slide", ENSURE_DEMO)
    folder = str(tmp_path / "empty")
    (tmp_path / "empty").mkdir()  # a named folder must exist (issue 23)
    args = [a.replace("FOLDER", folder) for a in args]
    env = {k: v.replace("FOLDER", folder) for k, v in env.items()}
    result = CliRunner().invoke(cli.main, ["serve", *args], env=env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "empty" / cli.DEMO_NAME).is_file(), result.output
    assert f"wrote {cli.DEMO_NAME}" in result.output
    assert captured.served() == StorageSpec("file", "", folder)


@pytest.mark.parametrize(("args", "words"), [
    (["s3://a", "--storage", "https://h.example/p"], ["SOURCE", "--storage"]),
    (["--s3-bucket", "b", "--slides-dir", "/x"], ["--s3-bucket", "--slides-dir"]),
    (["gopher://h/p"], ["SOURCE", "gopher"]),
    (["--storage", "https://u:p@h/x"], ["--storage", "WSI_STORAGE", "credentials"]),
])
def test_conflicting_or_bad_storage_on_the_command_line(args: list[str], words: list[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    captured = Captured(monkeypatch)
    result = CliRunner().invoke(cli.main, ["serve", *args])
    assert result.exit_code != 0 and captured.environ is None, result.output
    (error,) = [ln for ln in result.output.splitlines() if ln.startswith("Error: ")]
    for word in words:
        assert word in error, result.output


@pytest.mark.parametrize(("args", "words"), [
    (["--port", "http"], ["--port", "WSI_PORT", "not an integer"]),
    (["--cache-blocks", "12XB"], ["--cache-blocks", "WSI_CACHE_BLOCKS"]),
    (["--log-format", "xml"], ["--log-format", "WSI_LOG_FORMAT", "text, json"]),
    (["--auth-enabled"], ["WSI_AUTH_SECRET", "--auth-secret-file"]),
    (["--auth-enabled", "--auth-secret-file", "/nonexistent/secret"],
     ["WSI_AUTH_SECRET_FILE", "cannot read"]),
])
def test_bad_flags_name_the_flag_and_variable(args: list[str], words: list[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    captured = Captured(monkeypatch)
    result = CliRunner().invoke(cli.main, ["serve", *args])
    assert result.exit_code != 0 and captured.environ is None
    assert result.exception is None or isinstance(result.exception, SystemExit)
    (error,) = [ln for ln in result.output.splitlines() if ln.startswith("Error: ")]
    for word in words:
        assert word in error, result.output  # one line says it all


def test_help_builds_nothing_and_logs_nothing(monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    def boom(*_: Any, **__: Any) -> None:
        raise AssertionError("the app was built")

    monkeypatch.setattr("wsi_streamer.server.app.create_app", boom)
    monkeypatch.setattr(cli, "_create_app", boom)
    caplog.set_level(logging.DEBUG)
    runner = CliRunner()
    top = runner.invoke(cli.main, ["--help"], catch_exceptions=False)
    assert top.exit_code == 0
    assert "whole-slide images" in top.output and "Flask" not in top.output
    options = top.output.split("Options:", 1)[1]
    assert "--app" not in options and "--env-file" not in options  # not Flask's group
    for command in ("serve", "check", "sign-url", "demo", "patches"):
        assert command in top.output
        sub = runner.invoke(cli.main, [command, "--help"], catch_exceptions=False)
        assert sub.exit_code == 0, sub.output
    serve = " ".join(runner.invoke(cli.main, ["serve", "--help"], terminal_width=400,
                                   max_content_width=400).output.split())
    for setting in SETTINGS:
        if setting.option:  # the first "[env ...]" after the option is its own
            after = serve[serve.index(f" {setting.option} "):]
            shown = after[after.index("[env "):].split("]", 1)[0] + "]"
            assert shown == f"[env {setting.env}; default: {setting.default}]", after[:300]
    assert not [r for r in caplog.records if r.name.startswith("wsi_streamer")]


def test_version_names_the_codecs() -> None:
    from wsi_streamer import __version__

    result = CliRunner().invoke(cli.main, ["--version"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == f"wsi_streamer {__version__}"
    names = {line.split()[0] for line in lines[1:]}
    assert {"pillow", "pylibjpeg", "pylibjpeg-openjpeg", "libjpeg-turbo"} <= names
    assert "Flask" not in result.output


def test_sign_url_reads_a_secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    secret = tmp_path / "secret"
    secret.write_text("k3y\n")
    from wsi_streamer.server.auth import signed_url

    result = CliRunner().invoke(cli.main, ["sign-url", "--path", "/slides/a.svs", "--ttl",
                                           "60", "--secret-file", str(secret)])
    assert result.exit_code == 0, result.output
    exp = int(re.search(r"exp=(\d+)", result.output).group(1))  # type: ignore[union-attr]
    assert result.output.strip() == signed_url("k3y", "/slides/a.svs", 60, [],
                                               now=lambda: exp - 60)


def test_gunicorn_settings_come_from_config(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # restored after the test
    fields = ("host", "port", "workers", "threads", "keepalive", "worker_timeout",
              "max_requests", "log_level", "forwarded_allow_ips", "control_socket")
    env = {SETTINGS_BY_FIELD[f].env: SAMPLES[f] for f in fields}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
    found = gunicorn_settings(Config.from_env(env))
    assert found["bind"] == "127.0.0.2:3456" and found["workers"] == 2
    assert (found["threads"], found["keepalive"], found["timeout"]) == (3, 5, 30)
    assert (found["max_requests"], found["loglevel"]) == (1000, "warning")
    assert found["forwarded_allow_ips"] == "10.0.0.1"
    assert found["control_socket_disable"] is False
    import os

    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path / "metrics")
    assert (tmp_path / "metrics").is_dir()
    monkeypatch.setenv("WSI_WORKERS", "many")  # the environment is read through Config
    with pytest.raises(ConfigError, match="WSI_WORKERS='many'"):
        gunicorn_settings()


def test_setting_from_env_names_the_variable() -> None:
    assert setting_from_env("signature_ttl", {}) == 3600
    assert setting_from_env("signature_ttl", {"WSI_SIGNATURE_TTL": "60"}) == 60
    with pytest.raises(ConfigError, match="WSI_SIGNATURE_TTL"):
        setting_from_env("signature_ttl", {"WSI_SIGNATURE_TTL": "soon"})
    assert SETTINGS_BY_FIELD["auth_secret"].secret


def test_metrics_wipe_deletes_only_prometheus_files(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``on_starting`` deletes an earlier run's prometheus_client files (every type and
    gauge mode, named as prometheus_client names them) and nothing else: a diskcache
    ``cache.db`` sharing the folder survives."""
    from prometheus_client import values

    from wsi_streamer.server.gunicorn_settings import on_starting

    folder = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # restored after the test
    gunicorn_settings(Config(metrics_dir=str(folder)))
    # Real files, written by prometheus_client itself for a "pid" of 4242.
    value_class = values.MultiProcessValue(lambda: 4242)
    monkeypatch.setattr(values, "ValueClass", value_class)
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

    registry = CollectorRegistry()
    try:
        Counter("c", "c", registry=registry).inc()
        Histogram("h", "h", registry=registry).observe(1)
        Summary("s", "s", registry=registry).observe(1)
        for mode in ("all", "livesum", "mostrecent"):
            Gauge(f"g_{mode}", "g", registry=registry, multiprocess_mode=mode).set(1)
    finally:
        value_class.close_all_files()
    written = sorted(p.name for p in folder.iterdir())
    assert written == ["counter_4242.db", "gauge_all_4242.db", "gauge_livesum_4242.db",
                       "gauge_mostrecent_4242.db", "histogram_4242.db", "summary_4242.db"]
    kept = ["cache.db", "counter.db", "counter_12.db.bak", "gauge_12.txt", "notes_12.db",
            "counter_x.db"]
    for name in kept:
        (folder / name).write_bytes(b"not a metric file")
    (folder / "sub").mkdir()
    (folder / "sub" / "counter_1.db").write_bytes(b"")
    on_starting(None)
    assert sorted(p.name for p in folder.iterdir()) == sorted([*kept, "sub"])
    assert (folder / "sub" / "counter_1.db").exists()


@pytest.mark.parametrize("problem", ["group-writable", "world-writable", "a file",
                                     "foreign db"])
def test_shared_metrics_folder_is_refused(problem: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # restored after the test
    folder = tmp_path / "metrics"
    if problem == "a file":
        folder.write_text("")
    else:
        folder.mkdir(mode=0o700)
        if problem.endswith("writable"):
            folder.chmod(0o770 if problem == "group-writable" else 0o777)
        else:  # diskcache's database: prometheus_client would try to read it
            (folder / "cache.db").write_bytes(b"")
        (folder / "counter_1.db").write_bytes(b"")
    with pytest.raises(ConfigError) as caught:
        gunicorn_settings(Config(metrics_dir=str(folder)))
    message = str(caught.value)
    assert message.startswith("PROMETHEUS_MULTIPROC_DIR: ") and "\n" not in message
    assert str(folder) in message and "cache directory" not in message
    if problem != "a file":
        assert (folder / "counter_1.db").exists()


def test_private_metrics_folder_is_made_0700(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # restored after the test
    folder = tmp_path / "a" / "metrics"
    gunicorn_settings(Config(metrics_dir=str(folder)))
    assert folder.stat().st_mode & 0o777 == 0o700
