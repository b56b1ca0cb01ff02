"""What ``wsi-streamer serve`` does before it starts gunicorn, so that a first start that
cannot work fails with one line instead of serving 500s: the slides folder (only the default
``./slides`` is created, with the demo slide), then the ``check`` command's storage check,
bounded by ``STARTUP_CHECK_S``, and the viewer URL of the first slide."""

from __future__ import annotations

import os
import threading
from typing import Any

import click

from ..config import SETTINGS_BY_FIELD, Config
from ..errors import ConfigError, StorageConnectionError, WsiError
from ..limits import STARTUP_CHECK_S
from .services import configured_storage, storage_of

DEMO_NAME = "demo-slide.tif"


def storage_advice(exc: BaseException, config: Config) -> str:
    """``exc``'s message, with what to do for the failures of a first start that the
    storage layer cannot phrase without host details (the endpoint, the folder)."""
    if isinstance(exc, StorageConnectionError):
        endpoint = (getattr(exc.__cause__, "kwargs", {}).get("endpoint_url")
                    or config.s3_endpoint or "the S3 endpoint")
        return (f"{exc}: cannot connect to {endpoint}: check WSI_S3_ENDPOINT (or "
                "--s3-endpoint) and that the server is up")
    try:
        local = served_folder(config)
    except ConfigError:
        local = None
    if local and not os.path.isdir(local[0]):
        return (f"the slides folder {os.path.abspath(local[0])} does not exist: "
                f"create it, or set {local[1]} (or WSI_S3_BUCKET for S3)")
    return str(exc) if isinstance(exc, WsiError) else f"{type(exc).__name__}: {exc}"


def served_folder(config: Config) -> tuple[str, str] | None:
    """(folder, the variable that named it) when ``config``'s storage is a local folder
    (``services.storage_of``), else None. ``ConfigError`` for a bad WSI_STORAGE."""
    spec, _ = storage_of(config)
    if spec.scheme != "file":
        return None
    return spec.prefix, "WSI_STORAGE" if config.storage else "WSI_SLIDES_DIR"


def is_default_folder(folder: str) -> bool:
    """Whether ``folder`` is the default slides folder (``./slides``, however spelled)."""
    default = SETTINGS_BY_FIELD["slides_dir"].default
    return os.path.abspath(folder) == os.path.abspath(default)


def ensure_demo_slide(folder: str) -> str | None:
    """Write the synthetic demo slide (``format.demo``) into ``folder`` (created if missing)
    when it holds no slide; return its path, None when it had one."""
    from ..format.demo import demo_slide_bytes
    from ..io.series import is_member_name
    from ..io.storage import is_slide_name

    os.makedirs(folder, exist_ok=True)
    for _, _, names in os.walk(folder):
        if any(is_slide_name(n) or is_member_name(n) for n in names):
            return None
    path = os.path.join(folder, DEMO_NAME)
    data = demo_slide_bytes()
    with open(path + ".part", "wb") as out:
        out.write(data)
    os.replace(path + ".part", path)
    return path


def require_folder(folder: str, named_by: str) -> None:
    """``click.ClickException`` naming ``folder`` and what named it (``named_by``: SOURCE, a
    flag or a variable) when it does not exist and is not the default ``./slides`` (a typo
    must not become a new folder holding a demo slide)."""
    if os.path.isdir(folder) or is_default_folder(folder):
        return
    what = "is not a folder" if os.path.exists(folder) else "does not exist"
    raise click.ClickException(
        f"the slides folder {os.path.abspath(folder)} ({named_by}) {what}: check the path, "
        f"or create it (only the default ./slides is created for you)")


def startup_check(config: Config, wait_s: float = STARTUP_CHECK_S) -> tuple[str, str | None]:
    """The ``check`` command's storage check, then a one-slide listing, awaited at most
    ``wait_s`` together: (the storage's description, the first slide id or None).
    ``click.ClickException`` with the ``check`` command's one line when storage fails its
    check or does not answer. A listing that fails or does not answer is only a warning:
    slides can still be served by id."""
    try:
        storage, _, _ = configured_storage(config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    found: dict[str, Any] = {}
    checked = threading.Event()

    def run() -> None:
        try:
            found["description"] = storage.check()
        except Exception as exc:  # any failure is the one line below, never a traceback
            found["error"] = exc
            return
        finally:
            checked.set()
        try:
            found["first"] = next(iter(storage.list_slides(limit=1).slides), None)
        except Exception as exc:  # reported as a warning: slides are served by id anyway
            found["list_error"] = exc

    thread = threading.Thread(target=run, daemon=True, name="wsi-startup-check")
    thread.start()
    thread.join(wait_s)
    where = config.storage_description
    if not checked.is_set():
        raise click.ClickException(
            f"storage: {where} ... FAILED: no answer within {wait_s:g} s: check the "
            "endpoint (WSI_S3_ENDPOINT or --s3-endpoint), the network and the storage URL")
    if "error" in found:
        raise click.ClickException(f"storage: {where} ... FAILED: "
                                   f"{storage_advice(found['error'], config)}")
    click.echo(f"storage: {found['description']} ... reachable")
    if "list_error" in found:
        click.echo(f"warning: listing slides failed: {found['list_error']}", err=True)
    elif thread.is_alive():
        click.echo(f"warning: listing slides gave no answer within {wait_s:g} s", err=True)
    return found["description"], found.get("first")


def base_url(config: Config) -> str:
    """``http://host:port`` that a browser on this machine can open (a wildcard bind address
    becomes ``localhost``)."""
    host = config.host
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "localhost"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{config.port}"
