"""``wsi-streamer patches preview`` (one PNG: thumbnail, tissue mask, patch boxes and the patch
grid) and ``wsi-streamer patches bench`` (patches/s, time to first patch, storage requests and
bytes per patch, with a progress bar)."""

from __future__ import annotations

import os
import time
from typing import Any

import click
import numpy as np

from .handle import SlideHandle


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
@click.option("-n", "count", default=64, show_default=True, help="patches to draw")
@click.option("--patch-size", type=int, default=None, help="without --recipe (default 224)")
@click.option("--mpp", type=float, default=None, help="target mpp without --recipe")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output", default="preview.png", show_default=True)
def preview_command(source: str, recipe: str | None, count: int, patch_size: int | None,
                    mpp: float | None, seed: int, output: str) -> None:
    """Draw SOURCE's tissue mask and sampled patches (thumbnail + boxes + patch grid)."""
    from .pipeline import PatchPipeline
    from .viz import preview, save_png

    # -n wins over a recipe's patches_per_slide (uni's 800): one value, not two keywords
    args = {**_pipeline_args(recipe, patch_size, mpp), "patches_per_slide": count}
    pipe = PatchPipeline([source], seed=seed, pool_size=1, **args)
    path = pipe.slide_paths[0]
    results = list(pipe)
    mask = pipe.tissue_mask(path)
    with SlideHandle(path, backend=pipe.backend) as slide:
        thumbnail = slide.get_thumbnail(pipe.thumbnail_size)
        props = slide.properties
    title = f"{os.path.basename(path)} ({recipe or 'RandomSampler'})"
    picture = preview(thumbnail, mask.mask, [r.coordinate for r in results],
                      [_first_image(r) for r in results], props.dimensions,
                      props.level_downsamples, title)
    save_png(picture, output)
    click.echo(f"{output}: {len(results)} patches, tissue {mask.tissue_fraction:.1%} of "
               f"{props.width}x{props.height}")


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
@click.option("--endpoint-url", default=None, help="S3 endpoint (else WSI_S3_ENDPOINT)")
@click.option("--no-cache", is_flag=True, help="no host cache (every open parses, detects)")
def bench_command(source: tuple[str, ...], recipe: str | None, patch_size: int, mpp: float,
                  count: int, pool_size: int, patches_per_slide: int, prefetch: int | None,
                  io_threads: int | None, endpoint_url: str | None, no_cache: bool) -> None:
    """Stream COUNT patches from SOURCE (files, folders, s3:// keys or prefixes) and print
    patches/s, time to first patch and storage requests and bytes per patch."""
    from tqdm import tqdm

    from .pipeline import DEFAULT, PatchPipeline

    args = {**_pipeline_args(recipe, patch_size, mpp), "patches_per_slide": patches_per_slide}
    options = {"endpoint_url": endpoint_url} if endpoint_url else None
    start = time.perf_counter()
    pipe = PatchPipeline(list(source), pool_size=pool_size, cycle=True, seed=0,
                         storage_options=options, prefetch=prefetch, io_threads=io_threads,
                         cache_dir=None if no_cache else DEFAULT, **args)
    first = None
    done = 0
    with tqdm(total=count, unit="patch", disable=None) as bar:
        for _ in pipe:
            done += 1
            if first is None:
                first = time.perf_counter() - start
            bar.update(1)
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
