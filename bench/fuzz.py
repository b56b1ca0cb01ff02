"""Fuzz run: thousands of mutated real and generated slides through the server's own path.

    .venv/bin/python -m bench.fuzz                   # 5000 cases (the reliability figures)
    .venv/bin/python -m bench.fuzz --cases 500       # a shorter look

Each case is a slide (generated SVS, generic, BigTIFF, big-endian, JPEG 2000, the demo slide,
scan-bomb and JPEG 2000 bomb slides, and the small real slides of ../shared/slides when
present) mutated by a seeded mix of byte and word overwrites where the structure lives (the
first 64 KiB, every IFD and its entries), IFD entry edits (type, count, value), spliced chunks
and truncations. It is opened by the tile service of a worker process (registry, block store,
host cache, overview, limits) and asked for what a viewer asks: metadata, the DZI descriptor, a
thumbnail, the associated images, the corner tiles of the first and last level and the lowest
Deep Zoom levels.

Only the API's errors (``WsiError``) may come out. A case is a crash when anything else is
raised or the worker dies, a hang when it runs past ``--case-timeout`` (SIGALRM inside the
worker, then the worker is replaced), and an unbounded allocation when it hits the worker's
address-space limit (``--memory-mb``, RLIMIT_AS). Exit status 1 when any case is one of those.
The table counts cases by base slide and outcome."""

from __future__ import annotations

import argparse
import os
import random
import resource
import signal
import struct
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from wsi_streamer.progress import Progress

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "slides"
SHARED_NAMES = ("CMU-1-Small-Region.svs", "openslide-small.svs", "openslide-boxes-deflate.tiff",
                "ome-4D-series-bigendian-stripped.ome.tiff", "hamamatsu-test3-DAPI.ndpi")
WORDS = [0, 1, 2, 7, 8, 15, 16, 17, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x10000,
         0x7FFFFFFF, 0xFFFFFFFF, 2**63 - 1, 2**64 - 1]


def bases() -> dict[str, bytes]:
    from tests.fixtures.slides import make_generic, make_svs
    from wsi_streamer.format.demo import demo_slide_bytes

    found = {
        "gen.svs": make_svs(520, 390, levels=3, tile=128).data,
        "gen-single-level.svs": make_svs(2100, 1600, levels=1, tile=256,
                                         associated=False).data,
        "gen-big-endian.tif": make_generic(300, 200, levels=2, tile=64, byteorder=">").data,
        "gen-bigtiff.tif": make_generic(300, 200, levels=2, tile=64, bigtiff=True).data,
        "gen-jp2k.svs": make_svs(260, 200, levels=2, tile=128, codec="jp2k-ycbcr",
                                 associated=False).data,
        "demo-slide.tif": demo_slide_bytes(2304, 1792),
        **bombs(),
    }
    for name in SHARED_NAMES:
        if (SHARED / name).is_file():
            found[name] = (SHARED / name).read_bytes()
    return found


def bombs() -> dict[str, bytes]:
    """Hostile slides whose structure is fine and whose tiles are not: progressive-JPEG scan
    bombs (20,000 empty scans per tile, about 1 CPU s each to decode unchecked), JPEG 2000
    codestreams of about 90 bytes declaring 8192 px (about 1 GiB to decode unchecked), and
    16,384 tiny J2K tiles per codestream. Every case of them must end within its budget."""
    from tests.fixtures.bombs import write_j2k_bomb_svs, write_scan_bomb_svs

    with tempfile.TemporaryDirectory(prefix="wsi-fuzz-bombs-") as folder:
        paths = [write_scan_bomb_svs(Path(folder), "scan-bomb.svs", extra=20000, width=768,
                                     height=512, macro=True),
                 write_j2k_bomb_svs(Path(folder), "j2k-bomb.svs", side=8192),
                 write_j2k_bomb_svs(Path(folder), "j2k-grid-bomb.svs", side=2048, grid=16)]
        return {path.name: path.read_bytes() for path in paths}


def structure_spots(data: bytes) -> list[tuple[int, int]]:
    """Byte ranges where structure lives: the head and 512 bytes from every IFD; empty
    when the base cannot be walked (mutations then go to the head only)."""
    import io

    import tifffile

    spots = [(0, min(len(data), 65536))]
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            spots += [(p.offset, min(len(data), p.offset + 512)) for p in tif.pages]
    except Exception:  # noqa: BLE001 - an unwalkable base is still a base
        pass
    return spots


def mutate(rng: random.Random, data: bytes, spots: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    order = "<" if data[:2] == b"II" else ">"
    for _ in range(rng.randint(1, 6)):
        start, end = rng.choice(spots)
        pos = rng.randrange(start, max(start + 1, end))
        kind = rng.choice(("byte", "H", "I", "Q", "entry", "random", "splice"))
        if kind == "byte":
            value = bytes([rng.randrange(256)])
        elif kind in ("H", "I", "Q"):
            word = rng.choice(WORDS + [len(data), len(data) - 1, len(data) + 1])
            value = struct.pack(order + kind, word % (1 << (8 * struct.calcsize(kind))))
        elif kind == "entry":  # an IFD entry's type, count or value: 2 bytes past the tag
            field = rng.choice(((2, "H"), (4, "I"), (8, "I")))
            pos += field[0]
            word = rng.choice(WORDS)
            value = struct.pack(order + field[1], word % (1 << (8 * struct.calcsize(field[1]))))
        elif kind == "splice":
            src = rng.randrange(len(data))
            value = data[src : src + rng.randint(1, 256)]
        else:
            value = rng.randbytes(rng.randint(1, 16))
        out[pos : pos + len(value)] = value
    if rng.random() < 0.1:
        del out[rng.randrange(len(out) + 1):]
    return bytes(out)


# --- the worker side ---------------------------------------------------------------------

_SERVICE: Any = None
_STORAGE: Any = None


class _Hang(BaseException):
    """Raised by SIGALRM inside a case (a BaseException, so no ``except Exception`` eats it)."""


def _init_worker(memory_mb: int) -> None:
    global _SERVICE, _STORAGE
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from wsi_streamer.io.block_cache import BlockStore
    from wsi_streamer.slide.registry import SlideRegistry
    from wsi_streamer.tile.cache import TileCache
    from wsi_streamer.tile.service import TileService

    _STORAGE = _MemoryStorage()
    # ``metadata`` reads the one setting it needs from the app's services: a bare app stands in.
    from types import SimpleNamespace

    from flask import Flask

    app = Flask("wsi-fuzz")
    app.extensions["wsi_streamer"] = SimpleNamespace(
        config=SimpleNamespace(associated_images=True))
    app.app_context().push()
    cache = TileCache(tempfile.mkdtemp(prefix="wsi-fuzz-cache-"), 64 * 1024 * 1024)
    registry = SlideRegistry(_STORAGE, BlockStore(max_bytes=64 * 1024 * 1024), max_slides=8)
    _SERVICE = TileService(registry, cache)

    def alarm(signum: int, frame: Any) -> None:
        raise _Hang()

    signal.signal(signal.SIGALRM, alarm)


class _MemoryStorage:
    def __init__(self) -> None:
        from wsi_streamer.io.range_reader import IoStats

        self.stats = IoStats()
        self.slides: dict[str, bytes] = {}

    def open(self, slide_id: str) -> Any:
        from wsi_streamer.errors import SlideNotFound
        from wsi_streamer.io.range_reader import BytesReader

        if slide_id not in self.slides:
            raise SlideNotFound(slide_id)
        return BytesReader(self.slides[slide_id], f"mem://{slide_id}")

    def open_probed(self, slide_id: str, head: int, tail: int) -> Any:
        from wsi_streamer.io.storage import probe_reads

        reader = self.open(slide_id)
        return reader, probe_reads(reader, head, tail)


def _exercise(slide_id: str) -> str:
    """"served" when the mutated slide opened (whatever its requests answered), else
    "refused" (a ``WsiError`` at open)."""
    from wsi_streamer.errors import WsiError
    from wsi_streamer.server.slides import metadata

    service = _SERVICE
    try:
        slide = service.slide(slide_id)
    except WsiError:
        return "refused"
    calls: list[Any] = [
        lambda: metadata(slide_id, slide),
        lambda: service.dzi_descriptor(slide_id),
        lambda: service.thumbnail(slide_id, 256),
    ]
    for name in slide.info.associated:
        calls.append(lambda name=name: service.associated(slide_id, name, "jpg"))
    for level in sorted({0, slide.level_count - 1}):
        info = slide.level(level)
        for x, y in sorted({(0, 0), (info.tiles_x - 1, info.tiles_y - 1)}):
            calls.append(lambda level=level, x=x, y=y: service.tile(slide_id, level, x, y))
    dz = service.deep_zoom(slide)
    for dz_level in (0, dz.level_count // 2, dz.level_count - 1):
        calls.append(lambda dz_level=dz_level: service.dzi_tile(slide_id, dz_level, 0, 0))
    for call in calls:
        try:
            call()
        except WsiError:
            pass
    return "served"


def run_case(index: int, data: bytes, timeout: float, inject: str | None = None
             ) -> tuple[int, str, str, int]:
    """(index, outcome, detail, peak RSS KB of this worker so far). ``inject`` makes the
    case misbehave on purpose (``--inject``: the harness's own check)."""
    slide_id = f"case-{index}.svs"
    _STORAGE.slides = {slide_id: data}
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        if inject == "crash":
            os._exit(70)  # the worker dies, as a segfault in a decoder would kill it
        elif inject == "hang":
            time.sleep(timeout * 100)
        elif inject == "memory":
            bytearray(1 << 40)
        outcome, detail = _exercise(slide_id), ""
    except _Hang:
        outcome, detail = "hang", f"over {timeout:g} s"
    except MemoryError:
        outcome, detail = "memory", "hit the address-space limit"
    except Exception as exc:  # noqa: BLE001 - the finding
        outcome = "crash"
        detail = f"{type(exc).__name__}: {exc}"[:200] + " | " + traceback.format_exc(
            limit=-2).strip().splitlines()[-3][:200]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        _STORAGE.slides = {}
        _SERVICE.registry.clear()
    return index, outcome, detail, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# --- the driver ----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--case-timeout", type=float, default=10.0)
    parser.add_argument("--memory-mb", type=int, default=2048)
    parser.add_argument("--inject", default="", metavar="KIND:CASE,...",
                        help="make cases misbehave (crash, hang, memory) to check the harness")
    args = parser.parse_args()
    inject = {int(case): kind for kind, _, case in
              (item.partition(":") for item in args.inject.split(",") if item)}

    sources = bases()
    names = sorted(sources)
    spots = {name: structure_spots(data) for name, data in sources.items()}
    rng = random.Random(args.seed)
    plan = [rng.choice(names) for _ in range(args.cases)]
    case_rng = [random.Random(args.seed * 1_000_003 + i) for i in range(args.cases)]
    print(f"{args.cases} cases over {len(names)} base slides "
          f"({sum(n in SHARED_NAMES for n in names)} real), {args.workers} workers, "
          f"{args.case_timeout:g} s and {args.memory_mb} MB per case", file=sys.stderr)

    tally = _Tally(plan, Progress("fuzz", total=args.cases, unit="case"))
    pending = list(range(args.cases))
    isolating = False  # after a worker died: one case at a time, so the culprit is known
    started = time.monotonic()
    while pending:
        pool = ProcessPoolExecutor(args.workers, initializer=_init_worker,
                                   initargs=(args.memory_mb,), max_tasks_per_child=500)
        futures: dict[Future[Any], int] = {}
        window = 1 if isolating else args.workers * 4
        bound = args.case_timeout * 3
        queue = iter(pending)
        try:
            for index in queue:
                data = mutate(case_rng[index], sources[plan[index]], spots[plan[index]])
                futures[pool.submit(run_case, index, data, args.case_timeout,
                                    inject.get(index))] = index
                tally.drain(futures, window - 1, bound)
            tally.drain(futures, 0, bound)
            pending = []
        except (BrokenProcessPool, TimeoutError) as exc:
            # A worker died, or is stuck past its SIGALRM: rerun what did not finish in a new
            # pool, one case at a time, so the next death names its case exactly.
            unfinished = sorted(futures.values()) + list(queue)
            if isolating:
                culprit = unfinished[0]
                tally.count(culprit, "crash" if isinstance(exc, BrokenProcessPool) else "hang",
                            f"{type(exc).__name__}: {exc or 'the worker died'}")
                unfinished = unfinished[1:]
            isolating = not isolating
            pending = unfinished
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
    outcomes, findings, peak_kb, bar = tally.outcomes, tally.findings, tally.peak_kb, tally.bar
    bar.close()
    elapsed = time.monotonic() - started
    kinds = ("served", "refused", "crash", "hang", "memory")
    print(f"{'base slide':<44}" + "".join(f"{k:>8}" for k in ("cases", *kinds)))
    for name in names:
        row = outcomes[name]
        print(f"{name:<44}{sum(row.values()):>8}" + "".join(f"{row[k]:>8}" for k in kinds))
    total = Counter[str]()
    for row in outcomes.values():
        total.update(row)
    print(f"{'all':<44}{sum(total.values()):>8}" + "".join(f"{total[k]:>8}" for k in kinds))
    print(f"{elapsed:.0f} s, {args.cases / elapsed:.0f} cases/s; peak worker RSS "
          f"{peak_kb / 1024:.0f} MB (limit {args.memory_mb} MB)")
    for finding in findings[:20]:
        print("  " + finding)
    bad = total["crash"] + total["hang"] + total["memory"]
    print("PASS" if not bad else f"FAIL: {bad} cases")
    sys.exit(1 if bad else 0)


class _Tally:
    """Outcomes by base slide, the findings and the peak worker RSS, as cases finish."""

    def __init__(self, plan: list[str], bar: Any) -> None:
        self.plan, self.bar = plan, bar
        self.outcomes: dict[str, Counter[str]] = defaultdict(Counter)
        self.findings: list[str] = []
        self.peak_kb = 0

    def count(self, index: int, outcome: str, detail: str = "") -> None:
        self.outcomes[self.plan[index]][outcome] += 1
        if outcome not in ("served", "refused"):
            self.findings.append(f"case {index} ({self.plan[index]}): {outcome}: {detail}")
        self.bar.update()

    def drain(self, futures: dict[Future[Any], int], keep: int, bound: float) -> None:
        """Collect finished cases until at most ``keep`` are in flight; ``TimeoutError`` when
        none finishes within ``bound`` seconds."""
        while len(futures) > keep:
            done, _ = wait(futures, timeout=bound, return_when=FIRST_COMPLETED)
            if not done:
                raise TimeoutError("no case finished: a worker is stuck")
            for future in done:
                index, outcome, detail, rss = future.result()
                del futures[future]
                self.count(index, outcome, detail)
                self.peak_kb = max(self.peak_kb, int(rss))

if __name__ == "__main__":
    main()
