"""``If-None-Match`` on every image endpoint (RFC 9110 13.1.2): the current ETag, ``*``, a
list holding it, or its weak form gets 304 with the ETag and no body; a list without it gets
the image."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.slides import make_svs
from wsi_streamer.config import Config

IMAGES = ["/tiles/a.svs/0/1/1.jpg", "/slides/a.svs/thumbnail?max_size=100",
          "/slides/a.svs/dzi_files/9/0_0.jpg"]


@pytest.fixture(scope="module")
def app_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The shared ``client`` fixture's app serves one generated slide, written once."""
    root = tmp_path_factory.mktemp("conditional")
    make_svs(600, 400, levels=2, tile=256, associated=False).write(root, "a.svs")
    return Config(slides_dir=str(root), tile_cache_dir=str(root / "tc"))


@pytest.mark.parametrize("url", IMAGES)
@pytest.mark.parametrize("header", [
    "{etag}", "*", '"nope", {etag}', '{etag}, "nope"', '"a","b",{etag}', "W/{etag}",
    ' "nope" ,  W/{etag} '])
def test_matching_if_none_match_is_304(client: Any, url: str, header: str) -> None:
    first = client.get(url)
    assert first.status_code == 200 and first.mimetype == "image/jpeg"
    etag = first.headers["ETag"]
    response = client.get(url, headers={"If-None-Match": header.format(etag=etag)})
    assert response.status_code == 304, header
    assert response.data == b"" and response.headers["ETag"] == etag


@pytest.mark.parametrize("url", IMAGES)
@pytest.mark.parametrize("header", ['"nope"', '"nope", "other"', "W/\"nope\"", ""])
def test_other_if_none_match_gets_the_image(client: Any, url: str, header: str) -> None:
    response = client.get(url, headers={"If-None-Match": header})
    assert response.status_code == 200 and response.data[:2] == b"\xff\xd8", header
