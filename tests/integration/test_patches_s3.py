"""The patch pipeline over a real S3 endpoint on loopback (moto server): the same patches as
from local files, and a second pipeline on the same host cache opens every slide without a
metadata GET or a detection and fetches only the tiles under its patches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import wsi_streamer.io.s3 as s3mod
from tests.conftest import S3Bucket
from tests.fixtures.patch_slides import write_islands_svs
from wsi_streamer.patches import PatchPipeline, RandomSampler, SlideHandle

KWARGS: dict[str, Any] = {"sampler": RandomSampler(224, target_mpp=0.5), "seed": 7,
                          "thumbnail_size": (512, 512), "patches_per_slide": 6, "pool_size": 3}


@pytest.fixture
def bucket_slides(s3_bucket: S3Bucket, tmp_path: Path) -> tuple[str, Path]:
    folder = tmp_path / "local"
    folder.mkdir()
    for index in range(3):
        path = write_islands_svs(folder, f"s{index}.svs", width=1536, height=1024, seed=index)
        s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=f"train/{path.name}",
                                    Body=path.read_bytes())
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="train/notes.txt", Body=b"x")
    return f"s3://{s3_bucket.name}/train/", folder


@pytest.fixture
def gets(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every ranged GetObject our S3 reader sends: (key, range spec)."""
    seen: list[tuple[str, str]] = []
    real = s3mod._get_range

    def counting(client: Any, bucket: str, key: str, slide_id: str, stats: Any, spec: str,
                 length: int | None, **kw: Any) -> Any:
        seen.append((key, spec))
        return real(client, bucket, key, slide_id, stats, spec, length, **kw)

    monkeypatch.setattr(s3mod, "_get_range", counting)
    return seen


def test_bucket_prefix_gives_the_same_patches_as_local_files(bucket_slides, s3_bucket,
                                                              tmp_path):
    prefix, folder = bucket_slides
    options = {"endpoint_url": s3_bucket.endpoint}
    remote = list(PatchPipeline(prefix, storage_options=options,
                                cache_dir=str(tmp_path / "c1"), **KWARGS))
    local = list(PatchPipeline(str(folder), cache_dir=str(tmp_path / "c2"), **KWARGS))
    assert len(remote) == len(local) == 18
    for a, b in zip(remote, local, strict=True):
        assert Path(a.coordinate.slide_path).name == Path(b.coordinate.slide_path).name
        assert a.coordinate.slide_path.startswith(prefix)
        assert (a.coordinate.x, a.coordinate.y, a.coordinate.level) == (
            b.coordinate.x, b.coordinate.y, b.coordinate.level)
        assert np.array_equal(a.image, b.image)


def test_second_pipeline_on_the_host_cache_reads_only_tiles(bucket_slides, s3_bucket,
                                                            tmp_path, gets):
    prefix, _ = bucket_slides
    options = {"endpoint_url": s3_bucket.endpoint}
    cache = str(tmp_path / "host")
    first = PatchPipeline(prefix, storage_options=options, cache_dir=cache, **KWARGS)
    list(first)
    assert first.stats_dict()["io/detections"] == 3
    gets.clear()
    second = PatchPipeline(prefix, storage_options=options, cache_dir=cache,
                           **{**KWARGS, "seed": 8})
    results = list(second)
    stats = second.stats_dict()
    assert len(results) == 18
    assert stats["io/detections"] == 0 and stats["io/mask_cache_hits"] == 3
    assert stats["io/structure_cache_hits"] == 3
    # The tiles under the patches, from the slides' own tile tables.
    touched: dict[str, set[tuple[int, int]]] = {}
    for result in results:
        c = result.coordinate
        key = c.slide_path[len(f"s3://{s3_bucket.name}/"):]
        touched.setdefault(key, set())
        tile = 256
        for ty in range(c.y // tile, (c.y + c.patch_size - 1) // tile + 1):
            for tx in range(c.x // tile, (c.x + c.patch_size - 1) // tile + 1):
                touched[key].add((tx, ty))
    tile_bytes = 0
    ranges: dict[str, list[tuple[int, int]]] = {}
    for key, tiles in touched.items():
        with SlideHandle(f"s3://{s3_bucket.name}/{key}",
                         backend=second.backend) as handle:
            reader = handle._slide.reader  # type: ignore[attr-defined]
            info = reader.level(0)
            for tx, ty in tiles:
                if tx < info.tiles_x and ty < info.tiles_y:
                    offset, length = reader.tile_range(0, tx, ty)
                    tile_bytes += length
                    ranges.setdefault(key, []).append((offset, offset + length))
    fetched = 0
    for key, spec in gets:
        start, _, end = spec.partition("-")
        lo, hi = int(start), int(end) + 1
        fetched += hi - lo
        # Every GET lies inside the touched tiles of its slide (coalesced neighbours).
        assert any(a <= lo < b for a, b in ranges[key]), (key, spec)
    assert 0 < fetched <= 1.2 * tile_bytes
    assert stats["io/bytes"] == fetched


def test_empty_prefix_and_missing_key_are_clear_errors(s3_bucket):
    options = {"endpoint_url": s3_bucket.endpoint}
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        PatchPipeline(f"s3://{s3_bucket.name}/nothing-here/", storage_options=options)
    with pytest.raises(ValueError, match="storage_options"):
        PatchPipeline(f"s3://{s3_bucket.name}/x/", storage_options={"endpoint": "x"})
