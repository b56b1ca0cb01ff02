"""Our pipeline (``wsi_streamer.patches``) on the benchmark slides, in the project venv, one
process per measurement (so its peak memory is its own) with a fresh ``cache_dir`` (cold: every
slide is parsed and its tissue detected in the measured run).

``python -m bench.patch_ours --system ours-s3|ours-local --config NAME --spec JSON --slides
JSON --endpoint URL --expected N`` prints one JSON row (``bench.patch_common.measure``).
With ``--recipe NAME`` the pipeline takes ``wsi_streamer.patches.recipes.NAME()`` itself (plus
the shared run knobs of the spec); otherwise it is built from the spec with our classes of the
same names as wsistream's.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from typing import Any

from .patch_common import RUN, build_pipeline_kwargs, describe, emit, measure, set_fake_aws

SYSTEMS = ("ours-s3", "ours-local", "ours-dicom-s3")
IO_KEYS = ("io/requests", "io/bytes")


def recipe_kwargs(name: str) -> dict[str, Any]:
    """The published recipe's ``PatchPipeline`` arguments."""
    from wsi_streamer.patches import recipes

    kwargs: dict[str, Any] = recipes.RECIPES[name]()
    return kwargs


def recipe_spec(name: str) -> dict[str, Any]:
    """Our recipe as a neutral spec (to build wsistream's equivalent)."""
    kwargs = recipe_kwargs(name)
    spec: dict[str, Any] = describe({k: v for k, v in kwargs.items() if k != "backend"})
    return spec


def make_ours(system: str, slides: list[str], kwargs: dict[str, Any], endpoint: str,
              cache_dir: str) -> Any:
    """The one place our pipeline is constructed: ``kwargs`` are ``PatchPipeline`` arguments
    (components already built); storage and cache are set here."""
    from wsi_streamer.patches import NativeBackend, PatchPipeline

    kwargs = {"backend": NativeBackend(), **kwargs, "cache_dir": cache_dir}
    if system.endswith("-s3"):
        kwargs["storage_options"] = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    return PatchPipeline(slides, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--system", choices=SYSTEMS, required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--spec", required=True, help="configuration spec (JSON)")
    parser.add_argument("--slides", required=True, help="JSON list of paths or s3:// URLs")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--expected", type=int, default=0)
    parser.add_argument("--recipe", help="use wsi_streamer.patches.recipes.RECIPE()")
    args = parser.parse_args()
    set_fake_aws()
    import wsi_streamer
    from wsi_streamer import patches

    dropped: list[str] = []
    spec = json.loads(args.spec)
    recipe = recipe_kwargs(args.recipe) if args.recipe else None
    if recipe is not None:  # the recipe itself, with the shared knobs of the run
        kwargs = {**recipe, **{k: v for k, v in spec.items() if k in RUN}}
    else:
        kwargs = build_pipeline_kwargs(spec, patches, None, dropped)
    with tempfile.TemporaryDirectory(prefix="bench-patch-cache-") as cache_dir:
        row = measure(args.system, args.config,
                      lambda: make_ours(args.system, json.loads(args.slides), kwargs,
                                        args.endpoint, cache_dir),
                      args.expected, args.endpoint, IO_KEYS)
    row["version"] = f"wsi_streamer {wsi_streamer.__version__}"
    row["dropped"] = sorted(set(dropped))
    emit(row)


if __name__ == "__main__":
    main()
