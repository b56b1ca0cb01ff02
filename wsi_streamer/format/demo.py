"""The synthetic demo slide: H&E-like tissue islands on a white background, painted
procedurally with numpy and Pillow (no external data), deterministic for a given seed.

Colours are mixed in optical density (Beer-Lambert) from a hematoxylin and an eosin stain
vector, so stain-space tools (HED augmentation, HSV filters, Otsu) see plausible values.
Everything is painted at a quarter of the output size and enlarged once: at the demo's
0.25 um/px a nucleus (6-10 um) is still 6-10 painted pixels across."""

from __future__ import annotations

import functools
import io
import math
import struct

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .tiff.writer import _jpeg, level_entries, pyramid, write_ifd, write_pyramid

DEMO_MPP = 0.25  # microns per level-0 pixel (a 40x scan)
DEMO_SIZE = (49152, 36864)  # a whole slide: 12.3 x 9.2 mm at 0.25 um/px
DEMO_SEED = 2024
DEMO_DESCRIPTION = "wsi_streamer demo slide (synthetic H&E-like tissue)"
PAINTED_DOWNSAMPLE = 8  # levels from here down are painted; above, tiles of a bank
BANK_TILES = 24  # distinct tissue tiles the tiled levels repeat

_PAINT_SCALE = 4  # output pixels per painted pixel
# Optical density per unit stain (R, G, B): Ruifrok & Johnston's hematoxylin, and an eosin
# tuned towards the pinker hue of scanned slides (Ruifrok's own is more magenta).
_HEMATOXYLIN = np.array([0.650, 0.704, 0.286], np.float32)
_EOSIN = np.array([0.100, 0.870, 0.480], np.float32)
_BACKGROUND_OD = 0.015  # glass: about (251, 251, 251)


@functools.lru_cache(maxsize=2)
def demo_slide_bytes(width: int = DEMO_SIZE[0], height: int = DEMO_SIZE[1],
                     seed: int = DEMO_SEED) -> bytes:
    """The demo slide as a generic pyramidal TIFF (JPEG tiles of 256, levels halving down
    to 512 px, X/YResolution in pixels per centimetre for ``DEMO_MPP``). Whole-slide
    sized by default: levels of downsample ``PAINTED_DOWNSAMPLE`` and more are painted
    (``demo_image``); the larger ones repeat ``BANK_TILES`` tissue tiles cut from the painted
    level where it is tissue, and one white tile elsewhere, each tile's bytes stored once
    (a few MB, a few seconds). Cached per process. Under 8192 px wide: all painted."""
    if width < 8192:
        return write_pyramid(demo_image(width, height, seed), description=DEMO_DESCRIPTION,
                             mpp=DEMO_MPP)
    d = PAINTED_DOWNSAMPLE
    painted = demo_image(width // d, height // d, seed)
    return _write_whole_slide(painted, (width, height), d, np.random.default_rng(seed))


def _write_whole_slide(painted: Image.Image, size: tuple[int, int], d: int,
                       rng: np.random.Generator, tile: int = 256, quality: int = 85) -> bytes:
    rgb = np.asarray(painted)
    stained = ((rgb.max(-1).astype(np.int16) - rgb.min(-1)) > 20) | (rgb.mean(-1) < 220)
    ph, pw = stained.shape
    blocks = [(x, y) for y in range(0, ph - tile, tile // 2) for x in range(0, pw - tile,
                                                                               tile // 2)
              if stained[y:y + tile, x:x + tile].mean() > 0.97]
    picks = rng.permutation(len(blocks))[:BANK_TILES]
    bank = [_jpeg(painted.crop((x, y, x + tile, y + tile)), quality)
            for x, y in (blocks[int(i)] for i in picks)]
    white = _jpeg(Image.new("RGB", (tile, tile), (251, 251, 251)), quality)
    out = io.BytesIO()
    out.write(b"II" + struct.pack("<HI", 42, 0))
    stored = []
    for data in [white, *bank]:
        stored.append((out.tell(), len(data)))
        out.write(data + b"\0" * (len(data) % 2))
    levels: list[tuple[int, int, list[int], list[int]]] = []
    downsample = 1
    while downsample < d:
        width, height = -(-size[0] // downsample), -(-size[1] // downsample)
        across, down = -(-width // tile), -(-height // tile)
        side = tile * downsample // d  # a tile's side in painted pixels
        grid = stained[: down * side, : across * side]
        grid = np.pad(grid, ((0, down * side - grid.shape[0]), (0, across * side
                                                                 - grid.shape[1])))
        tissue = grid.reshape(down, side, across, side).mean((1, 3)).ravel() > 0.5
        choice = np.where(tissue, 1 + rng.integers(0, len(bank), tissue.size), 0)
        levels.append((width, height, [stored[c][0] for c in choice],
                       [stored[c][1] for c in choice]))
        downsample *= 2
    for level in pyramid(painted):
        across, down = -(-level.width // tile), -(-level.height // tile)
        offsets, counts = [], []
        for ty in range(down):
            for tx in range(across):
                data = _jpeg(level.crop((tx * tile, ty * tile, (tx + 1) * tile,
                                         (ty + 1) * tile)), quality)
                offsets.append(out.tell())
                counts.append(len(data))
                out.write(data + b"\0" * (len(data) % 2))
        levels.append((level.width, level.height, offsets, counts))
    link = 4
    for index, (width, height, offsets, counts) in enumerate(levels):
        entries = level_entries(index, width, height, tile, offsets, counts, mpp=DEMO_MPP,
                                description=DEMO_DESCRIPTION)
        ifd = write_ifd(out, sorted(entries), False)
        here = out.tell()
        out.seek(link)
        out.write(struct.pack("<I", ifd))
        out.seek(here)
        link = ifd + 2 + len(entries) * 12
    return out.getvalue()


def demo_image(width: int = DEMO_SIZE[0], height: int = DEMO_SIZE[1],
               seed: int = DEMO_SEED) -> Image.Image:
    """An RGB image of ``width`` x ``height``: a few irregular tissue islands of different
    sizes (stroma with wavy fibres, cellular regions, nuclei, a few lumina) on white.
    The same arguments always give the same pixels."""
    rng = np.random.default_rng(seed)
    w, h = max(64, width // _PAINT_SCALE), max(64, height // _PAINT_SCALE)
    tissue = _islands(rng, w, h)
    cellular = _smoothstep(0.40, 0.65, _noise(rng, w, h, cells=5, octaves=3))
    hema, eosin, direction = _stroma(rng, w, h, cellular)
    nuclei = _nuclei(rng, w, h, tissue * (0.0012 + 0.0075 * cellular), cellular, direction)
    chromatin = 0.75 + 0.5 * _noise(rng, w, h, cells=w // 3, octaves=1)
    hema = hema + nuclei * chromatin * 1.05
    eosin = eosin * (1.0 - 0.6 * nuclei)
    od = (hema[..., None] * _HEMATOXYLIN + eosin[..., None] * _EOSIN) * tissue[..., None]
    od += _BACKGROUND_OD
    rgb = np.clip(255.0 * np.exp(-od), 0, 255).astype(np.uint8)
    small = Image.fromarray(rgb, "RGB")
    return small.resize((width, height), Image.Resampling.BICUBIC)


def _noise(rng: np.random.Generator, w: int, h: int, cells: int, octaves: int = 4
           ) -> np.ndarray:
    """Fractal value noise in [0, 1] of shape (h, w); ``cells`` grid cells across at the
    coarsest octave, each octave twice as fine and half as strong."""
    total = np.zeros((h, w), np.float32)
    weight = 0.0
    for octave in range(octaves):
        across = max(2, cells * 2**octave)
        down = max(2, round(across * h / w))
        grid = rng.random((down, across), dtype=np.float32)
        layer = Image.fromarray(grid, "F").resize((w, h), Image.Resampling.BICUBIC)
        amplitude = 0.5**octave
        total += amplitude * np.asarray(layer, np.float32)
        weight += amplitude
    total /= weight
    low, high = float(total.min()), float(total.max())
    return (total - low) / max(high - low, 1e-6)


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _islands(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Tissue coverage in [0, 1]: the union of lobed ellipses of decreasing size, their
    outlines warped by noise, with soft one-pixel edges and a few empty lumina inside."""
    lw, lh = max(32, w // 4), max(32, h // 4)  # the shape field is smooth: paint it small
    ys, xs = np.mgrid[0:lh, 0:lw].astype(np.float32)
    field = np.full((lh, lw), -1.0, np.float32)
    side = min(lw, lh)
    placed: list[tuple[float, float, float]] = []
    for radius in (0.25, 0.17, 0.13, 0.09, 0.065, 0.05, 0.04, 0.03):
        r = radius * side * rng.uniform(0.9, 1.1)
        for _ in range(200):  # a spot clear of the islands placed so far
            cx, cy = rng.uniform(r, lw - r), rng.uniform(r, lh - r)
            if all(math.hypot(cx - px, cy - py) > 1.05 * (r + pr) for px, py, pr in placed):
                break
        placed.append((cx, cy, r))
        angle = rng.uniform(0, math.pi)
        aspect = rng.uniform(1.0, 1.7)
        dx, dy = xs - cx, ys - cy
        u = (dx * math.cos(angle) + dy * math.sin(angle)) / (r * aspect**0.5)
        v = (-dx * math.sin(angle) + dy * math.cos(angle)) * aspect**0.5 / r
        theta = np.arctan2(v, u)
        edge = np.ones_like(theta)
        for k in range(2, 6):
            edge += rng.uniform(0.04, 0.22) / k**0.5 * np.cos(k * theta + rng.uniform(0, 6.3))
        field = np.maximum(field, 1.0 - np.hypot(u, v) / edge)
    shape = Image.fromarray(field, "F").resize((w, h), Image.Resampling.BICUBIC)
    warp = _noise(rng, w, h, cells=8, octaves=5) - 0.5
    coverage = np.asarray(shape, np.float32) + 0.45 * warp
    tissue = np.clip(coverage * 60.0, 0.0, 1.0)  # about one painted pixel of soft edge
    lumina = _noise(rng, w, h, cells=12, octaves=3)
    return tissue * (1.0 - np.clip((lumina - 0.82) * 400.0, 0.0, 1.0))


def _stroma(rng: np.random.Generator, w: int, h: int, cellular: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hematoxylin, eosin, fibre angle) of the ground tissue: wavy collagen bundles with
    loose gaps in the stroma, paler, bluer, mottled cytoplasm where it is cellular. The
    angle (radians, image axes) is the local fibre direction, for the stromal nuclei."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    # A strong domain warp bends the parallel fibres into wavy, converging bundles.
    bend = 260.0 * _noise(rng, w, h, cells=5, octaves=2) + 25.0 * _noise(rng, w, h, cells=24,
                                                                           octaves=2)
    phase = (xs * math.cos(angle) + ys * math.sin(angle)) * (2 * math.pi / 6.0) + bend
    breaks = _smoothstep(0.25, 0.75, _noise(rng, w, h, cells=w // 10, octaves=2))
    fibres = (0.5 + 0.5 * np.sin(phase)) ** 2 * (0.45 + 0.55 * breaks)
    gy, gx = np.gradient(phase)
    direction = np.arctan2(gy, gx) + math.pi / 2  # fibres run across the phase gradient
    bundles = _smoothstep(0.30, 0.55, _noise(rng, w, h, cells=14, octaves=3))
    mottle = _noise(rng, w, h, cells=24, octaves=3)
    grain = _noise(rng, w, h, cells=w // 6, octaves=1)
    stroma = 1.0 - cellular
    eosin = (0.22 + 0.10 * mottle + 0.10 * grain + cellular * (0.12 + 0.08 * grain)
             + stroma * (0.08 + bundles * (0.12 + 0.75 * fibres)))
    hema = 0.03 + 0.04 * mottle + cellular * (0.12 + 0.10 * grain)
    return hema.astype(np.float32), eosin.astype(np.float32), direction.astype(np.float32)


def _nuclei(rng: np.random.Generator, w: int, h: int, density: np.ndarray,
            cellular: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Nucleus coverage in [0, 1]: rotated ellipses drawn at ``density`` (expected
    nuclei per painted pixel); round and large in cellular regions, thin and along the
    fibres (``direction``) in stroma."""
    candidates = int(float(density.max()) * w * h) + 1
    px = rng.uniform(0, w, candidates)
    py = rng.uniform(0, h, candidates)
    iy, ix = py.astype(np.int64), px.astype(np.int64)
    keep = rng.random(candidates) * float(density.max()) < density[iy, ix]
    px, py, cell = px[keep], py[keep], cellular[iy[keep], ix[keep]]
    n = len(px)
    major = rng.uniform(3.0, 5.0, n) * (0.8 + 0.3 * cell)
    round_ = rng.random(n) < cell
    minor = major * np.where(round_, rng.uniform(0.7, 1.0, n), rng.uniform(0.3, 0.45, n))
    major = np.where(round_, major, major * 1.3)
    along = direction[iy[keep], ix[keep]] + rng.normal(0, 0.15, n)
    angles = np.where(round_, rng.uniform(0, math.pi, n), along)
    darkness = rng.uniform(150, 255, n)
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    t = np.linspace(0, 2 * math.pi, 10, endpoint=False)
    for i in range(n):
        ca, sa = math.cos(angles[i]), math.sin(angles[i])
        ex, ey = major[i] * np.cos(t), minor[i] * np.sin(t)
        points = list(zip((px[i] + ex * ca - ey * sa).tolist(),
                          (py[i] + ex * sa + ey * ca).tolist(), strict=True))
        draw.polygon(points, fill=int(darkness[i]))
    canvas = canvas.filter(ImageFilter.GaussianBlur(0.7))
    return np.asarray(canvas, np.float32) / 255.0
