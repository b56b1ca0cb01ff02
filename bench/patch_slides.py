"""Slides for the patch benchmark: several large 40x-like Aperio slides with tissue islands.

Built with ``bench.make_slides`` and ``bench.tiffwrite`` from real tissue (CMU-1-Small-Region):
each slide gets its own pool of tissue tiles (random crops, flips, rotations, colour jitter) and
its own island layout (a few irregular tissue islands on glass background, 15-40% of the area),
so Otsu finds them and a random sampler must reject background. Aperio layout as in
``make_slides.write_aperio`` (IFD 0 after the header, RGB-coded abbreviated JPEG tiles with
JPEGTables), but ``MPP = 0.25`` / ``AppMag = 40`` and levels at downsample 1, 4, 16, 32, so that
``target_mpp=0.5`` means level 0 read at twice the size and resampled.

Cached in ``bench/out/patch-slides-<W>x<H>-n<N>/`` (``slide-00.svs`` ...). Run:
``python -m bench.patch_slides [--quick] [--force]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from . import make_slides as ms
from .tiffwrite import write_tiff

VERSION = 1
DOWNSAMPLES = (1, 4, 16, 32)
MPP = 0.25


@dataclass(frozen=True)
class SlideSet:
    count: int
    width: int
    height: int
    pool: int
    seed: int = 101

    @property
    def name(self) -> str:
        return f"{self.width}x{self.height}-n{self.count}"


FULL = SlideSet(12, 40000, 30000, 320)
MEDIUM = SlideSet(8, 16000, 12000, 160)  # a few minutes per row on a loaded 2-core host
QUICK = SlideSet(3, 6144, 4096, 48)
SETS = {"full": FULL, "medium": MEDIUM, "quick": QUICK}


def island_grid(spec: ms.Spec, n_tissue: int) -> np.ndarray:
    """Pool index of every level-0 tile: tissue inside a few irregular islands (each a union of
    ellipses with ragged edges), background tiles elsewhere."""
    rng = np.random.default_rng(spec.seed + 1)
    ty, tx = -(-spec.height // ms.TILE), -(-spec.width // ms.TILE)
    yy, xx = np.mgrid[0:ty, 0:tx].astype(np.float64)
    field = np.full((ty, tx), -1.0)
    for _ in range(int(rng.integers(3, 7))):  # islands
        cy, cx = rng.uniform(0.2, 0.8) * ty, rng.uniform(0.15, 0.85) * tx
        for _ in range(int(rng.integers(1, 4))):  # lobes of one island
            oy, ox = cy + rng.normal(0, 0.04) * ty, cx + rng.normal(0, 0.04) * tx
            ry, rx = rng.uniform(0.08, 0.2) * ty, rng.uniform(0.06, 0.15) * tx
            field = np.maximum(field, 1 - ((yy - oy) / ry) ** 2 - ((xx - ox) / rx) ** 2)
    mask = field + rng.normal(0, 0.15, field.shape) > 0
    grid = rng.integers(0, n_tissue, (ty, tx))
    out: np.ndarray = np.where(mask, grid, n_tissue + rng.integers(0, 16, (ty, tx)))
    return out


def write_aperio40(path: str, spec: ms.Spec, pool: np.ndarray, grid: np.ndarray) -> None:
    """An Aperio SVS at 0.25 um/px: levels ``DOWNSAMPLES``, thumbnail, label and macro."""
    w, h = spec.width, spec.height
    tables, pool_jpeg = ms.encode_level(list(pool), 70, rgb=True)
    head = f"Aperio Image Library v12.0.15 \r\n{w}x{h} [0,0 {w}x{h}] ({ms.TILE}x{ms.TILE})"
    props = (f"|AppMag = 40|StripeWidth = 2040|ScanScope ID = SS1234|Filename = {spec.name}"
             f"|Date = 01/02/24|Time = 10:11:12|MPP = {MPP:.4f}|Left = 25.0|Top = 18.0")
    pages = [ms.tiled_page(w, h, [pool_jpeg[i] for i in grid.ravel()], tables,
                           f"{head} JPEG/RGB Q=70{props}", rgb=True)]
    overview = ms.level_image(pool, grid, 64, -(-w // 64), -(-h // 64))
    thumb = np.asarray(Image.fromarray(overview).resize((1024, 1024 * h // w),
                                                        Image.Resampling.LANCZOS))
    pages.append(ms.strip_page(thumb, f"{head} -> {thumb.shape[1]}x{thumb.shape[0]} - {props}",
                               0, lzw=False))
    for down in DOWNSAMPLES[1:]:
        lw, lh = -(-w // down), -(-h // down)
        img = ms.level_image(pool, grid, down, lw, lh)
        lt, tiles = ms.encode_level(ms.cut_tiles(img), 70, True)
        del img
        pages.append(ms.tiled_page(lw, lh, tiles, lt,
                                   f"{head} -> {lw}x{lh} JPEG/RGB Q=70{props}", rgb=True))
    label = np.full((463, 387, 3), 245, np.uint8)
    label[60:400:12, 40:340] = 20
    pages.append(ms.strip_page(label, "Aperio Image Library v12.0.15\r\nlabel 387x463", 1, True))
    macro = np.asarray(Image.fromarray(overview).resize((1280, 431)))
    pages.append(ms.strip_page(macro, "Aperio Image Library v12.0.15\r\nmacro 1280x431", 9,
                               False))
    order = [("ifd", 0), ("data", 0)] + [("data", i) for i in range(1, len(pages))]
    write_tiff(path, pages, order + [("ifd", i) for i in range(1, len(pages))])


def ensure_slides(quick: bool, force: bool = False, name: str | None = None
                  ) -> dict[str, Any]:
    """Create (or reuse) the slide set (``name`` in ``SETS``, else quick or full); returns
    ``{"dir", "keys", "spec", "bytes"}``."""
    sset = SETS[name] if name else QUICK if quick else FULL
    folder = os.path.join(ms.OUT, f"patch-slides-{sset.name}")
    stamp = os.path.join(folder, "stamp.json")
    want = {"version": VERSION, "make_slides": ms.VERSION, **asdict(sset)}
    keys = [f"slide-{i:02d}.svs" for i in range(sset.count)]
    if not force and os.path.exists(stamp):
        with open(stamp) as f:
            meta = json.load(f)
        if meta.get("spec") == want and all(os.path.exists(os.path.join(folder, k))
                                            for k in keys):
            return {"dir": folder, "keys": keys, "spec": want, "bytes": meta["bytes"]}
    os.makedirs(folder, exist_ok=True)
    t0 = time.perf_counter()
    src = ms.load_source()
    sizes = []
    for i, key in enumerate(keys):
        spec = ms.Spec(sset.width, sset.height, sset.pool, seed=sset.seed + 10 * i)
        pool = ms.make_pool(src, spec)
        write_aperio40(os.path.join(folder, key), spec, pool, island_grid(spec, sset.pool))
        sizes.append(os.path.getsize(os.path.join(folder, key)))
        print(f"  {key}: {sizes[-1] / 1e6:.0f} MB ({time.perf_counter() - t0:.0f} s)", flush=True)
    with open(stamp, "w") as f:
        json.dump({"spec": want, "bytes": sizes,
                   "seconds": round(time.perf_counter() - t0, 1)}, f)
    return {"dir": folder, "keys": keys, "spec": want, "bytes": sizes}


def ensure_dicom(slides: dict[str, Any]) -> list[str] | None:
    """Each slide of the set converted to a DICOM WSI series (``wsidicomizer``: the same JPEG
    tiles, no re-encoding; label, macro and thumbnail too), cached under ``<dir>/dicom/<name>/``;
    returns the series folders relative to the set's folder (S3 keys of the bench server's
    bucket), None when wsidicomizer is not installed."""
    try:
        from wsidicomizer import WsiDicomizer
    except ImportError:
        return None
    names = []
    for key in slides["keys"]:
        name = f"dicom/{key.rsplit('.', 1)[0]}"
        target = os.path.join(slides["dir"], name)
        if not os.path.exists(os.path.join(target, "done")):
            os.makedirs(target, exist_ok=True)
            t0 = time.perf_counter()
            WsiDicomizer.convert(os.path.join(slides["dir"], key), target, workers=1)
            open(os.path.join(target, "done"), "w").close()
            print(f"  {name}: DICOM ({time.perf_counter() - t0:.0f} s)", flush=True)
        names.append(name)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description="generate the patch benchmark slides")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--set", choices=sorted(SETS), help="default full (quick: quick)")
    args = parser.parse_args()
    info = ensure_slides(args.quick, args.force, args.set)
    print(f"{info['dir']}: {len(info['keys'])} slides, {sum(info['bytes']) / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
