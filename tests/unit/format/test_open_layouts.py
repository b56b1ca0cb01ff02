"""Opening a pyramid in few serial round trips and few bytes whatever the IFD layout (issue 5):
Aperio (IFD 0 at the head, the others at the end), libvips (each level's IFD after its tiles),
and IFD-before-data ("scattered", as tifffile writes). Round trips are counted as the longest
chain of storage reads each asked for with the bytes of the previous one (by cause, not by a
clock: ``tests.fixtures.round_trips``), so a loaded machine counts what an idle one does."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bench.tiffwrite import LONG, SHORT, Page, write_tiff
from tests.fixtures.fakes import CountingReader
from tests.fixtures.round_trips import CausalReader, causal_block_store
from wsi_streamer.format import spans
from wsi_streamer.format.tiff.driver import parse_structure
from wsi_streamer.io.block_cache import BlockCache

TILE = 256
LEVELS = 6  # 8192 px down to 256 px: 1024, 256, 64, 16, 4, 1 tiles


def _pages() -> list[Page]:
    rng = random.Random(5)
    pages = []
    for level in range(LEVELS):
        side = 8192 >> level
        tiles = [rng.randbytes(rng.randrange(1500, 2500)) for _ in range((side // TILE) ** 2)]
        tags = {254: (LONG, [0 if level == 0 else 1]), 256: (LONG, [side]),
                257: (LONG, [side]), 258: (SHORT, [8, 8, 8]), 259: (SHORT, [7]),
                262: (SHORT, [6]), 277: (SHORT, [3]), 284: (SHORT, [1]),
                322: (SHORT, [TILE]), 323: (SHORT, [TILE])}
        pages.append(Page(tags, [len(t) for t in tiles], tiles))  # type: ignore[arg-type]
    return pages


LAYOUTS = {
    "aperio": [("ifd", 0), ("data", 0)] + [("data", i) for i in range(1, LEVELS)]
    + [("ifd", i) for i in range(1, LEVELS)],
    "libvips": [(k, i) for i in range(LEVELS) for k in ("data", "ifd")],
    "ifd-before-data": [(k, i) for i in range(LEVELS) for k in ("ifd", "data")],
}


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = {}
    for name, order in LAYOUTS.items():
        path = Path(tmp_path_factory.mktemp("layouts")) / f"{name}.tif"
        write_tiff(str(path), _pages(), order)
        out[name] = path.read_bytes()
    return out


@pytest.mark.parametrize(("layout", "budget"), [("aperio", 1), ("libvips", 3)])
def test_open_round_trips(slides: dict[str, bytes], layout: str, budget: int,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    # First reads shrunk (the file is ~3 MB) so that four of the six IFDs of the libvips
    # layout lie outside them, as in a 60000x40000 slide with the real 256 KiB + 1 MiB.
    monkeypatch.setattr(spans, "OPEN_HEAD", 16 * 1024)
    monkeypatch.setattr(spans, "OPEN_TAIL", 8 * 1024 if layout == "libvips" else 64 * 1024)
    data = slides[layout]
    reader = CausalReader(data)
    with causal_block_store():
        structure = parse_structure(BlockCache(reader))
    assert [lv.width for lv in structure.levels] == [8192 >> i for i in range(LEVELS)]
    assert reader.round_trips() <= budget, reader.calls
    assert sum(n for _, n in reader.calls) < 16 * 1024 + 64 * 1024 + 200 * 1024, reader.calls


def test_libvips_layout_without_guessing_takes_a_round_trip_per_ifd(
        slides: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: with speculation off the same open is 5 serial round trips."""
    from wsi_streamer.format.tiff import chain
    monkeypatch.setattr(spans, "OPEN_HEAD", 16 * 1024)
    monkeypatch.setattr(spans, "OPEN_TAIL", 8 * 1024)
    monkeypatch.setattr(chain, "GUESS_BUDGET", 0)
    reader = CausalReader(slides["libvips"])
    with causal_block_store():
        parse_structure(BlockCache(reader))
    assert reader.round_trips() >= 5, reader.depths


def test_ifd_before_data_layout_opens_correctly(slides: dict[str, bytes],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """No guess helps here (each IFD is found only through its predecessor); what matters is
    that wrong guesses cost bounded bytes and change nothing."""
    monkeypatch.setattr(spans, "OPEN_HEAD", 16 * 1024)
    monkeypatch.setattr(spans, "OPEN_TAIL", 8 * 1024)
    reader = CountingReader(slides["ifd-before-data"], delay=0.0)
    structure = parse_structure(BlockCache(reader))
    assert len(structure.levels) == LEVELS
    assert sum(n for _, n in reader.calls) < 16 * 1024 + 8 * 1024 + 600 * 1024


def test_sniffing_hostile_bytes_stays_cheap(slides: dict[str, bytes],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A tail packed with ImageWidth-like entries (40,000 valid-looking directories) costs
    bounded work: candidate directories parsed within ``MAX_SNIFF_CANDIDATES`` (each pattern
    tried at up to 8 entry positions), and no extra reads beyond the guess budget."""
    import struct

    from wsi_streamer import limits
    from wsi_streamer.format.tiff import chain

    candidates = []
    parse_candidate = chain.ChainWalker._parse_candidate

    def counting(self: chain.ChainWalker, *args: object) -> object:
        candidates.append(1)
        return parse_candidate(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(chain.ChainWalker, "_parse_candidate", counting)
    fake_ifd = struct.pack("<H", 2) + struct.pack("<HHII", 256, 4, 1, 64) + struct.pack(
        "<HHII", 324, 4, 1, 9) + struct.pack("<I", 0)
    data = slides["libvips"] + fake_ifd * 40_000  # ~1.2 MB of plausible directories
    reader = CountingReader(data)
    structure = parse_structure(BlockCache(reader))
    assert len(structure.levels) == LEVELS
    assert 0 < len(candidates) <= 8 * limits.MAX_SNIFF_CANDIDATES, len(candidates)
    assert sum(n for _, n in reader.calls) < 256 * 1024 + 1024 * 1024 + 600 * 1024
