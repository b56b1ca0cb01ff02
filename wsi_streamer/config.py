"""The one frozen configuration and the one table of its settings (``SETTINGS``): each
setting's ``Config`` field, environment variable, parser, default (as written in the README)
and help text. ``Config.from_env`` and the ``serve`` flags are both generated from the table,
and the README's configuration table is tested against it. Only ``server/`` reads ``Config``;
lower layers take plain arguments."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from .errors import ConfigError
from .limits import OVERVIEW_DEADLINE_S, REQUEST_DEADLINE_S

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|K|KIB|MB|M|MIB|GB|G|GIB)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2, "MB": 1024**2,
          "MIB": 1024**2, "G": 1024**3, "GB": 1024**3, "GIB": 1024**3}


# The placeholder ``--help`` shows for the values a parser takes (``Setting.metavar``).
_METAVARS: dict[Callable[[str], Any], str] = {}


def parse_size(text: str) -> int:
    """``256MB`` -> 268435456 (KB/MB/GB are powers of 1024); plain digits are bytes."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 256MB, 64KB or bytes)")
    return int(match.group(1)) * _UNITS[(match.group(2) or "").upper()]


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r} (use true or false)")


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(f"not an integer: {text!r}") from None
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}-{high}")
        return value
    _METAVARS[parse] = "INTEGER"
    return parse


def _seconds(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise ValueError(f"not a number of seconds: {text!r}") from None
        if not low <= value <= high:  # NaN fails both
            raise ValueError(f"{value:g} is outside {low:g}-{high:g}")
        return value
    _METAVARS[parse] = "SECONDS"
    return parse


def _origins(text: str) -> tuple[str, ...]:
    return tuple(o.strip() for o in text.split(",") if o.strip())


def _text(text: str) -> str:
    return text.strip()


def _choice(*names: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in names:
            raise ValueError(f"{text!r} is not one of {', '.join(names)}")
        return value
    _METAVARS[parse] = "[" + "|".join(names) + "]"
    return parse


def default_tile_cache_dir() -> str:
    """The same folder for every worker of this user on the host, so they share one cache.
    A predictable name in the shared temp dir: the cache creates it 0700 and refuses it when
    it is a link, another uid's or writable by others (``slide.cachedir``)."""
    return os.path.join(tempfile.gettempdir(), f"wsi_streamer-tiles-{os.getuid()}")


@dataclass(frozen=True)
class Config:
    """Every setting; the meaning, variable and default of each is its ``SETTINGS`` row."""

    host: str = "0.0.0.0"
    port: int = 3000
    # One storage URL (s3://bucket/prefix, file:///path, https://host/prefix); when unset,
    # WSI_S3_BUCKET/WSI_S3_PREFIX or WSI_SLIDES_DIR say the same (aliases).
    storage: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    s3_anonymous: bool = False  # unsigned requests: public buckets (IDC)
    slides_dir: str = "./slides"
    openslide_fallback: bool = False  # local folders: OpenSlide reads what we refuse
    associated_images: bool = False  # labels can carry patient identifiers
    color_mode: str = "embed"  # embed | srgb | ignore: what to do with a slide's ICC profile
    auth_enabled: bool = False
    auth_secret: str | None = None
    auth_secret_file: str | None = None
    signature_ttl: int = 3600
    cache_slides: int = 100
    cache_blocks: int = 256 * 1024 * 1024
    block_size: int = 256 * 1024
    cache_tiles: int = 100 * 1024 * 1024
    tile_cache_dir: str | None = None
    jpeg_quality: int = 80
    cache_max_age: int = 3600
    cors_origins: tuple[str, ...] = ("*",)
    threads: int = 8  # worker threads (sizes the storage connection pool)
    revalidate_s: int = 60  # how often an open slide's ETag/mtime is checked again
    request_deadline: float = REQUEST_DEADLINE_S  # seconds of work per request
    overview_deadline: float = OVERVIEW_DEADLINE_S  # seconds of work per overview build
    storage_deadline: int = 30  # seconds per storage read, plus its size at 256 KB/s
    http_redirects: str = "origin"  # origin | none | public: where HTTP storage may redirect
    # Process settings (gunicorn, logs, metrics).
    workers: int | None = None  # None: min(4, cores)
    keepalive: int = 75
    worker_timeout: int = 60
    max_requests: int = 0
    log_level: str = "info"
    log_format: str = "text"
    forwarded_allow_ips: str = "127.0.0.1"
    control_socket: bool = False
    metrics_dir: str | None = None

    def __post_init__(self) -> None:
        if self.auth_enabled and not self.auth_secret:
            raise ConfigError("WSI_AUTH_ENABLED is true but no secret is set: set "
                              "WSI_AUTH_SECRET or WSI_AUTH_SECRET_FILE (--auth-secret-file)")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"WSI_JPEG_QUALITY must be 1-100, got {self.jpeg_quality}")
        if self.block_size < 4096:
            raise ConfigError(f"WSI_BLOCK_SIZE must be at least 4KB, got {self.block_size}")

    def __repr__(self) -> str:  # never print the secret
        shown = {f.name: ("***" if f.name == "auth_secret" and self.auth_secret
                          else getattr(self, f.name)) for f in fields(self)}
        return "Config(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    @property
    def storage_description(self) -> str:
        if self.storage:
            return self.storage
        if self.s3_bucket:
            return f"s3://{self.s3_bucket}/{self.s3_prefix}"
        return os.path.abspath(self.slides_dir)

    @property
    def resolved_tile_cache_dir(self) -> str:
        return self.tile_cache_dir or default_tile_cache_dir()

    @property
    def resolved_workers(self) -> int:
        return self.workers or min(4, os.cpu_count() or 1)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Read the ``SETTINGS`` variables; a bad value raises ``ConfigError`` naming the
        variable. ``WSI_AUTH_SECRET_FILE`` (a file holding the secret, surrounding whitespace
        stripped) takes precedence over ``WSI_AUTH_SECRET``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = env.get(setting.env)
            if raw is None or (raw == "" and not setting.empty_ok):
                continue
            try:
                values[setting.field] = setting.parse(raw)
            except ValueError as exc:
                shown = "***" if setting.secret else repr(raw)
                raise ConfigError(f"{setting.env}={shown}: {exc}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values.get("auth_secret_file"):
            values["auth_secret"] = read_secret_file(values["auth_secret_file"])
        return cls(**values)


def read_secret_file(path: str) -> str:
    """The secret held in ``path`` (surrounding whitespace stripped); ``ConfigError`` naming
    ``WSI_AUTH_SECRET_FILE`` when it cannot be read or is empty."""
    try:
        with open(path, encoding="utf-8") as handle:
            secret = handle.read().strip()
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"WSI_AUTH_SECRET_FILE={path!r}: cannot read it "
                          f"({exc.strerror if isinstance(exc, OSError) else exc})") from None
    if not secret:
        raise ConfigError(f"WSI_AUTH_SECRET_FILE={path!r}: the file is empty")
    return secret


@dataclass(frozen=True, slots=True)
class Setting:
    """One row of ``SETTINGS``. ``default`` is the default as a user writes it (``"256MB"``),
    or a description in parentheses when it is computed (``"min(4, cores)"``); ``flag`` is
    the ``serve`` option (None: no flag, e.g. a secret, which must not be on a command line
    visible in ``ps``)."""

    field: str
    env: str
    parse: Callable[[str], Any]
    default: str
    help: str
    flag: str | None = ""  # "" = derived from the field name: s3_bucket -> --s3-bucket
    secret: bool = False
    empty_ok: bool = False  # an empty variable is a value (not "unset")
    boolean: bool = False

    @property
    def metavar(self) -> str:
        """The placeholder of its value in ``--help``: INTEGER, SIZE (``256MB``), SECONDS,
        one of its choices, PATH for folders and files, else TEXT."""
        if self.boolean:
            return ""
        if self.parse in _METAVARS:
            return _METAVARS[self.parse]
        return "PATH" if self.field.endswith(("_dir", "_file")) else "TEXT"

    @property
    def option(self) -> str | None:
        if self.flag is None:
            return None
        return self.flag or "--" + self.field.replace("_", "-")


_AGE = _int_in(0, 10 * 365 * 86400)

SETTINGS: tuple[Setting, ...] = (
    Setting("host", "WSI_HOST", _text, "0.0.0.0", "bind address"),
    Setting("port", "WSI_PORT", _int_in(0, 65535), "3000", "bind port"),
    Setting("storage", "WSI_STORAGE", _text, "none",
            "one storage URL: s3://bucket/prefix, file:///path or https://host/prefix "
            "(replaces the S3 / folder settings)"),
    Setting("s3_bucket", "WSI_S3_BUCKET", _text, "none", "bucket (S3 mode)"),
    Setting("s3_prefix", "WSI_S3_PREFIX", _text, "empty",
            "key prefix that slide ids are relative to", empty_ok=True),
    Setting("s3_endpoint", "WSI_S3_ENDPOINT", _text, "none",
            "custom S3 endpoint URL (MinIO, Ceph, moto, ...)"),
    Setting("s3_region", "WSI_S3_REGION", _text, "us-east-1", "S3 region"),
    Setting("s3_anonymous", "WSI_S3_ANONYMOUS", parse_bool, "false",
            "unsigned S3 requests, no credentials (public buckets such as IDC's)",
            boolean=True),
    Setting("slides_dir", "WSI_SLIDES_DIR", _text, "./slides", "local folder (local mode)"),
    Setting("openslide_fallback", "WSI_OPENSLIDE_FALLBACK", parse_bool, "false",
            "local folder only: serve slides the native readers refuse (NDPI, MRXS, SCN, "
            "...) through OpenSlide (the [openslide] extra)", boolean=True),
    Setting("associated_images", "WSI_ASSOCIATED_IMAGES", parse_bool, "false",
            "serve label, macro and thumbnail images (/slides/{id}/associated); labels can "
            "carry patient identifiers", boolean=True),
    Setting("color_mode", "WSI_COLOR_MODE", _choice("embed", "srgb", "ignore"), "embed",
            "a slide's ICC profile: embed it in every image, convert pixels to sRGB, or "
            "ignore it"),
    Setting("auth_enabled", "WSI_AUTH_ENABLED", parse_bool, "false",
            "require signed URLs (needs a secret)", boolean=True),
    Setting("auth_secret", "WSI_AUTH_SECRET", str, "none",
            "HMAC secret of signed URLs (variable only: no flag, command lines show in ps)",
            flag=None, secret=True),
    Setting("auth_secret_file", "WSI_AUTH_SECRET_FILE", _text, "none",
            "file holding the HMAC secret; wins over WSI_AUTH_SECRET"),
    Setting("signature_ttl", "WSI_SIGNATURE_TTL", _int_in(1, 10 * 365 * 86400), "3600",
            "default lifetime (s) of URLs signed by sign-url and of viewer tokens"),
    Setting("cache_slides", "WSI_CACHE_SLIDES", _int_in(1, 1_000_000), "100",
            "open slides kept (parsed structure)"),
    Setting("cache_blocks", "WSI_CACHE_BLOCKS", parse_size, "256MB",
            "block cache size per process"),
    Setting("block_size", "WSI_BLOCK_SIZE", parse_size, "256KB", "block size"),
    Setting("cache_tiles", "WSI_CACHE_TILES", parse_size, "100MB",
            "encoded-tile cache size (shared by all workers on a host)"),
    Setting("tile_cache_dir", "WSI_TILE_CACHE_DIR", _text, "$TMPDIR/wsi_streamer-tiles-$UID",
            "where the tile cache lives"),
    Setting("jpeg_quality", "WSI_JPEG_QUALITY", _int_in(1, 100), "80",
            "default output JPEG quality"),
    Setting("cache_max_age", "WSI_CACHE_MAX_AGE", _AGE, "3600",
            "Cache-Control max-age (s) on images"),
    Setting("cors_origins", "WSI_CORS_ORIGINS", _origins, "*",
            "comma-separated allowed CORS origins"),
    Setting("threads", "WSI_THREADS", _int_in(1, 1024), "8",
            "threads per worker (also sizes the storage connection pool)"),
    Setting("revalidate_s", "WSI_SLIDE_REVALIDATE", _int_in(0, 86400), "60",
            "seconds between checks that an open slide's object is unchanged",
            flag="--slide-revalidate"),
    Setting("request_deadline", "WSI_REQUEST_DEADLINE", _seconds(0.01, 3600), "30",
            "seconds of work one request may take; past it, or once its client has gone, "
            "it stops at the next tile (503 deadline_exceeded)"),
    Setting("overview_deadline", "WSI_OVERVIEW_DEADLINE", _seconds(0.01, 3600), "50",
            "seconds one overview build (shared by every thumbnail and low Deep Zoom level "
            "of a slide) may take"),
    Setting("storage_deadline", "WSI_STORAGE_DEADLINE", _int_in(1, 3600), "30",
            "seconds one storage read may take in all, plus 1 s per 256 KB it transfers "
            "(a trickling origin gets 504)"),
    Setting("http_redirects", "WSI_HTTP_REDIRECTS", _choice("origin", "none", "public"),
            "origin", "HTTP storage redirects: origin (same host, port and prefix), none, or "
            "public (any public host, never a private address)"),
    Setting("workers", "WSI_WORKERS", _int_in(1, 256), "min(4, cores)",
            "gunicorn worker processes"),
    Setting("keepalive", "WSI_KEEPALIVE", _int_in(0, 3600), "75",
            "seconds an idle keep-alive connection is held"),
    Setting("worker_timeout", "WSI_WORKER_TIMEOUT", _int_in(1, 3600), "60",
            "seconds before a silent worker is restarted"),
    Setting("max_requests", "WSI_MAX_REQUESTS", _int_in(0, 10**9), "0",
            "restart a worker after this many requests (0: never)"),
    Setting("log_level", "WSI_LOG_LEVEL",
            _choice("debug", "info", "warning", "error", "critical"), "info", "log level"),
    Setting("log_format", "WSI_LOG_FORMAT", _choice("text", "json"), "text",
            "text, or json: one JSON object per access and error line"),
    Setting("forwarded_allow_ips", "WSI_FORWARDED_ALLOW_IPS", _text, "127.0.0.1",
            "proxies trusted for X-Forwarded-* (comma-separated, * for any)"),
    Setting("control_socket", "WSI_CONTROL_SOCKET", parse_bool, "false",
            "gunicorn >= 23 control socket (under $HOME)", boolean=True),
    Setting("metrics_dir", "PROMETHEUS_MULTIPROC_DIR", _text, "$TMPDIR/wsi_streamer-metrics-*",
            "folder of the per-worker metric files (wiped when the server starts)"),
)

_METAVARS[parse_size] = "SIZE"
_METAVARS[_origins] = "ORIGINS"

SETTINGS_BY_FIELD: dict[str, Setting] = {s.field: s for s in SETTINGS}


def setting_from_env(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """One setting's value (its ``Config`` default when its variable is unset), for a command
    that needs only it; ``ConfigError`` names a bad variable."""
    setting = SETTINGS_BY_FIELD[name]
    raw = (os.environ if environ is None else environ).get(setting.env)
    if raw is None or (raw == "" and not setting.empty_ok):
        return next(f.default for f in fields(Config) if f.name == name)
    try:
        return setting.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{setting.env}={raw!r}: {exc}") from None
