"""wsistream 0.1.6's ``WsiStreamDataset`` for ``bench.patch_loader``, timed by OUR
``benchmark_throughput``; runs in ``.venv-bench`` (wsistream imports OpenCV, which the project
venv must not). One process per row:
``python -m bench.patch_loader_peer --row SYSTEM --workers N --spec JSON --slides JSON
--endpoint URL ...`` prints one JSON row.

- ``wsistream-tiffslide-s3fs``: ``TiffSlideBackend`` on ``s3://`` URLs (tiffslide over s3fs,
  defaults), the endpoint through ``fsspec.config.conf["s3"]`` (set before the DataLoader forks
  its workers, so they inherit it);
- ``wsistream-openslide-local``: ``OpenSlideBackend`` on the local copies.

Our ``benchmark_throughput`` is imported without the ``__init__`` of ``wsi_streamer.patches``
and ``wsi_streamer.patches.torch`` (which need the project's own dependencies): only
``torch.bench``, ``torch.monitor``, ``torch.ranks`` and ``sources`` (with
``wsi_streamer.io.s3``, i.e. boto3, about 10 MB) are loaded into this process, i.e. the same
code the project venv runs for our rows.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import types
from typing import Any

from .patch_common import WSISTREAM_PIPELINE_ARGS, Spec, build_pipeline_kwargs, set_fake_aws
from .patch_loader import PEERS, emit, measure_row, row_parser
from .patch_peers import wsistream_backend

DROPPED: list[str] = []


def import_benchmark_throughput() -> Any:
    """``wsi_streamer.patches.torch.bench.benchmark_throughput`` from this checkout, with
    ``wsi_streamer.patches`` and ``wsi_streamer.patches.torch`` registered as bare packages
    (their ``__init__`` not run)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    import wsi_streamer

    folder = os.path.dirname(wsi_streamer.__file__)
    for name in ("patches", "patches/torch"):
        dotted = "wsi_streamer." + name.replace("/", ".")
        if dotted not in sys.modules:
            pkg = types.ModuleType(dotted)
            pkg.__path__ = [os.path.join(folder, name)]
            sys.modules[dotted] = pkg
    from wsi_streamer.patches.torch.bench import benchmark_throughput

    return benchmark_throughput


def make_wsistream_dataset(slides: list[str], pool_size: int, patches_per_slide: int,
                           patches_per_visit: int, seed: int, *, system: str, spec: Spec,
                           endpoint: str, dtype: str) -> Any:
    """wsistream's ``WsiStreamDataset`` from the same spec, with wsistream's classes."""
    import wsistream
    from wsistream.torch import WsiStreamDataset

    backend = wsistream_backend(system, endpoint)
    kwargs = build_pipeline_kwargs(spec, wsistream, WSISTREAM_PIPELINE_ARGS, DROPPED)
    return WsiStreamDataset(slides, backend=backend, pool_size=pool_size,
                            patches_per_slide=patches_per_slide,
                            patches_per_visit=patches_per_visit, cycle=True, seed=seed,
                            output_dtype=dtype, **kwargs)


def main() -> None:
    args = row_parser(PEERS).parse_args()
    set_fake_aws()
    import cv2  # noqa: F401 - imported before timing, as the dataset's own imports are
    import wsistream
    import wsistream.torch  # noqa: F401

    if args.row == "wsistream-tiffslide-s3fs":
        import s3fs  # noqa: F401
        import tiffslide  # noqa: F401
    else:
        import openslide  # noqa: F401
    benchmark_throughput = import_benchmark_throughput()
    factory = functools.partial(make_wsistream_dataset, system=args.row,
                                spec=json.loads(args.spec), endpoint=args.endpoint,
                                dtype=args.dtype)
    row = measure_row(args.row, args.workers, factory, json.loads(args.slides),
                      benchmark_throughput, args)
    row["version"] = f"wsistream {wsistream.__version__}"
    row["dropped"] = sorted(set(DROPPED))
    emit(row)


if __name__ == "__main__":
    main()
