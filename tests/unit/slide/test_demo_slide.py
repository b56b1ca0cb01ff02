"""The demo slide ``wsi-streamer serve`` writes into an empty folder: a generic pyramidal TIFF
with an MPP both our parser and OpenSlide read, the same pixels as OpenSlide, tissue islands
covering 10-50% of a white background, and the same bytes on every run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.images import psnr
from tests.fixtures.oracle import MIN_PSNR
from wsi_streamer.format.demo import DEMO_MPP, DEMO_SIZE, demo_image, demo_slide_bytes
from wsi_streamer.io.range_reader import BytesReader
from wsi_streamer.server.cli import DEMO_NAME, ensure_demo_slide
from wsi_streamer.slide.reader import SlideReader, open_slide
from wsi_streamer.slide.region import read_region

# Level-0 regions (x, y, w, h) that cross tile boundaries, then more around tissue
# (``tissue_xy``); the last ends at the slide's corner.
REGIONS = [(1500, 1400, 512, 512), (130, 4000, 900, 300),
           (DEMO_SIZE[0] - 292, DEMO_SIZE[1] - 244, 292, 244)]


@pytest.fixture(scope="module")
def demo_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("demo")
    written = ensure_demo_slide(str(folder))
    assert written == str(folder / DEMO_NAME)
    return Path(written)


@pytest.fixture(scope="module")
def demo_slide(demo_path: Path) -> SlideReader:
    return open_slide(BytesReader(demo_path.read_bytes()))


@pytest.fixture(scope="module")
def tissue_xy(demo_slide: SlideReader) -> tuple[int, int]:
    """A level-0 point deep inside tissue (a 9x9 tissue block of the smallest level)."""
    smallest = demo_slide.levels[-1]
    thumb = np.asarray(read_region(demo_slide, smallest.level, x=0, y=0, width=smallest.width,
                                   height=smallest.height))
    stained = _tissue(thumb)
    for y in range(4, smallest.height - 4):
        for x in range(4, smallest.width - 4):
            if stained[y - 4:y + 5, x - 4:x + 5].all():
                ds = int(smallest.downsample)
                return x * ds, y * ds
    raise AssertionError("no tissue")


def _tissue(rgb: np.ndarray) -> np.ndarray:
    """Stained pixels: coloured (max - min channel above 20) or darker than 220 on average."""
    pixels = rgb.astype(np.int16)
    stained: np.ndarray = ((pixels.max(-1) - pixels.min(-1)) > 20) | (pixels.mean(-1) < 220)
    return stained


def test_demo_slide_structure_and_mpp(demo_path: Path, demo_slide: SlideReader) -> None:
    import openslide

    structure = demo_slide.structure
    assert demo_slide.dimensions == DEMO_SIZE == (49152, 36864)  # a whole 40x slide
    assert [info.downsample for info in demo_slide.levels] == [2.0**i for i in range(7)]
    assert structure.format_name == "Generic Pyramidal TIFF"
    assert structure.mpp_x == pytest.approx(DEMO_MPP) and structure.mpp_y == pytest.approx(0.25)
    assert 1e6 < demo_path.stat().st_size < 8e6  # repeated tiles are stored once
    with openslide.OpenSlide(str(demo_path)) as slide:
        assert slide.level_dimensions == tuple((i.width, i.height) for i in demo_slide.levels)
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(DEMO_MPP)
        assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(DEMO_MPP)


@pytest.mark.parametrize("level", [0, 2])
def test_demo_slide_pixels_match_openslide(demo_path: Path, demo_slide: SlideReader,
                                           level: int, tissue_xy: tuple[int, int]) -> None:
    import openslide

    ds = 2**level
    tx, ty = tissue_xy
    around = [(tx - 350, ty - 250, 700, 500), (tx - 3000, ty - 200, 6400, 480)]
    with openslide.OpenSlide(str(demo_path)) as slide:
        for x, y, w, h in [*REGIONS, *around]:
            w, h = min(w, (DEMO_SIZE[0] - x) // ds), min(h, (DEMO_SIZE[1] - y) // ds)
            ours = np.asarray(read_region(demo_slide, level, x=x // ds, y=y // ds, width=w,
                                          height=h))
            at = (x // ds * ds, y // ds * ds)  # OpenSlide's top left is in level-0 pixels
            theirs = np.asarray(slide.read_region(at, level, (w, h)).convert("RGB"))
            assert psnr(ours, theirs) >= MIN_PSNR, (level, x, y)
    # the comparison means something: the regions hold tissue
    tile = np.asarray(read_region(demo_slide, 0, x=tx - 350, y=ty - 250, width=700, height=500))
    assert _tissue(tile).mean() > 0.5


def test_demo_slide_tissue_fraction_and_white_background(demo_slide: SlideReader) -> None:
    smallest = demo_slide.levels[-1]
    thumb = np.asarray(read_region(demo_slide, smallest.level, x=0, y=0, width=smallest.width,
                                   height=smallest.height))
    tissue = _tissue(thumb)
    assert 0.10 <= tissue.mean() <= 0.50, tissue.mean()
    background = thumb[~tissue]
    assert background.mean() >= 245 and np.percentile(background.min(-1), 1) >= 235
    for corner in (thumb[:8, :8], thumb[:8, -8:], thumb[-8:, :8], thumb[-8:, -8:]):
        assert corner.min() >= 235  # no tissue touches the slide's corners
    stained = thumb[tissue].astype(np.float64).mean(0)
    assert stained[1] < stained[0] and stained[1] < stained[2]  # pink/purple: green absorbed


def test_demo_slide_has_islands_and_nuclei(demo_slide: SlideReader,
                                           tissue_xy: tuple[int, int]) -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    smallest = demo_slide.levels[-1]
    thumb = np.asarray(read_region(demo_slide, smallest.level, x=0, y=0, width=smallest.width,
                                   height=smallest.height))
    labels, count = ndimage.label(_tissue(thumb))
    sizes = np.bincount(labels.ravel())[1:]
    islands = np.sort(sizes[sizes >= 50])[::-1]
    assert len(islands) >= 4, sizes  # several islands ...
    assert islands[0] > 4 * islands[-1]  # ... of different sizes
    tx, ty = tissue_xy
    region = np.asarray(read_region(demo_slide, 0, x=tx - 512, y=ty - 384, width=1024, height=768)
                        ).astype(np.int16)
    dark = (region.mean(-1) < 150) & (region[..., 2] > region[..., 0])  # blue-purple nuclei
    assert 0.03 < dark.mean() < 0.5


def test_demo_image_is_deterministic() -> None:
    first = np.asarray(demo_image(512, 384))
    assert first.shape == (384, 512, 3)
    assert np.array_equal(first, np.asarray(demo_image(512, 384)))
    assert not np.array_equal(first, np.asarray(demo_image(512, 384, seed=1)))
    assert demo_slide_bytes(512, 384) == demo_slide_bytes(512, 384)


def test_ensure_demo_slide_leaves_a_folder_with_slides(demo_path: Path) -> None:
    assert ensure_demo_slide(str(demo_path.parent)) is None
    assert sorted(p.name for p in demo_path.parent.iterdir()) == [DEMO_NAME]


def test_every_recipe_yields_batches_on_the_demo_slide(demo_path: Path) -> None:
    """The demo is a whole slide: recipes whose thresholds assume one (uni's CLAM a_t=100 x
    512^2 px) find tissue on it, through the public API (on an 8192 px demo uni found 0%)."""
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    from wsi_streamer.patches.recipes import RECIPES
    from wsi_streamer.patches.torch import WsiStreamDataset

    for name, recipe in RECIPES.items():
        dataset = WsiStreamDataset(str(demo_path), **{**recipe(), "patches_per_slide": 4},
                                   seed=0, cache_dir=None, output_dtype="uint8")
        batch = next(iter(DataLoader(dataset, batch_size=2)))
        assert isinstance(batch["image"], torch.Tensor) and len(batch["image"]) == 2, name
