"""Generate large, realistic benchmark slides from real tissue, cached in ``bench/out/``.

Tissue comes from ``../shared/slides/CMU-1-Small-Region.svs`` (decoded with OpenSlide): random
crops (tissue-rich and background ones), flipped, rotated and colour-jittered, make a pool of
distinct 256x256 tiles that a blob-shaped tissue mask spreads over the plane. Lower levels are
assembled from downsampled pool tiles, so the pyramid is consistent across levels.

Two files per size:
- ``aperio.svs``: Aperio layout: IFD 0 right after the header with its offset arrays, other
  IFDs near the end; abbreviated RGB-coded JPEG tiles + JPEGTables (Photometric=RGB), levels at
  downsample 1/4/16/64, thumbnail, label (LZW) and macro, Aperio ImageDescription.
- ``libvips.tif``: generic pyramid (halving levels, YCbCr 4:2:0 JPEG), every IFD after its
  level's data, written by ``vips tiffsave --tile --pyramid --strip`` when ``vips`` is on PATH,
  else with the same layout by this module.

Run: ``python -m bench.make_slides [--quick] [--force]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass

import imagecodecs
import numpy as np
from PIL import Image

from .tiffwrite import (
    ASCII,
    LONG,
    RATIONAL,
    SHORT,
    UNDEFINED,
    Page,
    TagValue,
    encode_jpeg,
    split_jpeg,
    write_tiff,
)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")
SOURCE = os.path.join(HERE, "..", "..", "shared", "slides", "CMU-1-Small-Region.svs")
TILE = 256
VERSION = 3


@dataclass(frozen=True)
class Spec:
    width: int
    height: int
    pool: int
    seed: int = 7

    @property
    def name(self) -> str:
        return f"{self.width}x{self.height}"


FULL = Spec(60000, 40000, 480)
QUICK = Spec(8000, 6000, 96)


def load_source() -> np.ndarray:
    import openslide

    slide = openslide.OpenSlide(SOURCE)
    return np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))


def make_pool(src: np.ndarray, spec: Spec) -> np.ndarray:
    """``(pool + 16, 256, 256, 3)``: ``pool`` tissue tiles, then 16 background tiles."""
    rng = np.random.default_rng(spec.seed)
    tissue = src.min(axis=2) < 215
    tiles: list[np.ndarray] = []
    backgrounds: list[np.ndarray] = []
    h, w = tissue.shape
    while len(tiles) < spec.pool or len(backgrounds) < 16:
        y, x = int(rng.integers(0, h - TILE)), int(rng.integers(0, w - TILE))
        frac = tissue[y : y + TILE, x : x + TILE].mean()
        tile = np.rot90(src[y : y + TILE, x : x + TILE], int(rng.integers(0, 4)))
        if rng.random() < 0.5:
            tile = tile[:, ::-1]
        if frac > 0.35 and len(tiles) < spec.pool:
            gain = rng.uniform(0.9, 1.1, 3) * rng.uniform(0.95, 1.05)
            tiles.append(np.clip(tile * gain, 0, 255).astype(np.uint8))
        elif frac < 0.02 and len(backgrounds) < 16:
            backgrounds.append(np.ascontiguousarray(tile))
    return np.stack(tiles + backgrounds)


def tile_grid(spec: Spec, n_tissue: int) -> np.ndarray:
    """Pool index of every level-0 tile: tissue inside random blobs, background elsewhere."""
    rng = np.random.default_rng(spec.seed + 1)
    ty, tx = -(-spec.height // TILE), -(-spec.width // TILE)
    yy, xx = np.mgrid[0:ty, 0:tx].astype(np.float64)
    field = np.zeros((ty, tx))
    for _ in range(7):
        cy, cx = rng.uniform(0.15, 0.85) * ty, rng.uniform(0.1, 0.9) * tx
        ry, rx = rng.uniform(0.12, 0.3) * ty, rng.uniform(0.08, 0.22) * tx
        field = np.maximum(field, 1 - ((yy - cy) / ry) ** 2 - ((xx - cx) / rx) ** 2)
    mask = field + rng.normal(0, 0.08, field.shape) > 0
    grid = rng.integers(0, n_tissue, (ty, tx))
    return np.where(mask, grid, n_tissue + rng.integers(0, 16, (ty, tx)))


def level_image(pool: np.ndarray, grid: np.ndarray, down: int, w: int, h: int) -> np.ndarray:
    """The level at ``down`` (a power of two up to 256): each level-0 tile becomes s x s."""
    s = TILE // down
    small = pool.reshape(len(pool), s, down, s, down, 3).mean(axis=(2, 4)).astype(np.uint8)
    ty, tx = grid.shape
    img = small[grid].transpose(0, 2, 1, 3, 4).reshape(ty * s, tx * s, 3)
    out: np.ndarray = img[:h, :w]
    return out


def cut_tiles(img: np.ndarray) -> list[np.ndarray]:
    h, w = img.shape[:2]
    out = []
    for y in range(0, h, TILE):
        for x in range(0, w, TILE):
            tile = np.full((TILE, TILE, 3), 255, np.uint8)
            part = img[y : y + TILE, x : x + TILE]
            tile[: part.shape[0], : part.shape[1]] = part
            out.append(tile)
    return out


def tiled_page(w: int, h: int, tiles: list[bytes], tables: bytes, desc: str | None,
               rgb: bool, subfile: int = 0) -> Page:
    tags: dict[int, TagValue] = {
            254: (LONG, [subfile]), 256: (LONG, [w]), 257: (LONG, [h]),
            258: (SHORT, [8, 8, 8]), 259: (SHORT, [7]), 262: (SHORT, [2 if rgb else 6]),
            277: (SHORT, [3]), 284: (SHORT, [1]), 322: (SHORT, [TILE]), 323: (SHORT, [TILE]),
            347: (UNDEFINED, tables), 530: (SHORT, [2, 2])}
    if desc is not None:
        tags[270] = (ASCII, desc)
    return Page(tags, [len(t) for t in tiles], tiles)


def strip_page(img: np.ndarray, desc: str, subfile: int, lzw: bool) -> Page:
    h, w = img.shape[:2]
    data = bytes(imagecodecs.lzw_encode(img.tobytes())) if lzw else encode_jpeg(img, 80, rgb=False)
    tags: dict[int, TagValue] = {
            254: (LONG, [subfile]), 256: (LONG, [w]), 257: (LONG, [h]),
            258: (SHORT, [8, 8, 8]), 259: (SHORT, [5 if lzw else 7]),
            262: (SHORT, [2 if lzw else 6]), 270: (ASCII, desc), 277: (SHORT, [3]),
            278: (LONG, [h]), 284: (SHORT, [1])}
    return Page(tags, [len(data)], [data], tiled=False)


def encode_level(tiles: list[np.ndarray], quality: int, rgb: bool) -> tuple[bytes, list[bytes]]:
    tables = b""
    out = []
    for tile in tiles:
        t, body = split_jpeg(encode_jpeg(tile, quality, rgb), aperio=rgb)
        assert not tables or t == tables, "JPEG tables differ between tiles"
        tables = t
        out.append(body)
    return tables, out


def write_aperio(path: str, spec: Spec, pool: np.ndarray, grid: np.ndarray) -> None:
    w, h = spec.width, spec.height
    tables, pool_jpeg = encode_level(list(pool), 70, rgb=True)
    l0 = [pool_jpeg[i] for i in grid.ravel()]
    head = f"Aperio Image Library v12.0.15 \r\n{w}x{h} [0,0 {w}x{h}] ({TILE}x{TILE})"
    props = (f"|AppMag = 20|StripeWidth = 2040|ScanScope ID = SS1234|Filename = bench-{spec.name}"
             f"|Date = 01/02/24|Time = 10:11:12|MPP = 0.4990|Left = 25.0|Top = 18.0")
    pages = [tiled_page(w, h, l0, tables, f"{head} JPEG/RGB Q=70{props}", rgb=True)]
    level3 = level_image(pool, grid, 64, -(-w // 64), -(-h // 64))
    small = Image.fromarray(level3).resize((768, 768 * h // w), Image.Resampling.LANCZOS)
    thumb = np.asarray(small)
    pages.append(strip_page(thumb, f"{head} -> {thumb.shape[1]}x{thumb.shape[0]} - {props}",
                            0, lzw=False))
    for down in (4, 16, 64):
        lw, lh = -(-w // down), -(-h // down)
        lt, tiles = encode_level(cut_tiles(level_image(pool, grid, down, lw, lh)), 70, True)
        pages.append(tiled_page(lw, lh, tiles, lt, f"{head} -> {lw}x{lh} JPEG/RGB Q=70{props}",
                                rgb=True))
    label = np.full((463, 387, 3), 245, np.uint8)
    label[60:400:12, 40:340] = 20  # a barcode-ish pattern
    pages.append(strip_page(label, "Aperio Image Library v12.0.15\r\nlabel 387x463", 1, lzw=True))
    macro = np.asarray(Image.fromarray(level3).resize((1280, 431)))
    pages.append(strip_page(macro, "Aperio Image Library v12.0.15\r\nmacro 1280x431", 9, False))
    order = [("ifd", 0), ("data", 0)] + [("data", i) for i in range(1, len(pages))]
    write_tiff(path, pages, order + [("ifd", i) for i in range(1, len(pages))])


def generic_pages(spec: Spec, pool: np.ndarray, grid: np.ndarray, max_levels: int) -> list[Page]:
    pages: list[Page] = []
    down, w, h = 1, spec.width, spec.height
    while len(pages) < max_levels:
        lw, lh = -(-w // down), -(-h // down)
        tiles = [pool[i] for i in grid.ravel()] if down == 1 else \
            cut_tiles(level_image(pool, grid, down, lw, lh))
        if down == 1:
            tables, uniq = encode_level(list(pool), 75, rgb=False)
            data = [uniq[i] for i in grid.ravel()]
        else:
            tables, data = encode_level(tiles, 75, rgb=False)
        page = tiled_page(lw, lh, data, tables, None, rgb=False, subfile=0 if down == 1 else 1)
        page.tags.update({282: (RATIONAL, [20040, 10]), 283: (RATIONAL, [20040, 10]),
                          296: (SHORT, [3])})  # 0.499 um/px in pixels per centimetre
        pages.append(page)
        if max(lw, lh) <= TILE or down == TILE:
            break
        down *= 2
    return pages


def write_libvips(path: str, spec: Spec, pool: np.ndarray, grid: np.ndarray) -> str:
    """Returns which writer made the file."""
    vips = shutil.which("vips")
    if vips is None:
        pages = generic_pages(spec, pool, grid, 12)
        write_tiff(path, pages, [(k, i) for i in range(len(pages)) for k in ("data", "ifd")])
        return "bench.make_slides (libvips layout)"
    with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as tmp:
        base = os.path.join(tmp, "level0.tif")
        page = generic_pages(spec, pool, grid, 1)
        write_tiff(base, page, [("ifd", 0), ("data", 0)])
        subprocess.run([vips, "tiffsave", base, path, "--tile", "--pyramid", "--compression",
                        "jpeg", "--Q", "75", "--tile-width", str(TILE), "--tile-height",
                        str(TILE), "--strip"], check=True)
    return "vips " + subprocess.run([vips, "--version"], capture_output=True,
                                    text=True).stdout.strip()


def ensure_slides(quick: bool, force: bool = False) -> dict[str, str]:
    """Create (or reuse) the slides; returns ``{"dir": folder, "aperio": key, ...}``."""
    spec = QUICK if quick else FULL
    folder = os.path.join(OUT, f"slides-{spec.name}")
    stamp = os.path.join(folder, "stamp.json")
    want = {"version": VERSION, **asdict(spec)}
    if not force and os.path.exists(stamp):
        with open(stamp) as f:
            meta = json.load(f)
        if meta.get("spec") == want:
            return {"dir": folder, "aperio": "aperio.svs", "libvips": "libvips.tif"}
    os.makedirs(folder, exist_ok=True)
    t0 = time.perf_counter()
    pool = make_pool(load_source(), spec)
    grid = tile_grid(spec, spec.pool)
    write_aperio(os.path.join(folder, "aperio.svs"), spec, pool, grid)
    t1 = time.perf_counter()
    writer = write_libvips(os.path.join(folder, "libvips.tif"), spec, pool, grid)
    t2 = time.perf_counter()
    meta = {"spec": want, "libvips_writer": writer, "seconds": [round(t1 - t0, 1),
                                                                  round(t2 - t1, 1)]}
    with open(stamp, "w") as f:
        json.dump(meta, f)
    print(f"slides {spec.name}: aperio {t1 - t0:.1f}s, libvips {t2 - t1:.1f}s ({writer})")
    return {"dir": folder, "aperio": "aperio.svs", "libvips": "libvips.tif"}


def main() -> None:
    parser = argparse.ArgumentParser(description="generate benchmark slides")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    info = ensure_slides(args.quick, args.force)
    for name in ("aperio", "libvips"):
        path = os.path.join(info["dir"], info[name])
        print(f"{path}: {os.path.getsize(path) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
