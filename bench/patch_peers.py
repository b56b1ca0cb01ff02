"""wsistream 0.1.x on the benchmark slides; runs in ``.venv-bench`` (wsistream imports OpenCV,
which the project venv must not), one process per measurement so its peak memory is its own.

``python -m bench.patch_peers --system NAME --config NAME --spec JSON --slides JSON
--endpoint URL --expected N`` prints one JSON row (``bench.patch_common.measure``). Systems:

- ``wsistream-tiffslide-s3fs``: ``TiffSlideBackend`` on ``s3://`` URLs, i.e. tiffslide over
  s3fs with its defaults (what a wsistream user gets for S3), pointed at the bench S3 server
  through fsspec's configuration (``fsspec.config.conf["s3"]``, as ``FSSPEC_S3_*`` would).
- ``wsistream-openslide-local``: ``OpenSlideBackend`` on the local copies of the same slides.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .patch_common import (
    WSISTREAM_PIPELINE_ARGS,
    build_pipeline_kwargs,
    emit,
    measure,
    set_fake_aws,
)

SYSTEMS = ("wsistream-tiffslide-s3fs", "wsistream-openslide-local")


def make_wsistream(system: str, slides: list[str], spec: dict[str, Any], endpoint: str,
                   dropped: list[str]) -> Any:
    import wsistream

    kwargs = build_pipeline_kwargs(spec, wsistream, WSISTREAM_PIPELINE_ARGS, dropped)
    return wsistream.PatchPipeline(slide_paths=slides, backend=wsistream_backend(system, endpoint),
                                   **kwargs)


def wsistream_backend(system: str, endpoint: str) -> Any:
    """TiffSlide over s3fs (s3fs defaults, pointed at the bench server) or OpenSlide."""
    import wsistream

    if system == "wsistream-tiffslide-s3fs":
        import fsspec.config

        fsspec.config.conf["s3"] = {"endpoint_url": endpoint, "key": "bench",
                                    "secret": "bench",
                                    "client_kwargs": {"region_name": "us-east-1"}}
        return wsistream.TiffSlideBackend()
    return wsistream.OpenSlideBackend()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--system", choices=SYSTEMS, required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--spec", required=True, help="configuration spec (JSON)")
    parser.add_argument("--slides", required=True, help="JSON list of paths or s3:// URLs")
    parser.add_argument("--endpoint", required=True, help="bench S3 server (for its counters)")
    parser.add_argument("--expected", type=int, default=0, help="for the progress bar")
    args = parser.parse_args()
    set_fake_aws()
    import cv2  # noqa: F401 - imported before timing, as the pipeline's own imports are
    import wsistream

    if args.system == "wsistream-tiffslide-s3fs":
        import s3fs  # noqa: F401
        import tiffslide  # noqa: F401
    else:
        import openslide  # noqa: F401
    dropped: list[str] = []
    row = measure(args.system, args.config,
                  lambda: make_wsistream(args.system, json.loads(args.slides),
                                         json.loads(args.spec), args.endpoint, dropped),
                  args.expected, args.endpoint)
    row["version"] = f"wsistream {wsistream.__version__}"
    row["dropped"] = sorted(set(dropped))
    emit(row)


if __name__ == "__main__":
    main()
