"""Hostile input: slide ids that try to escape the folder, absurd parameters, and TIFFs
packed with ``struct`` to lie about their structure. Every answer is a JSON error (or a valid
image where the request is legitimate) for bounded work, counted rather than timed (storage
requests and bytes, block lookups, renders: ``WORK``), and the app keeps serving a good
slide."""

from __future__ import annotations

import functools
import io
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.fixtures.slides import make_svs
from tests.fixtures.tiffpack import Field, pack_tiff, tiled_fields
from tests.integration.conftest_faults import Gunicorn, assert_json_error
from wsi_streamer.config import Config
from wsi_streamer.server.services import services

GOOD = "good.svs"
GOOD_TILE = f"/tiles/{GOOD}/0/0/0.jpg"
# Most work one request here may cost: every file is under 1 MiB and refused (or served) from
# its first reads; a parse or render loop shows as more lookups, reads or renders.
WORK = {"storage_requests": 4, "storage_bytes": 2 << 20, "block_lookups": 64, "renders": 1}


def jpeg(size: int = 64, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (200, 40, 90)).save(buf, "JPEG", quality=80, **kwargs)
    return buf.getvalue()


def abbreviated(stream: bytes) -> bytes:
    """The stream without its DQT/DHT segments (as TIFF tiles with JPEGTables are)."""
    out, pos = bytearray(stream[:2]), 2
    while stream[pos + 1] != 0xDA:
        end = pos + 2 + int.from_bytes(stream[pos + 2 : pos + 4], "big")
        if stream[pos + 1] not in (0xDB, 0xC4):
            out += stream[pos:end]
        pos = end
    return bytes(out + stream[pos:])


def one_tile(tile_data: bytes, *, width: int = 64, height: int = 64, tile: int = 64,
             offsets: list[int] | None = None, counts: list[int] | None = None,
             tables: bytes | None = None, extra: tuple[Field, ...] = (),
             **pack: Any) -> bytes:
    grid = max(1, -(-width // tile) * -(-height // tile)) if tile else 1
    fields = tiled_fields(width, height, tile, offsets or [8] * grid,
                          counts or [len(tile_data)] * grid, tables=tables, extra=extra)
    return pack_tiff([fields], payload=tile_data, **pack)


def first_ifd(data: bytes) -> int:
    return int(struct.unpack_from("<I", data, 4)[0])


@functools.cache
def tile() -> bytes:
    return jpeg()


@functools.cache
def good() -> bytes:
    return one_tile(tile())


@functools.cache
def svs() -> bytes:
    return make_svs(600, 400, levels=2, tile=256).data


def _jpeg_bomb() -> bytes:
    """The tile's SOF0 claiming 65000x65000 (or the good file if the SOF is elsewhere)."""
    t = tile()
    if t[158:160] != b"\xff\xc0":
        return good()
    return one_tile(t[:163] + struct.pack(">HH", 65000, 65000) + t[167:])


# name -> how to build it: the names parametrize tests at import, the bytes are made on use.
HOSTILE: dict[str, Callable[[], bytes]] = {
    "packed-ok.tif": good,
    "ifd-loop.tif": lambda: one_tile(tile(), next_offsets={0: first_ifd(good())}),
    "ifd-past-end.tif": lambda: one_tile(tile(), first_ifd=2**31),
    "ifd-odd-inside.tif": lambda: one_tile(tile(), first_ifd=3),
    "entries-65535.tif": lambda: one_tile(tile(), entry_counts={0: 65535}),
    "entries-billions.tif": lambda: one_tile(tile(), bigtiff=True, entry_counts={0: 2**40}),
    "count-billions.tif": lambda: pack_tiff([[
        f if f.tag != 324 else Field(324, 4, [8, 8], count=3_000_000_000)
        for f in tiled_fields(64, 64, 64, [8], [len(tile())])]], payload=tile()),
    "offsets-past-end.tif": lambda: one_tile(tile(), offsets=[2**32 - 100]),
    "counts-gigabytes.tif": lambda: one_tile(tile(), counts=[3 * 2**30]),
    "jpeg-truncated.tif": lambda: one_tile(tile()[: len(tile()) // 2]),
    "jpeg-cut-scan.tif": lambda: one_tile(tile()[: len(tile()) - 120]),
    "jpeg-garbage.tif": lambda: one_tile(b"\xff\xd8" + bytes(range(256)) * 4),
    "tables-garbage.tif": lambda: one_tile(
        abbreviated(tile()), tables=b"\xff\xd8\xff\xdb\xff\xff" + b"\x07" * 300),
    "tables-no-soi.tif": lambda: one_tile(abbreviated(tile()), tables=b"garbage" * 40),
    "jpeg-bomb.tif": _jpeg_bomb,
    "dims-2^31.tif": lambda: one_tile(tile(), width=2**31, height=2**31, offsets=[8],
                                      counts=[1]),
    "tile-zero.tif": lambda: one_tile(tile(), tile=0, offsets=[8], counts=[len(tile())]),
    "tiles-16384.tif": lambda: one_tile(jpeg(16), width=2**16, height=2**16, tile=16384),
    "tiles-8192.tif": lambda: one_tile(jpeg(16), width=2**15, height=2**15, tile=8192),
    "not-a-tiff.svs": lambda: b"<html>definitely not a tiff</html>" * 10,
    "empty.tif": lambda: b"",
    "truncated-1k.svs": lambda: svs()[:1024],
    "truncated-half.svs": lambda: svs()[: len(svs()) // 2],
}


@pytest.fixture(scope="module")
def slides_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    make_svs(600, 400, levels=2, tile=256, associated=False).write(root, GOOD)
    for name, build in HOSTILE.items():
        (root / name).write_bytes(build())
    outside = tmp_path_factory.mktemp("outside")
    make_svs(300, 200, levels=1, tile=128, associated=False).write(outside, "secret.svs")
    (root / "escape.svs").symlink_to(outside / "secret.svs")
    (root / "escape-dir").symlink_to(outside, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def app_config(slides_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The shared ``client`` fixture's app serves ``slides_dir``."""
    return Config(slides_dir=str(slides_dir), tile_cache_dir=str(tmp_path_factory.mktemp("tc")))


def counted_get(client: Any, url: str) -> Any:
    """``client.get(url)``, asserting the work it caused stays within ``WORK``."""
    svc = services(client.application)
    storage, store = svc.storage.stats.snapshot(), svc.blocks.stats.snapshot()
    rendered = svc.tiles.stats.rendered
    response = client.get(url)
    storage_after, store_after = svc.storage.stats.snapshot(), svc.blocks.stats.snapshot()
    work = {"storage_requests": storage_after["requests"] - storage["requests"],
            "storage_bytes": storage_after["bytes"] - storage["bytes"],
            "block_lookups": sum(store_after[k] - store[k] for k in ("hits", "misses")),
            "renders": svc.tiles.stats.rendered - rendered}
    assert all(work[k] <= WORK[k] for k in WORK), (url[:200], work)
    return response


def access_work(log: str, path: str) -> dict[str, int]:
    """Storage requests and bytes of the last access line for ``path`` in a gunicorn log."""
    lines = [line for line in log.splitlines()
             if "wsi_streamer.access" in line and f" {path} " in line]
    assert lines, path
    found = dict(re.findall(r"(storage_requests|storage_bytes)=(\d+)", lines[-1]))
    return {k: int(v) for k, v in found.items()}


def expect_error(client: Any, url: str, *statuses: int) -> dict[str, Any]:
    response = counted_get(client, url)
    payload = assert_json_error(response.status_code, response.data)
    assert response.mimetype == "application/json"
    if statuses:
        assert response.status_code in statuses, (url, payload)
    return payload


def good_still_served(client: Any) -> None:
    response = client.get(GOOD_TILE)
    assert response.status_code == 200 and response.data[:2] == b"\xff\xd8"


@pytest.mark.parametrize("slide_id", [
    "../good.svs", "..%2Fgood.svs", "%2e%2e%2fgood.svs", "%252e%252e%252fgood.svs",
    "..%252Fgood.svs", "a%2F..%2F..%2Fgood.svs", "good.svs%00", "good%00.svs",
    "..%5Cgood.svs", "x%5C..%5Cgood.svs", "escape.svs", "escape-dir%2Fsecret.svs",
    "escape-dir/secret.svs", "x" * 5000 + ".svs", "%C0%AE%C0%AE%2Fgood.svs", "%ff%fe.svs",
    ".", "..", "a%2F.%2Fgood.svs",
    "%2Fetc%2Fpasswd",
    "%2F%2Fetc%2Fpasswd",
    "%2F" * 3000,
    "a%2F%2Fgood.svs",
])
def test_slide_ids_cannot_escape(client: Any, slide_id: str) -> None:
    for url in (f"/slides/{slide_id}", f"/tiles/{slide_id}/0/0/0.jpg",
                f"/slides/{slide_id}/dzi", f"/slides/{slide_id}/thumbnail"):
        expect_error(client, url, 400, 404, 414)
    good_still_served(client)


@pytest.mark.parametrize("level, x, y", [
    ("-1", "0", "0"), ("0", "-1", "0"), ("0", "0", "-1"), ("99999999999999999999", "0", "0"),
    ("0", "99999999999999999999", "0"), ("0", "0", "99999999999999999999"), ("1.0", "0", "0"),
    ("0", "0.5", "0"), ("0", "0", "1e3"), ("abc", "0", "0"), ("0", "x", "0"), ("0", "0", "nan"),
    ("0x1", "0", "0"), ("%20", "0", "0"), ("-0", "-0", "99"), ("5", "0", "0"),
])
def test_tile_coordinates(client: Any, level: str, x: str, y: str) -> None:
    payload = expect_error(client, f"/tiles/{GOOD}/{level}/{x}/{y}.jpg", 400)
    assert payload["error"] in ("invalid_level", "tile_out_of_bounds", "invalid_parameter")
    if level != "5":  # DZI level 5 exists (level 0 is 1x1 px)
        expect_error(client, f"/slides/{GOOD}/dzi_files/{level}/{x}_{y}.jpg", 400, 404)


@pytest.mark.parametrize("query", [
    "quality=0", "quality=101", "quality=-5", "quality=abc", "quality=80.5",
    "quality=99999999999999999999", "quality=", "quality=%00",
])
def test_quality(client: Any, query: str) -> None:
    payload = expect_error(client, f"{GOOD_TILE}?{query}", 400)
    assert payload["error"] == "invalid_quality"
    expect_error(client, f"/slides/{GOOD}/thumbnail?{query}", 400)


@pytest.mark.parametrize("max_size, status", [
    ("99999999999999999999", 400), ("abc", 400), ("1.5", 400), ("%00", 400),
    ("999999999", 200), ("-5", 200), ("0", 200),
])
def test_thumbnail_max_size(client: Any, max_size: str, status: int) -> None:
    url = f"/slides/{GOOD}/thumbnail?max_size={max_size}"
    if status != 200:
        expect_error(client, url, status)
        return
    response = counted_get(client, url)
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    assert response.headers["X-Thumbnail-Size-Clamped"] == "true"
    assert max(Image.open(io.BytesIO(response.data)).size) in (64, 600)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_tiff(client: Any, name: str) -> None:
    urls = [f"/slides/{name}", f"/slides/{name}/dzi", f"/tiles/{name}/0/0/0.jpg",
            f"/slides/{name}/thumbnail?max_size=256", f"/slides/{name}/dzi_files/0/0_0.jpg"]
    for url in urls:
        response = counted_get(client, url)
        if response.status_code == 200:
            assert response.mimetype in ("application/json", "application/xml", "image/jpeg")
            if response.mimetype == "image/jpeg":
                Image.open(io.BytesIO(response.data)).load()
        else:
            assert_json_error(response.status_code, response.data)
            assert response.status_code in (400, 404, 415, 500), (url, response.data)
    tile = client.get(urls[2])
    if name in ("packed-ok.tif", "truncated-half.svs", "tiles-8192.tif"):
        assert tile.status_code == 200  # intact structure and tile (0, 0)
    else:
        assert tile.status_code != 200, f"{name}: a hostile tile was served"
    good_still_served(client)


def test_gunicorn_worker_survives(slides_dir: Path, tmp_path: Path) -> None:
    env = {"WSI_SLIDES_DIR": str(slides_dir), "WSI_TILE_CACHE_DIR": str(tmp_path / "tc")}
    with Gunicorn(env, tmp_path / "gunicorn.log") as server:
        pid_before = server.get("/metrics")[2].decode()
        assert 'pid="' in pid_before
        pid = pid_before.split('pid="', 1)[1].split('"', 1)[0]
        for name in sorted(set(HOSTILE) - {"tiles-8192.tif"}):  # that one is merely slow
            for path in (f"/slides/{name}", f"/tiles/{name}/0/0/0.jpg",
                         f"/slides/{name}/thumbnail"):
                status, _, body = server.get(path)  # its timeout bounds a hang
                work = access_work(server.log(), path)
                assert all(work[k] <= WORK[k] for k in work) and len(work) == 2, (path, work)
                if status != 200:
                    assert_json_error(status, body)
        for path in ("/tiles/..%2F..%2Fetc%2Fpasswd/0/0/0.jpg", "/slides/%00",
                     "/tiles/good.svs/99999999999999999999/0/0.jpg", "/slides/" + "a" * 3000):
            status, _, body = server.get(path)
            assert_json_error(status, body)
        assert server.get(GOOD_TILE)[0] == 200
        after = server.get("/metrics")[2].decode()
        assert f'pid="{pid}"' in after, "the worker was replaced"
        assert "WORKER TIMEOUT" not in server.log()
