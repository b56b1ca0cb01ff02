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
from wsi_streamer.server import cli
from wsi_streamer.server.gunicorn_settings import settings as gunicorn_settings

README = Path(__file__).resolve().parents[3] / "README.md"

# A valid value, other than the default, for every setting (as a user would type it).
SAMPLES = {
    "host": "127.0.0.2", "port": "3456", "storage": "https://tiles.example.org/slides",
    "s3_bucket": "my-bucket", "s3_prefix": "cases/2024", "s3_endpoint": "http://minio:9000",
    "s3_region": "eu-west-3", "slides_dir": "/srv/slides", "openslide_fallback": "true",
    "associated_images": "true", "color_mode": "srgb", "auth_enabled": "true",
    "auth_secret": "s3cr3t", "auth_secret_file": "SECRET_FILE", "signature_ttl": "120",
    "cache_slides": "7", "cache_blocks": "64MB", "block_size": "64KB", "cache_tiles": "1GB",
    "tile_cache_dir": "/var/cache/wsi", "jpeg_quality": "55", "cache_max_age": "77",
    "cors_origins": "https://a.example,https://b.example", "threads": "3",
    "revalidate_s": "5", "workers": "2", "keepalive": "5", "worker_timeout": "30",
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
        monkeypatch.setattr(cli, "run_gunicorn", self._run)
        monkeypatch.setattr(cli, "check_port_free", lambda host, port: None)
        monkeypatch.setattr(cli, "ensure_demo_slide", lambda folder: None)

    def _run(self, environ: dict[str, str]) -> None:
        self.environ = dict(environ)

    def config(self) -> Config:
        assert self.environ is not None
        return Config.from_env(self.environ)


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("WSI_") or name == "PROMETHEUS_MULTIPROC_DIR":
            monkeypatch.delenv(name)


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
    args = ["serve", setting.option if setting.boolean else f"{setting.option}={sample}"]
    result = CliRunner().invoke(cli.main, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    config = captured.config()
    expected = setting.parse(sample)
    if setting.field == "auth_secret_file":
        assert config.auth_secret == "from-the-file"  # the file wins over the variable
    assert getattr(config, setting.field) == expected


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
    for source, field, value in (("s3://bkt/a/b", "s3_bucket", "bkt"),
                                 ("https://h.example/p", "storage", "https://h.example/p"),
                                 (str(tmp_path), "slides_dir", str(tmp_path))):
        assert CliRunner().invoke(cli.main, ["serve", source]).exit_code == 0
        assert getattr(captured.config(), field) == value
    assert captured.config().s3_prefix == ""


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
