"""Command line: the ``wsi-streamer`` console script (our own click group: ``serve``,
``check``, ``sign-url``, ``demo``, ``patches``) and ``flask --app wsi_streamer <cmd>`` (the
same ``check`` / ``sign-url`` / ``demo`` on the app's ``cli``).

``--help`` of any command and ``--version`` build nothing and log nothing: the app is built
only by a command that runs (``check``, through flask's ``ScriptInfo``). ``serve`` takes every
setting of ``config.SETTINGS`` as a flag (help: variable and default) that overrides its
variable; secrets are never flags (``--auth-secret-file``)."""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import click
from flask import Flask
from flask.cli import ScriptInfo

from .. import __version__
from ..config import SETTINGS, Config, Setting, read_secret_file, setting_from_env
from ..errors import ConfigError, WsiError
from ..io.factory import storage_spec
from ..io.location import parse_storage_url
from ..patches.cli import patches_group
from .auth import signed_query, signed_url
from .index import viewer_url
from .services import build_services, services
from .startup import (
    DEMO_NAME,
    base_url,
    ensure_demo_slide,
    require_folder,
    served_folder,
    startup_check,
    storage_advice,
)


def setting_help(setting: Setting) -> str:
    """A flag's help: the setting's meaning, its variable and its default."""
    return f"{setting.help} [env {setting.env}; default: {setting.default}]"


def _options(fields: tuple[str, ...] | None) -> Callable[[Callable[..., Any]],
                                                     Callable[..., Any]]:
    """A decorator adding one option per ``SETTINGS`` row with a flag (of ``fields``, or
    all), booleans as ``--x/--no-x``, in the table's order; every value is None unless
    given."""
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for setting in reversed(SETTINGS):
            option = setting.option
            if option is None or (fields is not None and setting.field not in fields):
                continue
            decls = [f"{option}/--no-{option[2:]}" if setting.boolean else option,
                     setting.field]
            func = click.option(*decls, default=None, help=setting_help(setting),
                                metavar=setting.metavar)(func)
        return func
    return decorate


# The settings that say where slides are and how to read them: the flags of every command
# that reads slides (``serve`` has every setting).
STORAGE_FIELDS = ("storage", "s3_bucket", "s3_prefix", "s3_endpoint", "s3_region",
                  "s3_anonymous", "slides_dir", "openslide_fallback")
settings_options = _options(None)
storage_options = _options(STORAGE_FIELDS)


@click.command("sign-url")
@click.option("--path", "path", required=True, help="URL path to sign, e.g. /tiles/a.svs/0/0/0.jpg")
@click.option("--ttl", type=click.IntRange(1), default=None, help="lifetime in seconds")
@click.option("--base-url", default="", help="prefix such as https://tiles.example.org")
@click.option("--param", "params", multiple=True, metavar="K=V", help="extra signed parameter")
@click.option("--format", "fmt", type=click.Choice(["url", "json"]), default="url")
@click.option("--secret-file", type=click.Path(dir_okay=False), default=None,
              envvar="WSI_AUTH_SECRET_FILE",
              help="file holding the HMAC secret [env WSI_AUTH_SECRET_FILE]")
@click.option("--secret", envvar="WSI_AUTH_SECRET", default=None,
              help="HMAC secret [env WSI_AUTH_SECRET]; visible in ps: prefer the variable "
                   "or --secret-file")
def sign_url_command(path: str, ttl: int | None, base_url: str, params: tuple[str, ...],
                     fmt: str, secret_file: str | None, secret: str | None) -> None:
    """Print a signed URL for PATH."""
    if secret_file:
        try:
            secret = read_secret_file(secret_file)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
    if not secret:
        raise click.UsageError("no secret: set WSI_AUTH_SECRET or WSI_AUTH_SECRET_FILE, or "
                               "pass --secret-file")
    if not path.startswith("/"):
        raise click.BadParameter("must start with /", param_hint="--path")
    pairs = []
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not K=V", param_hint="--param")
        pairs.append((key, value))
    try:
        ttl = ttl or int(setting_from_env("signature_ttl"))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    now = time.time()
    url = signed_url(secret, path, ttl, pairs, base_url, now=lambda: now)
    if fmt == "json":
        query = dict(signed_query(secret, path, ttl, pairs, now=lambda: now))
        click.echo(json.dumps({"url": url, "path": path, "exp": int(query["exp"]),
                               "sig": query["sig"], "params": dict(pairs)}))
    else:
        click.echo(url)


@click.command("check")
@click.argument("source", required=False)
@click.option("--list-slides", is_flag=True, help="list the first slides")
@click.option("--test-slide", metavar="ID", default=None, help="open ID and read one tile")
@storage_options
def check_command(source: str | None, list_slides: bool, test_slide: str | None,
                  **flags: Any) -> None:
    """Check storage reachability (and optionally list slides / read a tile).

    SOURCE and the storage flags are those of serve (SOURCE: s3://bucket[/prefix], another
    storage URL or a folder); without them, the WSI_* variables say where the slides are."""
    if source is None and all(value is None for value in flags.values()):
        # The app the entry point builds (flask --app, wsi-streamer, a test runner's app)
        svc = services(click.get_current_context().ensure_object(ScriptInfo).load_app())
    else:
        try:
            svc = build_services(Config.from_env(flags_environ(flags, source, os.environ)))
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
    ok = True
    try:
        click.echo(f"storage: {svc.storage.check()} ... reachable")
    except WsiError as exc:
        click.echo(f"storage: {svc.config.storage_description} ... FAILED: "
                   f"{storage_advice(exc, svc.config)}", err=True)
        sys.exit(1)
    if list_slides:
        try:
            page = svc.storage.list_slides(limit=50)
            click.echo(f"slides ({len(page.slides)}{'+' if page.next_cursor else ''}):")
            for slide_id in page.slides:
                click.echo(f"  {slide_id}")
        except WsiError as exc:
            click.echo(f"listing FAILED: {exc}", err=True)
            ok = False
    if test_slide:
        try:
            started = time.perf_counter()
            slide = svc.registry.get(test_slide)
            width, height = slide.dimensions
            click.echo(f"slide {test_slide}: {slide.format_name}, {width}x{height}, "
                       f"{slide.level_count} levels")
            tile = slide.read_tile(0, 0, 0)
            click.echo(f"tile 0/0/0: {tile.size[0]}x{tile.size[1]} px in "
                       f"{(time.perf_counter() - started) * 1000:.0f} ms")
        except WsiError as exc:
            click.echo(f"slide {test_slide} FAILED: {type(exc).__name__}: {exc}", err=True)
            ok = False
    if not ok:
        sys.exit(1)
    click.echo("ok")


@click.command("demo")
@click.argument("folder", default=None, required=False)
def demo_command(folder: str | None) -> None:
    """Write a demo slide into FOLDER (default WSI_SLIDES_DIR or ./slides) if it has none."""
    try:
        folder = folder or str(setting_from_env("slides_dir"))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    path = ensure_demo_slide(folder)
    click.echo(f"wrote {path}" if path else f"{folder} already holds slides")


# Where the command line can say the slides are: (hint, flag field; None for SOURCE).
LOCATION_ARGS = (("SOURCE", None), ("--storage", "storage"), ("--s3-bucket", "s3_bucket"),
                 ("--slides-dir", "slides_dir"))


def flags_environ(flags: Mapping[str, Any], source: str | None,
                  base: Mapping[str, str]) -> dict[str, str]:
    """``base`` with each given flag (and SOURCE) written over its variable, so the workers
    gunicorn forks read them through ``Config.from_env``. A bad value is a
    ``click.BadParameter`` naming the flag and the variable.

    The storage the command line names wins over every storage variable of ``base``
    (``services.storage_of`` ranks WSI_STORAGE, then WSI_S3_BUCKET, then WSI_SLIDES_DIR):
    SOURCE and ``--storage`` become WSI_STORAGE; ``--s3-bucket`` drops WSI_STORAGE,
    ``--slides-dir`` drops it and WSI_S3_BUCKET; ``--s3-prefix`` re-roots an ``s3://``
    WSI_STORAGE (its bucket kept) and does nothing for other storage. Two of SOURCE,
    ``--storage``, ``--s3-bucket``, ``--slides-dir`` are a ``click.UsageError``."""
    named = [hint for hint, field in LOCATION_ARGS
             if (flags.get(field) if field else source) is not None]
    if len(named) > 1:
        raise click.UsageError(f"{named[0]} and {named[1]} both say where the slides are: "
                               "give one")
    env = dict(base)
    if source is not None:
        _check_storage_url(source, "SOURCE", "")
        env["WSI_STORAGE"] = source
    for setting in SETTINGS:
        value = flags.get(setting.field)
        if value is None or setting.option is None:
            continue
        raw = ("true" if value else "false") if isinstance(value, bool) else str(value)
        try:
            setting.parse(raw)
        except ValueError as exc:
            raise click.BadParameter(f"{exc} (variable {setting.env})",
                                     param_hint=setting.option) from None
        if setting.field == "storage":
            _check_storage_url(raw, setting.option, f" (variable {setting.env})")
        env[setting.env] = raw
    if flags.get("s3_bucket") is not None:
        env.pop("WSI_STORAGE", None)
    if flags.get("slides_dir") is not None:
        env.pop("WSI_STORAGE", None)
        env.pop("WSI_S3_BUCKET", None)
    if flags.get("s3_prefix") is not None and env.get("WSI_STORAGE"):
        try:
            spec = parse_storage_url(env["WSI_STORAGE"])
        except ValueError:
            spec = None  # left for Config/storage_of to report, naming WSI_STORAGE
        if spec is not None and spec.scheme == "s3":
            del env["WSI_STORAGE"]
            env["WSI_S3_BUCKET"] = spec.host
    return env


def _check_storage_url(url: str, hint: str, suffix: str) -> None:
    """``click.BadParameter`` (``hint``, the problem, ``suffix``) for a storage URL or
    folder that no backend serves."""
    try:
        storage_spec(url)
    except ValueError as exc:
        raise click.BadParameter(f"{exc}{suffix}", param_hint=hint) from None


def check_port_free(host: str, port: int) -> None:
    """``click.ClickException`` (one line) when ``host:port`` cannot be bound because
    something listens there already."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise click.ClickException(
                    f"port {port} on {host} is already in use: stop the other server or "
                    "choose another port with --port (WSI_PORT)") from None
            raise click.ClickException(f"cannot listen on {host}:{port}: "
                                       f"{exc.strerror}") from None


@click.command("serve")
@click.argument("source", required=False)
@settings_options
def serve_command(source: str | None, **flags: Any) -> None:
    """Run the service under gunicorn.

    SOURCE: s3://bucket[/prefix], another storage URL or a folder; it is WSI_STORAGE, and
    wins over every storage variable (as each storage flag does). A local folder that holds
    no slide gets a demo slide; a named folder must exist (only the default ./slides is
    created). Storage is checked first (the check command's one request, bounded): a start
    that cannot work fails with one line. Each flag overrides its environment variable."""
    environ = flags_environ(flags, source, os.environ)
    try:
        config = Config.from_env(environ)
        local = served_folder(config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if local:
        require_folder(local[0], _folder_named_by(source, flags, local[1]))
        if ensure_demo_slide(local[0]):
            click.echo(f"{local[0]} was empty: wrote {DEMO_NAME}")
    check_port_free(config.host, config.port)
    _, first = startup_check(config)
    base = base_url(config)
    click.echo(f"serving the slides at {base}/")
    if first is not None:
        signing = (f" (signed: wsi-streamer sign-url --path /view/{first})"
                   if config.auth_enabled else "")
        click.echo(f"viewer of {first}: {viewer_url(base, first)}{signing}")
    run_gunicorn(environ)


def _folder_named_by(source: str | None, flags: Mapping[str, Any], variable: str) -> str:
    """What named the served folder: SOURCE, a flag, or else its variable."""
    if source is not None:
        return f"SOURCE {source}"
    for field in ("storage", "slides_dir"):
        if flags.get(field) is not None:
            return f"--{field.replace('_', '-')}"
    return variable


def run_gunicorn(environ: Mapping[str, str]) -> None:
    """gunicorn in this process with ``environ`` as the environment (workers inherit it)."""
    from gunicorn.app.base import BaseApplication

    from .gunicorn_settings import HOOKS, settings

    os.environ.update(environ)
    for name in set(os.environ) - set(environ):
        del os.environ[name]

    class Application(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options: dict[str, Any] = settings()
            options.pop("wsgi_app")
            options.update(HOOKS)  # on_starting, child_exit, on_exit, post_worker_init
            for key, value in options.items():
                if key in self.cfg.settings:  # older gunicorns lack some settings
                    self.cfg.set(key, value)

        def load(self) -> Flask:
            from . import app
            return app.create_app()

    Application().run()


def register_commands(app: Flask) -> None:
    for command in (sign_url_command, check_command, demo_command):
        app.cli.add_command(command)


def _create_app() -> Flask:
    from .app import create_app
    try:
        return create_app()
    except ConfigError as exc:  # a bad WSI_* value: one clear line naming it, no traceback
        raise click.ClickException(str(exc)) from None


def codec_versions() -> list[tuple[str, str]]:
    """(component, version) of wsi_streamer and the codecs and servers it uses; a missing
    optional one is left out."""
    from importlib import metadata

    found = [("wsi_streamer", __version__),
             ("python", sys.version.split()[0])]
    for dist in ("pillow", "pylibjpeg", "pylibjpeg-openjpeg", "pylibjpeg-libjpeg", "numpy",
                 "flask", "gunicorn", "boto3", "prometheus-client"):
        try:
            found.append((dist, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            continue
    try:
        from PIL import features

        for name, feature in (("libjpeg-turbo", "libjpeg_turbo"), ("libjpeg", "jpg"),
                              ("openjpeg (pillow)", "jpg_2000")):
            version = features.version(feature)
            if version:
                found.append((name, str(version)))
    except ImportError:  # pragma: no cover - pillow is a dependency
        pass
    return found


def _print_version(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    name, version = codec_versions()[0]
    click.echo(f"{name} {version}")
    for name, version in codec_versions()[1:]:
        click.echo(f"  {name} {version}")
    ctx.exit()


class _Group(click.Group):
    """The console script's group; every command finds a flask ``ScriptInfo`` in
    ``ctx.obj`` that builds the app only when a command needs it."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        extra.setdefault("obj", ScriptInfo(create_app=_create_app, set_debug_flag=False))
        return super().make_context(info_name, args, parent=parent, **extra)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"],
                                           "max_content_width": 100})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Show the version of wsi_streamer and its codecs.")
def main() -> None:
    """wsi_streamer: a tile server for whole-slide images (Aperio SVS, pyramidal TIFF) in S3
    or a local folder. It reads only the byte ranges it needs, and serves tiles, Deep Zoom,
    thumbnails, metadata and a viewer, with the Rust WSI Streamer's API.

    Every setting is an environment variable and a flag of "serve" ("wsi-streamer serve
    --help" lists them). "flask --app wsi_streamer ..." runs the same check, sign-url and
    demo commands.
    """


main.add_command(serve_command)
main.add_command(sign_url_command)
main.add_command(check_command)
main.add_command(demo_command)
main.add_command(patches_group)
