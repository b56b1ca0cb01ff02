"""Peer systems on the same objects and tiles; runs in ``.venv-bench`` (recent s3fs/aiobotocore,
tiffslide, OpenSlide), one process per measurement so each starts cold.

``python -m bench.peers --endpoint URL --bucket B --key K --peer NAME --tiles JSON`` prints one
JSON ``Result``. Peers: ``s3fs-default`` (tiffslide over s3fs, its defaults: 50 MiB readahead
blocks), ``s3fs-256k`` (256 KiB readahead), ``s3fs-nocache`` (``cache_type='none'``) and
``download`` (whole object with boto3, then OpenSlide on the local file).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from typing import Any

from .common import FAKE_AWS_ENV, Result, S3Counters, measure_slide

PEERS = ("s3fs-default", "s3fs-256k", "s3fs-nocache", "download")
CACHE: dict[str, dict[str, Any]] = {
    "s3fs-default": {},
    "s3fs-256k": {"block_size": 256 * 1024, "cache_type": "readahead"},
    "s3fs-nocache": {"cache_type": "none"},
}


def s3fs_client(endpoint: str) -> Any:
    """An s3fs filesystem with its client created (not counted as opening a slide)."""
    import s3fs
    import tiffslide  # noqa: F401 - imported before timing

    fs = s3fs.S3FileSystem(key="bench", secret="bench", skip_instance_cache=True,
                           client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"})
    fs.connect()
    return fs


def open_tiffslide(fs: Any, bucket: str, key: str, peer: str) -> Any:
    import tiffslide

    handle = fs.open(f"{bucket}/{key}", "rb", **CACHE[peer])
    return tiffslide.TiffSlide(handle)


def tiffslide_tile(slide: Any, x: int, y: int) -> Any:
    return slide.read_region((x * 256, y * 256), 0, (256, 256))


def open_download(s3: Any, bucket: str, key: str, folder: str) -> Any:
    import openslide

    path = os.path.join(folder, os.path.basename(key))
    s3.download_file(bucket, key, path)
    return openslide.OpenSlide(path)


def openslide_tile(slide: Any, x: int, y: int) -> Any:
    return slide.read_region((x * 256, y * 256), 0, (256, 256))


def run_peer(endpoint: str, bucket: str, key: str, peer: str, first: tuple[int, int],
             cold: list[tuple[int, int]]) -> Result:
    counters = S3Counters(endpoint)
    result = Result(system=peer, slide=key)
    if peer == "download":
        import boto3
        import openslide  # noqa: F401 - imported before timing

        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        with tempfile.TemporaryDirectory() as folder:
            measure_slide(result, counters, lambda: open_download(s3, bucket, key, folder),
                          openslide_tile, first, cold)
        result.note = "tiles read from local disk after the download"
        return result
    fs = s3fs_client(endpoint)
    measure_slide(result, counters, lambda: open_tiffslide(fs, bucket, key, peer),
                  tiffslide_tile, first, cold)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--peer", choices=PEERS, required=True)
    parser.add_argument("--tiles", required=True, help='{"first": [x, y], "cold": [[x, y]...]}')
    args = parser.parse_args()
    for name, value in FAKE_AWS_ENV.items():
        os.environ.setdefault(name, value)
    tiles = json.loads(args.tiles)
    result = run_peer(args.endpoint, args.bucket, args.key, args.peer, tuple(tiles["first"]),
                      [tuple(t) for t in tiles["cold"]])
    sys.stdout.write(json.dumps(dataclasses.asdict(result)) + "\n")


if __name__ == "__main__":
    main()
