"""Command line: ``flask --app wsi_streamer <cmd>`` and the ``wsi-streamer`` console script
(same group): ``sign-url``, ``check``, ``serve`` (gunicorn with the embedded defaults) and
``demo`` (write a synthetic demo slide)."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click
from flask import Flask
from flask.cli import FlaskGroup, with_appcontext

from ..config import Config
from ..errors import ConfigError, WsiError
from ..patches.cli import patches_group
from .auth import signed_query, signed_url
from .services import services

DEMO_NAME = "demo-slide.tif"


@click.command("sign-url")
@click.option("--path", "path", required=True, help="URL path to sign, e.g. /tiles/a.svs/0/0/0.jpg")
@click.option("--ttl", type=click.IntRange(1), default=None, help="lifetime in seconds")
@click.option("--base-url", default="", help="prefix such as https://tiles.example.org")
@click.option("--param", "params", multiple=True, metavar="K=V", help="extra signed parameter")
@click.option("--format", "fmt", type=click.Choice(["url", "json"]), default="url")
@click.option("--secret", envvar="WSI_AUTH_SECRET", default=None,
              help="HMAC secret (default: WSI_AUTH_SECRET)")
def sign_url_command(path: str, ttl: int | None, base_url: str, params: tuple[str, ...],
                     fmt: str, secret: str | None) -> None:
    """Print a signed URL for PATH."""
    if not secret:
        raise click.UsageError("no secret: set WSI_AUTH_SECRET or pass --secret")
    if not path.startswith("/"):
        raise click.BadParameter("must start with /", param_hint="--path")
    pairs = []
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not K=V", param_hint="--param")
        pairs.append((key, value))
    ttl = ttl or int(os.environ.get("WSI_SIGNATURE_TTL", "3600"))
    now = time.time()
    url = signed_url(secret, path, ttl, pairs, base_url, now=lambda: now)
    if fmt == "json":
        query = dict(signed_query(secret, path, ttl, pairs, now=lambda: now))
        click.echo(json.dumps({"url": url, "path": path, "exp": int(query["exp"]),
                               "sig": query["sig"], "params": dict(pairs)}))
    else:
        click.echo(url)


@click.command("check")
@click.option("--list-slides", is_flag=True, help="list the first slides")
@click.option("--test-slide", metavar="ID", default=None, help="open ID and read one tile")
@with_appcontext
def check_command(list_slides: bool, test_slide: str | None) -> None:
    """Check storage reachability (and optionally list slides / read a tile)."""
    svc = services()
    ok = True
    try:
        click.echo(f"storage: {svc.storage.check()} ... reachable")
    except WsiError as exc:
        click.echo(f"storage: {svc.config.storage_description} ... FAILED: {exc}", err=True)
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


def ensure_demo_slide(folder: str) -> str | None:
    """Write the synthetic demo slide (``format.demo``: 8192 x 6144, 0.25 um/px, tissue
    islands) into ``folder`` when it holds no slide; return its path, None when it had one."""
    from ..format.demo import demo_slide_bytes
    from ..io.storage import is_slide_name

    os.makedirs(folder, exist_ok=True)
    for _, _, names in os.walk(folder):
        if any(is_slide_name(n) for n in names):
            return None
    path = os.path.join(folder, DEMO_NAME)
    data = demo_slide_bytes()
    with open(path + ".part", "wb") as out:
        out.write(data)
    os.replace(path + ".part", path)
    return path


@click.command("demo")
@click.argument("folder", default=None, required=False)
def demo_command(folder: str | None) -> None:
    """Write a demo slide into FOLDER (default WSI_SLIDES_DIR or ./slides) if it has none."""
    folder = folder or os.environ.get("WSI_SLIDES_DIR", "./slides")
    path = ensure_demo_slide(folder)
    click.echo(f"wrote {path}" if path else f"{folder} already holds slides")


@click.command("serve")
@click.argument("source", required=False)
@click.option("--host", default=None)
@click.option("--port", type=int, default=None)
@click.option("--workers", type=int, default=None)
@click.option("--threads", type=int, default=None)
@click.option("--slides-dir", default=None)
def serve_command(source: str | None, host: str | None, port: int | None,
                  workers: int | None, threads: int | None, slides_dir: str | None) -> None:
    """Run the service under gunicorn. SOURCE: s3://bucket[/prefix] or a folder; with no
    bucket the local folder is used, and a demo slide is written there if it is empty."""
    overrides = {"WSI_HOST": host, "WSI_PORT": port, "WSI_WORKERS": workers,
                 "WSI_THREADS": threads, "WSI_SLIDES_DIR": slides_dir}
    if source and source.startswith("s3://"):
        bucket, _, prefix = source[5:].partition("/")
        overrides.update({"WSI_S3_BUCKET": bucket, "WSI_S3_PREFIX": prefix})
    elif source:
        overrides["WSI_SLIDES_DIR"] = source
    os.environ.update({k: str(v) for k, v in overrides.items() if v is not None})
    try:
        config = Config.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if not config.s3_bucket and ensure_demo_slide(config.slides_dir):
        click.echo(f"{config.slides_dir} was empty: wrote {DEMO_NAME}")
    run_gunicorn()


def run_gunicorn() -> None:
    from gunicorn.app.base import BaseApplication

    from .gunicorn_settings import post_worker_init, settings

    class Application(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options: dict[str, Any] = settings()
            options.pop("wsgi_app")
            options["post_worker_init"] = post_worker_init
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


@click.group(cls=FlaskGroup, create_app=_create_app, add_default_commands=False)
def main() -> None:
    """wsi_streamer: whole-slide image tile server."""


main.add_command(serve_command)
main.add_command(sign_url_command)
main.add_command(check_command)
main.add_command(demo_command)
main.add_command(patches_group)
