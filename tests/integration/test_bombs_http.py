"""Scan-bomb and J2K-bomb slides over HTTP and in the patch pipeline (issue 26, items 1 and
2): every route answers 415 JSON naming the bound, without decoding the bomb; a good slide
beside them is unaffected; the pipeline skips the bomb slide with the bound as its reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.bombs import write_j2k_bomb_svs, write_scan_bomb_svs
from tests.fixtures.patch_slides import write_islands_svs
from tests.fixtures.slides import make_svs
from wsi_streamer.config import Config

# name -> (the bound it exceeds, its top Deep Zoom level: 1024 px and 2048 px squares)
BOMBS = {"scan-bomb.svs": ("MAX_JPEG_SCANS", 10), "j2k-bomb.svs": ("MAX_JP2K_DECODE_BYTES", 11)}


@pytest.fixture(scope="module")
def app_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    root = tmp_path_factory.mktemp("bombs")
    write_scan_bomb_svs(root, "scan-bomb.svs", extra=2000, macro=True)
    # 2048 px (a region of it fits the tile service's canvas) in 4x4 code-blocks: 360 MiB
    write_j2k_bomb_svs(root, "j2k-bomb.svs", side=2048, block=4)
    make_svs(600, 400, levels=2, tile=256, associated=False).write(root, "good.svs")
    return Config(slides_dir=str(root), tile_cache_dir=str(tmp_path_factory.mktemp("tc")),
                  associated_images=True)


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_every_route_names_the_bound(client: Any, name: str) -> None:
    limit, top = BOMBS[name]
    for url in (f"/slides/{name}", f"/slides/{name}/dzi"):  # the structure is fine
        assert client.get(url).status_code == 200, url
    urls = [f"/tiles/{name}/0/0/0.jpg", f"/slides/{name}/thumbnail?max_size=128",
            f"/slides/{name}/dzi_files/0/0_0.jpg", f"/slides/{name}/dzi_files/{top}/0_0.jpg",
            f"/iiif/3/{name}/full/128,/0/default.jpg", f"/iiif/3/{name}/0,0,256,256/max/0/"
            "default.jpg"]
    if name == "scan-bomb.svs":
        urls.append(f"/slides/{name}/associated/macro")
    for url in urls:
        response = client.get(url)
        body = response.get_json()
        assert response.status_code in (415, 502), (url, response.status_code, body)
        assert body["status"] == response.status_code and limit in body["message"], (url, body)
    assert client.get("/tiles/good.svs/0/0/0.jpg").status_code == 200
    assert client.get("/slides/good.svs/thumbnail?max_size=128").status_code == 200


def test_pipeline_skips_the_bomb_slide_with_its_reason(tmp_path: Path) -> None:
    from wsi_streamer.patches.pipeline import PatchPipeline
    from wsi_streamer.patches.sampling import RandomSampler

    good = [str(write_islands_svs(tmp_path, f"good-{i}.svs", width=1024, height=768, seed=i,
                                  downsamples=(1, 4))) for i in range(2)]
    bombs = [str(write_scan_bomb_svs(tmp_path, "scan-bomb.svs", extra=2000)),
             str(write_j2k_bomb_svs(tmp_path, "j2k-bomb.svs", side=4096))]
    pipe = PatchPipeline(sorted(good + bombs), sampler=RandomSampler(64), seed=3,
                         patches_per_slide=4, pool_size=4, thumbnail_size=(256, 256),
                         cache_dir=str(tmp_path / "cache"))
    patches = list(pipe)
    assert {p.coordinate.slide_path for p in patches} == set(good)
    assert len(patches) == 8
    reasons = dict(pipe.stats.recent_errors)
    for path, limit in zip(bombs, ("MAX_JPEG_SCANS", "MAX_JP2K_DECODE_BYTES"), strict=True):
        assert limit in reasons.get(path, ""), reasons
