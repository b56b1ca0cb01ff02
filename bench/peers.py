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
CACHE = {"s3fs-default": {}, "s3fs-256k": {"block_size": 256 * 1024, "cache_type": "readahead"},
         "s3fs-nocache": {"cache_type": "none"}}


def open_tiffslide(endpoint: str, bucket: str, key: str, peer: str) -> Any:
    import s3fs
    import tiffslide

    fs = s3fs.S3FileSystem(key="bench", secret="bench", skip_instance_cache=True,
                           client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"})
    handle = fs.open(f"{bucket}/{key}", "rb", **CACHE[peer])
    return tiffslide.TiffSlide(handle)


def tiffslide_tile(slide: Any, x: int, y: int) -> Any:
    return slide.read_region((x * 256, y * 256), 0, (256, 256))


def open_download(endpoint: str, bucket: str, key: str, folder: str) -> Any:
    import boto3
    import openslide

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
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
        with tempfile.TemporaryDirectory() as folder:
            measure_slide(result, counters, lambda: open_download(endpoint, bucket, key, folder),
                          openslide_tile, first, cold)
        result.note = "tiles read from local disk after the download"
        return result
    measure_slide(result, counters, lambda: open_tiffslide(endpoint, bucket, key, peer),
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
