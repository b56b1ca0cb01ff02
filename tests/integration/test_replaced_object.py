"""A slide replaced in S3 while the server has it open: the next request that reads it gets
the new content at once (a typed ``ObjectChanged`` reopens the slide and retries), not 500s
until the revalidation window ends."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from tests.conftest import S3Bucket
from tests.fixtures.slides import make_svs
from wsi_streamer.config import Config
from wsi_streamer.server.app import create_app


def test_the_first_read_after_a_replacement_serves_the_new_slide(
        s3_bucket: S3Bucket, tmp_path: Path) -> None:
    old = make_svs(1000, 800, levels=2, tile=256, seed=1)
    new = make_svs(1300, 800, levels=2, tile=256, seed=2)
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="case.svs", Body=old.data)
    config = Config(s3_bucket=s3_bucket.name, s3_endpoint=s3_bucket.endpoint,
                    revalidate_s=3600, cache_blocks=1,  # nothing held: reads reach storage
                    tile_cache_dir=str(tmp_path / "tiles"))
    client = create_app(config).test_client()
    assert client.get("/tiles/case.svs/0/0/0.jpg").status_code == 200
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="case.svs", Body=new.data)
    response = client.get("/tiles/case.svs/0/4/0.jpg")  # x=4 exists only in the new slide
    assert response.status_code == 400  # the old structure answers out of bounds: no read
    response = client.get("/tiles/case.svs/0/3/0.jpg")
    assert response.status_code == 200, response.get_json()
    assert Image.open(io.BytesIO(response.data)).size == (256, 256)  # new: 1300 - 768 > 256
    assert client.get("/tiles/case.svs/0/4/0.jpg").status_code == 200  # reopened
    assert client.get("/slides/case.svs").get_json()["width"] == 1300
