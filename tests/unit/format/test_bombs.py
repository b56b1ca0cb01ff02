"""Decode-cost bombs refused before decoding (issue 26, items 1 and 2): JPEG streams with too
many scans, JPEG 2000 codestreams whose headers ask for too much memory; real tiles pass.
Work is counted (scans, decoder calls, peak RSS of a subprocess), never timed."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import openjpeg
import pytest
from PIL import Image

from tests.fixtures.bombs import j2k_bomb, scan_bomb_jpeg
from tests.fixtures.images import abbreviated_jpeg_tiles, jp2k_tiles, tissue
from wsi_streamer import limits
from wsi_streamer.errors import LimitExceeded, UnsupportedFormat
from wsi_streamer.format import jp2k, jpeg, jpeg_scans
from wsi_streamer.format.j2k_header import read_header
from wsi_streamer.format.jpeg import complete_stream, decode_jpeg
from wsi_streamer.format.jpeg_scans import check_scans

ROOT = Path(__file__).resolve().parents[3]


def reference_scans(stream: bytes) -> tuple[int, int]:
    """(scans, sum of components over the scans) by a plain byte-by-byte walk."""
    pos, scans, comps = 2, 0, 0
    while pos < len(stream) - 1:
        if stream[pos] != 0xFF or stream[pos + 1] in (0x00, 0xFF, *range(0xD0, 0xD8)):
            pos += 1
            continue
        marker = stream[pos + 1]
        if marker == 0xD9:
            break
        length = int.from_bytes(stream[pos + 2 : pos + 4], "big")
        if marker == 0xDA:
            scans, comps = scans + 1, comps + stream[pos + 4]
        pos += 2 + length
    return scans, comps


def pillow(pixels: np.ndarray, **options: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", **options)
    return buf.getvalue()


@pytest.mark.parametrize("extra", [0, 1, 7, 50])
def test_scans_are_counted_exactly(extra: int) -> None:
    stream = scan_bomb_jpeg(extra, 64)
    scans, work = check_scans(stream)
    ref_scans, ref_comps = reference_scans(stream)
    assert scans == ref_scans and scans == reference_scans(scan_bomb_jpeg(0, 64))[0] + extra
    assert work == ref_comps * 64 * 64  # 4:4:4: every component covers every pixel


def test_restart_markers_stuffing_and_subsampling() -> None:
    """RSTn inside the entropy data and 0xFF00 stuffing are skipped; chroma of a 4:2:0 stream
    covers a quarter of the pixels."""
    pixels = tissue(96, 128, 3)
    stream = pillow(pixels, quality=95, progressive=True, subsampling=2,
                    restart_marker_blocks=1)
    assert b"\xff\xd0" in stream and b"\xff\x00" in stream
    scans, work = check_scans(stream)
    assert scans == reference_scans(stream)[0]
    baseline = pillow(pixels, quality=90, subsampling=2)
    assert check_scans(baseline) == (1, 96 * 128 + 2 * 48 * 64)


def test_real_tiles_pass(shared_slides: Path) -> None:
    """Aperio (abbreviated RGB), libvips-like (YCbCr 4:2:0 with tables), Pillow progressive,
    and the tiles of CMU-1-Small-Region.svs when it is present."""
    tiles = [tissue(256, 256, s) for s in range(3)]
    tables, aperio = abbreviated_jpeg_tiles(tiles, 80, rgb=True)
    vtables, vips = abbreviated_jpeg_tiles(tiles, 80, rgb=False)
    streams = [complete_stream(t, tables, True) for t in aperio]
    streams += [complete_stream(t, vtables, False) for t in vips]
    streams += [pillow(t, progressive=True, optimize=True) for t in tiles]
    cmu = shared_slides / "CMU-1-Small-Region.svs"
    if cmu.is_file():
        from wsi_streamer.format.tiff.driver import DRIVER, parse_structure
        from wsi_streamer.io.local import LocalReader

        reader = LocalReader(str(cmu), "cmu")
        slide = DRIVER.open(reader, parse_structure(reader))
        raw = [slide.read_raw_tile(0, x, 0) for x in range(4)]
        streams += [complete_stream(r, slide.level_tables()[0][2], True) for r in raw]
    for stream in streams:
        scans, _ = check_scans(stream)
        assert 1 <= scans <= 20


def test_scan_bomb_is_refused_before_the_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[object] = []
    real_open = Image.open
    monkeypatch.setattr(jpeg.Image, "open", lambda *a, **k: opened.append(a) or real_open(
        *a, **k))
    bomb = scan_bomb_jpeg(5000)
    with pytest.raises(LimitExceeded) as caught:
        decode_jpeg(bomb, (256, 256))
    assert caught.value.limit == "MAX_JPEG_SCANS" and "64" in str(caught.value)
    assert "MAX_JPEG_SCANS" in str(caught.value) and opened == []
    good = scan_bomb_jpeg(limits.MAX_JPEG_SCANS - reference_scans(scan_bomb_jpeg(0))[0])
    assert decode_jpeg(good, (256, 256)).size == (256, 256) and len(opened) == 1


def test_scan_pixels_bound_large_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = scan_bomb_jpeg(0, 64)
    _, work = check_scans(stream)
    monkeypatch.setattr(jpeg_scans, "MAX_JPEG_SCAN_PIXELS", work - 1)
    with pytest.raises(LimitExceeded, match="MAX_JPEG_SCAN_PIXELS"):
        check_scans(stream)


def test_segment_floods_are_bounded() -> None:
    """Thousands of COM segments (or fill bytes) cost a bounded walk, not one step each."""
    stream = scan_bomb_jpeg(0, 64)
    flood = stream[:2] + b"\xff\xfe\x00\x02" * 5000 + stream[2:]
    with pytest.raises(LimitExceeded, match="MAX_JPEG_SEGMENTS"):
        complete_stream(flood, None, True)
    with pytest.raises(LimitExceeded, match="MAX_JPEG_SEGMENTS"):
        check_scans(flood)
    filled = stream[:2] + b"\xff" * 100_000 + stream[2:]
    assert jpeg.header_segments(filled)[-1][0] == 0xDA  # one step for the whole run


# --- JPEG 2000 ------------------------------------------------------------------------------


def test_j2k_header_agrees_with_openjpeg() -> None:
    tile = tissue(240, 240, 4)
    streams = jp2k_tiles([tile], ycbcr=True) + [
        bytes(imagecodecs.jpeg2k_encode(tile, level=40, codecformat="JP2")),
        bytes(imagecodecs.jpeg2k_encode(tile[..., 0], level=40, codecformat="J2K")),
        j2k_bomb(8192), j2k_bomb(512, tile=64), j2k_bomb(512, 4, block=4)]
    for data in streams:
        header, params = read_header(data), openjpeg.get_parameters(data)
        assert (header.width, header.height) == (params["columns"], params["rows"])
        assert len(header.sizes) == params["samples_per_pixel"]
        assert header.precision == params["precision"]
    assert read_header(j2k_bomb(512, tile=64)).tiles == 64
    assert read_header(j2k_bomb(512, block=4)).block_area == 16


@pytest.mark.parametrize(("data", "size", "limit"), [
    (j2k_bomb(8192), 8192, "MAX_JP2K_DECODE_BYTES"),
    (j2k_bomb(2048, tile=16), 2048, "MAX_JP2K_DECODE_BYTES"),  # 16,384 tile structures
    (j2k_bomb(2048, block=4), 2048, "MAX_JP2K_DECODE_BYTES"),  # 786,432 code-blocks
    (j2k_bomb(64, 5), 64, "MAX_JP2K_COMPONENTS"),
], ids=["8192px", "16384-tiles", "4px-code-blocks", "5-components"])
def test_j2k_bombs_are_refused_before_openjpeg(monkeypatch: pytest.MonkeyPatch, data: bytes,
                                               size: int, limit: str) -> None:
    calls: list[int] = []
    monkeypatch.setattr(jp2k.openjpeg, "decode", lambda d: calls.append(len(d)))
    with pytest.raises(LimitExceeded) as caught:
        jp2k.decode_jp2k(data, (size, size), ycbcr=False)
    assert caught.value.limit == limit and limit in str(caught.value) and calls == []


def test_j2k_precision_and_declared_size() -> None:
    deep = bytearray(j2k_bomb(64))
    deep[42] = 0x1F  # component 0: 32-bit samples
    with pytest.raises(LimitExceeded, match="MAX_JP2K_PRECISION"):
        jp2k.decode_jp2k(bytes(deep), (64, 64), ycbcr=False)
    with pytest.raises(UnsupportedFormat, match="larger than the TIFF tile"):
        jp2k.decode_jp2k(j2k_bomb(512), (256, 256), ycbcr=False)
    wide = bytearray(j2k_bomb(64))
    wide[8:12] = struct.pack(">I", 300)  # Xsiz beyond the tile
    with pytest.raises(UnsupportedFormat):
        jp2k.decode_jp2k(bytes(wide), (256, 256), ycbcr=False)


def test_real_j2k_tiles_decode() -> None:
    tiles = [tissue(240, 240, 1), np.tile(tissue(256, 256, 2), (4, 4, 1))]
    for tile in tiles:
        for ycbcr in (True, False):
            (data,) = jp2k_tiles([tile], ycbcr=ycbcr)
            size = tile.shape[1], tile.shape[0]
            assert jp2k.decode_jp2k(data, size, ycbcr).size == size


def test_j2k_bomb_peak_memory_stays_small(tmp_path: Path) -> None:
    """Peak RSS of a fresh process asked to decode a 90-byte codestream declaring 8192x8192
    (openjpeg: 980 MiB before the bound)."""
    bomb = tmp_path / "bomb.j2k"
    bomb.write_bytes(j2k_bomb(8192))
    script = textwrap.dedent(f"""
        import resource
        from wsi_streamer.errors import LimitExceeded
        from wsi_streamer.format.jp2k import decode_jp2k
        data = open({str(bomb)!r}, "rb").read()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            decode_jp2k(data, (8192, 8192), ycbcr=True)
            outcome = "decoded"
        except LimitExceeded as exc:
            outcome = exc.limit
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(outcome, grown // 1024)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, check=True)
    outcome, grown_mib = done.stdout.split()
    assert outcome == "MAX_JP2K_DECODE_BYTES" and int(grown_mib) < 300, done.stdout


def test_concurrent_j2k_decodes_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Six threads decoding at once: at most ``JP2K_DECODES`` are inside openjpeg."""
    data = j2k_bomb(64)
    real = openjpeg.decode
    lock, inside, peak, release = threading.Lock(), [0], [0], threading.Event()

    def decode(d: bytes) -> Any:
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        release.wait(10)
        with lock:
            inside[0] -= 1
        return real(d)

    monkeypatch.setattr(jp2k.openjpeg, "decode", decode)
    threads = [threading.Thread(target=jp2k.decode_jp2k, args=(data, (64, 64), False))
               for _ in range(6)]
    for thread in threads:
        thread.start()
    for _ in range(200):
        with lock:
            if inside[0] >= limits.JP2K_DECODES:
                break
        threading.Event().wait(0.02)
    threading.Event().wait(0.3)  # give the others every chance to enter
    release.set()
    for thread in threads:
        thread.join(10)
    assert peak[0] == limits.JP2K_DECODES
