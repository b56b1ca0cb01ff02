"""``wsi-streamer patches preview`` (one PNG: thumbnail, tissue mask, patch boxes and the patch
grid) and ``wsi-streamer patches bench`` (patches/s, time to first patch, storage requests and
bytes per patch, with a progress bar)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
import numpy as np

from ..errors import UnsupportedFormat, WsiError
from ..limits import PREVIEW_MAX_SLIDES
from ..progress import Progress
from .handle import SlideHandle
from .sources import ENV_DEFAULTS

# The storage flags of every command that reads slides, spelled as ``serve``'s (the settings
# table, ``config.SETTINGS``, which this layer may not import: tests/unit/server/
# test_one_spelling.py holds the two together).
S3_FLAGS = (("--s3-endpoint", ENV_DEFAULTS["endpoint_url"], "endpoint_url",
             "custom S3 endpoint URL (MinIO, Ceph, moto, ...)"),
            ("--s3-region", ENV_DEFAULTS["region"], "region", "S3 region"))


FALLBACK_HELP = ("local folder only: read slides the native readers refuse (NDPI, MRXS, "
                 "SCN, ...) through OpenSlide (the [openslide] extra)")
FALLBACK_ADVICE = ("; OpenSlide reads it: --openslide-fallback (WSI_OPENSLIDE_FALLBACK=true, "
                   "the [openslide] extra)")


def storage_flags(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--s3-endpoint``, ``--s3-region`` (each also read from its variable) and
    ``--openslide-fallback``."""
    func = click.option("--openslide-fallback", is_flag=True, envvar="WSI_OPENSLIDE_FALLBACK",
                        help=f"{FALLBACK_HELP} [env WSI_OPENSLIDE_FALLBACK]")(func)
    for flag, env, _, text in reversed(S3_FLAGS):
        func = click.option(flag, envvar=env, default=None, metavar="TEXT",
                            help=f"{text} [env {env}]")(func)
    return func


def backend_of(flags: dict[str, Any]) -> dict[str, Any]:
    """``backend=OpenSlideBackend()`` under ``--openslide-fallback``, else nothing."""
    if not flags.get("openslide_fallback"):
        return {}
    from .backends.openslide import OpenSlideBackend

    return {"backend": OpenSlideBackend()}


def storage_options(flags: dict[str, Any]) -> dict[str, Any] | None:
    """The pipeline's ``storage_options`` from the values of ``storage_flags``."""
    options = {key: flags[flag[2:].replace("-", "_")] for flag, _, key, _ in S3_FLAGS
               if flags.get(flag[2:].replace("-", "_"))}
    return options or None


@contextmanager
def one_line(command: str, sources: tuple[str, ...]) -> Iterator[None]:
    """A failure of ``command`` as one ``Error:`` line and exit 1, never a traceback; advice
    names this command's flags (``--s3-endpoint``), not the server's bucket variable."""
    try:
        yield
    except (WsiError, OSError, ValueError) as exc:
        message = str(exc) or type(exc).__name__
        if type(exc) is UnsupportedFormat:
            message += FALLBACK_ADVICE
        message = message.replace("check WSI_S3_BUCKET", "check the bucket in SOURCE")
        message = message.replace("WSI_S3_ENDPOINT", "--s3-endpoint / WSI_S3_ENDPOINT")
        message = message.replace("WSI_S3_REGION", "--s3-region / WSI_S3_REGION")
        shown = " ".join(sources) if len(sources) < 4 else f"{sources[0]} (+{len(sources) - 1})"
        raise click.ClickException(f"patches {command} {shown}: {type(exc).__name__}: "
                                   f"{' '.join(message.split())}") from None


def _pipeline_args(recipe: str | None, patch_size: int | None, mpp: float | None
                   ) -> dict[str, Any]:
    from .recipes import RECIPES
    from .sampling import RandomSampler

    if recipe is None:
        return {"sampler": RandomSampler(patch_size or 224, target_mpp=mpp)}
    if recipe not in RECIPES:
        raise click.BadParameter(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}",
                                 param_hint="--recipe")
    return dict(RECIPES[recipe]())


def _first_image(result: Any) -> np.ndarray:
    if result.image is not None:
        return np.asarray(result.image)
    return np.asarray(next(iter(result.views.values())))


@click.group("patches")
def patches_group() -> None:
    """Training patches streamed from slides (local files or s3://)."""


@patches_group.command("preview")
@click.argument("source")
@click.option("--recipe", default=None, help="a published recipe (midnight, uni, ...)")
@click.option("-n", "count", default=64, show_default=True,
              help=f"patches to draw in all (shared over up to {PREVIEW_MAX_SLIDES} slides)")
@click.option("--patch-size", type=int, default=None, help="without --recipe (default 224)")
@click.option("--mpp", type=float, default=None, help="target mpp without --recipe")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output", default="preview.png", show_default=True)
@storage_flags
def preview_command(source: str, recipe: str | None, count: int, patch_size: int | None,
                    mpp: float | None, seed: int, output: str, **flags: Any) -> None:
    """Draw SOURCE's tissue mask and sampled patches (thumbnail + boxes + patch grid), one
    picture per slide stacked in one PNG, the detector and its threshold in each caption.
    SOURCE: a slide file, a folder, s3://bucket/key or an s3:// prefix. Progress: a bar on a
    terminal, else a line every 10 s (WSI_PROGRESS_S)."""
    if count < 1:
        raise click.BadParameter("must be at least 1", param_hint="-n")
    with one_line("preview", (source,)):
        _preview(source, recipe, count, patch_size, mpp, seed, output, storage_options(flags),
                 backend_of(flags))


def _preview(source: str, recipe: str | None, count: int, patch_size: int | None,
             mpp: float | None, seed: int, output: str, options: dict[str, Any] | None,
             backend: dict[str, Any]) -> None:
    from PIL import Image

    from .pipeline import PatchPipeline
    from .viz import save_png

    probe = PatchPipeline([source], pool_size=1, storage_options=options, **backend)
    paths = probe.slide_paths[: min(count, PREVIEW_MAX_SLIDES)]
    quotas = [count // len(paths) + (i < count % len(paths)) for i in range(len(paths))]
    pictures = []
    with Progress("preview", total=len(paths), unit="slide") as progress:
        for path, quota in zip(paths, quotas, strict=True):
            # -n wins over a recipe's patches_per_slide (uni's 800): one value, not two
            args = {**_pipeline_args(recipe, patch_size, mpp), **backend,
                    "patches_per_slide": quota}
            pipe = PatchPipeline([path], seed=seed, pool_size=1, storage_options=options,
                                 **args)
            pictures.append(_slide_picture(pipe, path, recipe, output))
            progress.update()
    width = max(p.width for p in pictures)
    canvas = Image.new("RGB", (width, sum(p.height for p in pictures)), (255, 255, 255))
    top = 0
    for picture in pictures:
        canvas.paste(picture, (0, top))
        top += picture.height
    save_png(canvas, output)
    if len(probe.slide_paths) > len(paths):
        click.echo(f"{output}: the first {len(paths)} of {len(probe.slide_paths)} slides")


def _slide_picture(pipe: Any, path: str, recipe: str | None, output: str) -> Any:
    from .viz import preview

    with SlideHandle(path, backend=pipe.backend) as slide:  # a refused format stops here
        thumbnail = slide.get_thumbnail(pipe.thumbnail_size)
        props = slide.properties
    results = list(pipe)
    mask = pipe.tissue_mask(path)
    threshold = getattr(pipe.sampler, "tissue_threshold", None)
    caption = f"{pipe.tissue_detector!r}" + (
        f"; a patch needs >= {threshold:.0%} tissue" if threshold is not None else "")
    title = f"{os.path.basename(path)} ({recipe or 'RandomSampler'})"
    picture = preview(thumbnail, mask.mask, [r.coordinate for r in results],
                      [_first_image(r) for r in results], props.dimensions,
                      props.level_downsamples, title, caption=caption)
    click.echo(f"{output}: {os.path.basename(path)}: {len(results)} patches, tissue "
               f"{mask.tissue_fraction:.1%} of {props.width}x{props.height} "
               f"({caption})")
    return picture


@patches_group.command("bench")
@click.argument("source", nargs=-1, required=True)
@click.option("--recipe", default=None)
@click.option("--patch-size", type=int, default=224, show_default=True)
@click.option("--mpp", type=float, default=0.5, show_default=True)
@click.option("-n", "count", default=1000, show_default=True, help="patches to read")
@click.option("--pool-size", default=8, show_default=True)
@click.option("--patches-per-slide", default=100, show_default=True)
@click.option("--prefetch", type=int, default=None)
@click.option("--io-threads", type=int, default=None)
@click.option("--no-cache", is_flag=True, help="no host cache (every open parses, detects)")
@storage_flags
def bench_command(source: tuple[str, ...], recipe: str | None, patch_size: int, mpp: float,
                  count: int, pool_size: int, patches_per_slide: int, prefetch: int | None,
                  io_threads: int | None, no_cache: bool, **flags: Any) -> None:
    """Stream COUNT patches from SOURCE (files, folders, s3:// keys or prefixes) and print
    patches/s, time to first patch and storage requests and bytes per patch. Progress: a
    bar on a terminal, else a line every 10 s (WSI_PROGRESS_S)."""
    with one_line("bench", source):
        _bench(source, recipe, patch_size, mpp, count, pool_size, patches_per_slide,
               prefetch, io_threads, no_cache, storage_options(flags), backend_of(flags))


def _bench(source: tuple[str, ...], recipe: str | None, patch_size: int, mpp: float,
           count: int, pool_size: int, patches_per_slide: int, prefetch: int | None,
           io_threads: int | None, no_cache: bool, options: dict[str, Any] | None,
           backend: dict[str, Any]) -> None:
    from .pipeline import DEFAULT, PatchPipeline

    args = {**_pipeline_args(recipe, patch_size, mpp), **backend,
            "patches_per_slide": patches_per_slide}
    start = time.perf_counter()
    pipe = PatchPipeline(list(source), pool_size=pool_size, cycle=True, seed=0,
                         storage_options=options, prefetch=prefetch, io_threads=io_threads,
                         cache_dir=None if no_cache else DEFAULT, **args)
    first = None
    done = 0
    with Progress("bench", total=count, unit="patch") as progress:
        for _ in pipe:
            done += 1
            if first is None:
                first = time.perf_counter() - start
            progress.update()
            if done >= count:
                break
    elapsed = time.perf_counter() - start
    stats = pipe.stats_dict()
    rows = [("patches", f"{done}"), ("patches/s", f"{done / elapsed:.1f}"),
            ("time to first patch (s)", f"{first or 0:.3f}"),
            ("storage requests/patch", f"{stats.get('io/requests', 0) / max(done, 1):.2f}"),
            ("KB/patch", f"{stats.get('io/bytes', 0) / 1024 / max(done, 1):.1f}"),
            ("slides opened", f"{stats['pipeline/slides_processed']}"),
            ("slides failed", f"{stats['pipeline/slides_failed']}"),
            ("masks detected", f"{stats['io/detections']}"),
            ("masks from cache", f"{stats['io/mask_cache_hits']}")]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value:>12}")
