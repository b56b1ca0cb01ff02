"""Request deadlines and gone clients under real gunicorn (issue 26, item 1): a slide whose
renders are slow but legal (16,384 JPEG 2000 tiles of 16 px, each a decode of noise: several
CPU seconds for one thumbnail) served with low budgets. Checked by counted work (the tiles a
request decoded, which the 503's log line and the client-gone line name) and statuses; times
appear only as hang guards."""

from __future__ import annotations

import io
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import requests
import tifffile

from tests.fixtures.slides import _level_description
from tests.servers import Server, gunicorn

TILE = 16


def slow_slide(side: int, tile: int = TILE) -> bytes:
    """An SVS of one ``side`` px level in ``tile`` px JPEG 2000 tiles of noise (one codestream
    repeated: writing is instant, every decode is full work)."""
    noise = np.random.default_rng(0).integers(0, 255, (tile, tile, 3), dtype=np.uint8)
    stream = bytes(imagecodecs.jpeg2k_encode(noise, level=40, codecformat="J2K", mct=False))
    base = np.zeros((side, side, 3), np.uint8)
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tif:
        tif.write(iter([stream] * ((side // tile) ** 2)), shape=base.shape, dtype=np.uint8,
                  tile=(tile, tile), compression=33005, photometric="rgb", metadata=None,
                  description=_level_description(base, base, tile, "jp2k-rgb", 40),
                  software=False)
    return buf.getvalue()


SMALL_TILES = (2048 // TILE) ** 2  # slow.svs: no overview (2048 px), thumbnails read level 0
BIG_TILES = (4096 // 32) ** 2  # big.svs: 4096 px in 32 px tiles, its overview reads them all


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("slow-slides")
    (folder / "slow.svs").write_bytes(slow_slide(2048))
    (folder / "big.svs").write_bytes(slow_slide(4096, 32))
    return folder


@pytest.fixture
def server(slides: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    deadline = getattr(request, "param", "30")
    env = {"WSI_SLIDES_DIR": str(slides), "WSI_TILE_CACHE_DIR": str(tmp_path / "tiles"),
           "WSI_REQUEST_DEADLINE": deadline, "WSI_OVERVIEW_DEADLINE": deadline,
           "WSI_LOG_LEVEL": "info"}
    with gunicorn(env, tmp_path / "gunicorn.log", workers=1, threads=4) as running:
        yield running


def wait_for_access(server: Server, path: str, guard: float = 120.0) -> str:
    """The access line of ``path`` (a hang guard, not a time bound)."""
    give_up = time.monotonic() + guard
    while not (lines := server.access_lines(path)):
        assert time.monotonic() < give_up, server.log()[-3000:]
        time.sleep(0.05)
    return lines[-1]


def tiles_named(server: Server, pattern: str) -> int:
    """The tile count in the log line matching ``pattern`` (``budget.Meter.progress``)."""
    lines = [ln for ln in server.log().splitlines() if re.search(pattern, ln)]
    assert len(lines) == 1, server.log()[-3000:]
    found = re.search(r"\((\d+) tiles, [\d.]+ MB decoded\)", lines[0])
    assert found is not None, lines[0]
    return int(found.group(1))


@pytest.mark.parametrize("server", ["0.3"], indirect=True)
def test_a_render_past_its_deadline_stops_with_503(server: Server) -> None:
    path = "/slides/slow.svs/thumbnail"
    response = requests.get(f"{server.url}{path}?max_size=2048", timeout=120)
    assert response.status_code == 503, response.text[:300]
    assert response.json()["error"] == "deadline_exceeded"
    assert response.headers["Retry-After"] == "5"
    assert " 503 " in wait_for_access(server, path)
    decoded = tiles_named(server, "WARNING .*slow.svs/thumbnail: this request .*exceeded")
    assert decoded < SMALL_TILES // 2  # stopped early: most tiles never decoded
    assert "Traceback" not in server.log()

    # An overview build has its own budget (WSI_OVERVIEW_DEADLINE, here 0.3 s too).
    path = "/slides/big.svs/thumbnail"
    response = requests.get(f"{server.url}{path}?max_size=512", timeout=120)
    assert response.status_code == 503 and response.json()["error"] == "deadline_exceeded"
    assert "the overview of" in response.json()["message"]
    assert tiles_named(server, "WARNING .*big.svs/thumbnail: the overview") < BIG_TILES // 2
    assert requests.get(f"{server.url}/health", timeout=30).status_code == 200


def test_a_render_for_a_gone_client_is_abandoned(server: Server) -> None:
    path = "/slides/slow.svs/thumbnail"
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(f"GET {path}?max_size=2048 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.5)  # the render has started (or is about to: either way it must stop)
    line = wait_for_access(server, path)
    assert " 499 " in line, line  # the client went away: logged, nothing sent, no trace
    decoded = tiles_named(server, r"INFO .*slow.svs/thumbnail: .*client went away")
    assert decoded < SMALL_TILES // 2
    assert "Traceback" not in server.log()
    # The worker is free again: the next request is served (a native tile, cold).
    response = requests.get(f"{server.url}/tiles/slow.svs/0/3/3.jpg", timeout=60)
    assert response.status_code == 200
