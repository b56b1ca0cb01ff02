"""``Config.from_env`` (API.md, Configuration): sizes in KB/MB/GB (powers of 1024) or bytes,
booleans, integer ranges, and every bad value a ``ConfigError`` whose message names the
variable (and the value), so a startup failure says what to fix."""

from __future__ import annotations

import dataclasses

import pytest

from wsi_streamer.config import Config, parse_bool, parse_size
from wsi_streamer.errors import ConfigError

KB, MB, GB = 1024, 1024**2, 1024**3


def test_no_variables_give_the_documented_defaults() -> None:
    config = Config.from_env({})
    assert config == Config()
    assert (config.host, config.port, config.s3_bucket, config.s3_prefix) == (
        "0.0.0.0", 3000, None, "")
    assert (config.s3_region, config.slides_dir, config.auth_enabled) == (
        "us-east-1", "./slides", False)
    assert (config.signature_ttl, config.cache_slides, config.cache_blocks) == (
        3600, 100, 256 * MB)
    assert (config.block_size, config.cache_tiles, config.jpeg_quality) == (
        256 * KB, 100 * MB, 80)
    assert (config.cache_max_age, config.cors_origins) == (3600, ("*",))


@pytest.mark.parametrize(("text", "size"), [
    ("0", 0), ("4096", 4096), ("64KB", 64 * KB), ("256MB", 256 * MB), ("2GB", 2 * GB),
    ("64kb", 64 * KB), ("1Mb", MB), ("10K", 10 * KB), ("3M", 3 * MB), ("1G", GB),
    ("5MiB", 5 * MB), ("7B", 7), (" 8 MB ", 8 * MB)])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size
    assert Config.from_env({"WSI_CACHE_TILES": text}).cache_tiles == size


@pytest.mark.parametrize("text", ["", "MB", "1.5MB", "-1MB", "12XB", "1 TB", "0x10", "ten",
                                  "1e6", "1,024"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(("text", "value"), [
    ("1", True), ("true", True), ("TRUE", True), ("yes", True), ("on", True), (" True ", True),
    ("0", False), ("false", False), ("no", False), ("off", False), ("False", False)])
def test_bools(text: str, value: bool) -> None:
    assert parse_bool(text) is value
    env = {"WSI_AUTH_ENABLED": text, "WSI_AUTH_SECRET": "s"}
    assert Config.from_env(env).auth_enabled is value


@pytest.mark.parametrize(("variable", "text", "field", "value"), [
    ("WSI_PORT", "0", "port", 0), ("WSI_PORT", "65535", "port", 65535),
    ("WSI_JPEG_QUALITY", "1", "jpeg_quality", 1),
    ("WSI_JPEG_QUALITY", "100", "jpeg_quality", 100),
    ("WSI_CACHE_MAX_AGE", "0", "cache_max_age", 0),
    ("WSI_SLIDE_REVALIDATE", "0", "revalidate_s", 0),
    ("WSI_SIGNATURE_TTL", "1", "signature_ttl", 1),
    ("WSI_THREADS", "1024", "threads", 1024),
    ("WSI_CACHE_SLIDES", "1", "cache_slides", 1),
    ("WSI_BLOCK_SIZE", "4KB", "block_size", 4 * KB),
    ("WSI_CACHE_BLOCKS", "1GB", "cache_blocks", GB),
    ("WSI_S3_BUCKET", " slides ", "s3_bucket", "slides"),
    ("WSI_S3_PREFIX", "wsi/", "s3_prefix", "wsi/"),
    ("WSI_S3_ENDPOINT", "http://127.0.0.1:9000", "s3_endpoint", "http://127.0.0.1:9000"),
    ("WSI_S3_REGION", "eu-west-1", "s3_region", "eu-west-1"),
    ("WSI_SLIDES_DIR", "/data/slides", "slides_dir", "/data/slides"),
    ("WSI_TILE_CACHE_DIR", "/var/cache/wsi", "tile_cache_dir", "/var/cache/wsi"),
    ("WSI_HOST", "127.0.0.1", "host", "127.0.0.1"),
    ("WSI_CORS_ORIGINS", "https://a.example, https://b.example,", "cors_origins",
     ("https://a.example", "https://b.example")),
])
def test_values_at_the_ends_of_their_ranges(variable: str, text: str, field: str,
                                            value: object) -> None:
    assert getattr(Config.from_env({variable: text}), field) == value


def test_an_empty_variable_is_unset_except_the_prefix() -> None:
    config = Config.from_env({"WSI_PORT": "", "WSI_CACHE_TILES": "", "WSI_S3_BUCKET": "",
                              "WSI_S3_PREFIX": ""})
    assert (config.port, config.cache_tiles, config.s3_bucket, config.s3_prefix) == (
        3000, 100 * MB, None, "")


@pytest.mark.parametrize(("variable", "text"), [
    ("WSI_PORT", "65536"), ("WSI_PORT", "-1"), ("WSI_PORT", "http"), ("WSI_PORT", "80.5"),
    ("WSI_JPEG_QUALITY", "0"), ("WSI_JPEG_QUALITY", "101"), ("WSI_JPEG_QUALITY", "high"),
    ("WSI_CACHE_MAX_AGE", "-1"), ("WSI_SIGNATURE_TTL", "0"), ("WSI_THREADS", "0"),
    ("WSI_CACHE_SLIDES", "0"), ("WSI_SLIDE_REVALIDATE", "86401"),
    ("WSI_CACHE_BLOCKS", "12XB"), ("WSI_CACHE_BLOCKS", "lots"), ("WSI_BLOCK_SIZE", "1.5KB"),
    ("WSI_CACHE_TILES", "-5MB"), ("WSI_AUTH_ENABLED", "maybe"), ("WSI_AUTH_ENABLED", "2"),
])
def test_bad_values_name_the_variable(variable: str, text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env({variable: text})
    message = str(caught.value)
    assert variable in message and text in message, message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(("env", "variable"), [
    ({"WSI_AUTH_ENABLED": "true"}, "WSI_AUTH_SECRET"),
    ({"WSI_AUTH_ENABLED": "true", "WSI_AUTH_SECRET": ""}, "WSI_AUTH_SECRET"),
    ({"WSI_BLOCK_SIZE": "1KB"}, "WSI_BLOCK_SIZE"),
    ({"WSI_BLOCK_SIZE": "4095"}, "WSI_BLOCK_SIZE"),
])
def test_inconsistent_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Config.from_env(env)


def test_checks_apply_to_direct_construction_and_replace() -> None:
    with pytest.raises(ConfigError, match="WSI_JPEG_QUALITY"):
        Config(jpeg_quality=0)
    with pytest.raises(ConfigError, match="WSI_AUTH_SECRET"):
        dataclasses.replace(Config(), auth_enabled=True)
    assert dataclasses.replace(Config(), port=8080).port == 8080


def test_overrides_win_over_the_environment_and_none_is_no_override() -> None:
    config = Config.from_env({"WSI_PORT": "9000", "WSI_HOST": "10.0.0.1"}, port=7000,
                             host=None)
    assert (config.port, config.host) == (7000, "10.0.0.1")


def test_secret_is_taken_verbatim_and_never_in_the_error() -> None:
    assert Config.from_env({"WSI_AUTH_ENABLED": "1", "WSI_AUTH_SECRET": " s p "}
                           ).auth_secret == " s p "
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"WSI_AUTH_ENABLED": "1", "WSI_AUTH_SECRET": "hunter2",
                         "WSI_PORT": "x"})
    assert "hunter2" not in str(caught.value)


def test_check_command_accepts_the_default_test_config(runner: object) -> None:
    """``flask check`` through the shared ``runner`` fixture: the app of a valid config (an
    empty slides folder) reports reachable storage and exits 0."""
    result = runner.invoke(args=["check"])  # type: ignore[attr-defined]
    assert result.exit_code == 0, result.output
