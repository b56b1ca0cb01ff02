"""Patch pixels against OpenSlide (composited on white): native levels on SVS (JPEG, JPEG 2000
YCbCr and RGB) and generic pyramids, and exact target mpp by resampling (better than
wsistream, which picks the nearest level)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.images import psnr
from tests.fixtures.patch_slides import islands, levels_of
from tests.fixtures.slides import make_generic, make_svs
from wsi_streamer.patches import (
    ContinuousMagnificationSampler,
    GridSampler,
    MultiMagnificationSampler,
    NativeBackend,
    OpenSlideBackend,
    PatchPipeline,
    RandomSampler,
    SlideHandle,
)
from wsi_streamer.patches.masks import MaskStore
from wsi_streamer.patches.tissue import OtsuTissueDetector

openslide = pytest.importorskip("openslide")


def oracle(path: Path, x: int, y: int, level: int, size: int) -> np.ndarray:
    with openslide.OpenSlide(str(path)) as slide:
        rgba = slide.read_region((x, y), level, (size, size))
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pixels")
    image = islands(1536, 2048, 0.3, seed=3)
    out = {}
    for codec in ("jpeg", "jp2k-ycbcr", "jp2k-rgb"):
        out[codec] = make_svs(images=levels_of(image, (1, 4, 16)), codec=codec, mpp=0.25,
                              qualities=(90,), associated=False, tile=240).write(
            folder, f"{codec}.svs")
    out["generic"] = make_generic(1400, 1000, levels=3, tile=128).write(folder, "generic.tif")
    return out


@pytest.mark.parametrize("codec", ["jpeg", "jp2k-ycbcr", "jp2k-rgb", "generic"])
@pytest.mark.parametrize("level", [0, 1])
def test_native_level_patches_equal_openslide(slides, codec, level, tmp_path):
    path = slides[codec]
    size = 200 if level == 0 else 64
    sampler = GridSampler(size, level=level, tissue_threshold=0.0 if codec == "generic" else 0.4)
    pipe = PatchPipeline([str(path)], sampler=sampler, thumbnail_size=(512, 512),
                         patches_per_slide=12, cache_dir=str(tmp_path))
    results = list(pipe)
    assert len(results) >= 6
    for result in results:
        c = result.coordinate
        assert c.level == level and result.image.shape == (size, size, 3)
        assert psnr(result.image, oracle(path, c.x, c.y, c.level, size)) >= 45, c


def test_random_sampler_target_mpp_is_exact_and_matches_area_downscale(slides, tmp_path):
    path = slides["jpeg"]
    pipe = PatchPipeline([str(path)], sampler=RandomSampler(224, target_mpp=0.5), seed=3,
                         thumbnail_size=(512, 512), patches_per_slide=10,
                         cache_dir=str(tmp_path))
    results = list(pipe)
    assert len(results) == 10
    for result in results:
        c = result.coordinate
        assert c.level == 0 and c.patch_size == 448 and c.out_size == 224
        assert c.mpp is not None and abs(c.mpp - 0.5) <= 0.01
        want = np.asarray(Image.fromarray(oracle(path, c.x, c.y, 0, 448)).reduce(2))
        assert result.image.shape == (224, 224, 3)
        assert psnr(result.image, want) >= 45


def test_multi_magnification_mpps_within_two_percent(slides, tmp_path):
    sampler = MultiMagnificationSampler(target_mpps=[0.25, 0.5, 1.0, 2.0], patch_size=64)
    pipe = PatchPipeline([str(slides["jpeg"])], sampler=sampler, seed=1,
                         thumbnail_size=(512, 512), patches_per_slide=40,
                         cache_dir=str(tmp_path))
    results = list(pipe)
    assert len(results) == 40
    mpps = {round(r.coordinate.mpp, 2) for r in results}
    assert mpps <= {0.25, 0.5, 1.0, 2.0} and len(mpps) >= 3
    for r in results:
        assert r.image.shape == (64, 64, 3)
    stats = pipe.stats_dict()
    assert sum(v for k, v in stats.items() if k.startswith("pipeline/mpp_")) == 40


def test_continuous_magnification_outputs_exact_size(slides, tmp_path):
    sampler = ContinuousMagnificationSampler(output_size=96, mpp_range=(0.3, 1.5))
    pipe = PatchPipeline([str(slides["jpeg"])], sampler=sampler, seed=2,
                         thumbnail_size=(512, 512), patches_per_slide=20,
                         cache_dir=str(tmp_path))
    for result in pipe:
        assert result.image.shape == (96, 96, 3)
        assert 0.3 * 0.98 <= result.coordinate.mpp <= 1.5 * 1.02


def test_openslide_backend_gives_the_same_pixels(slides, tmp_path):
    path = str(slides["jpeg"])
    kwargs = {"sampler": RandomSampler(224, target_mpp=0.5), "seed": 9,
              "thumbnail_size": (512, 512), "patches_per_slide": 6, "cache_dir": str(tmp_path)}
    ours = list(PatchPipeline([path], **kwargs))
    theirs = list(PatchPipeline([path], backend=OpenSlideBackend(), **kwargs))
    assert [r.coordinate for r in ours] == [r.coordinate for r in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert psnr(a.image, b.image) >= 45


def uncached() -> NativeBackend:
    backend = NativeBackend()
    backend.configure(use_cache=False)
    return backend


def test_thumbnail_comes_from_a_small_level(slides):
    with SlideHandle(str(slides["jpeg"]), backend=uncached()) as slide:
        thumb = slide.get_thumbnail((512, 512))
        assert thumb.shape == (384, 512, 3)
    reader = slide._slide.reader  # type: ignore[attr-defined]
    # Level 1 (512 wide) is the smallest level large enough; level 0 is never decoded.
    assert set(reader._arrays) == {1}
    with SlideHandle(str(slides["jpeg"]), backend=uncached()) as slide:
        slide.get_thumbnail((128, 128))
    assert set(slide._slide.reader._arrays) == {2}  # type: ignore[attr-defined]


def test_thumbnail_is_the_area_average_of_its_level(slides):
    """The tile server's overview: level 1 (512x384) area-averaged (BOX) to 300x225, not
    Lanczos (a sharper, costlier filter: detection needs neither)."""
    with SlideHandle(str(slides["jpeg"]), backend=uncached()) as slide:
        thumb = slide.get_thumbnail((300, 300))
        level = slide.read_region(0, 0, 512, 384, level=1)
    want = np.asarray(Image.fromarray(level).resize((300, 225), Image.Resampling.BOX))
    assert np.array_equal(thumb, want)


def test_detection_takes_a_level_as_it_is_when_it_nearly_fills_the_thumbnail(slides):
    """Asked for 530 px: ``get_thumbnail`` area-averages level 0 (2048x1536, the smallest
    level that large) to 530x398; the mask store accepts 95% of that, so level 1 (512x384)
    is its thumbnail, decoded and nothing else (no resampling), and the mask's downsample
    is level 1's."""
    with SlideHandle(str(slides["jpeg"]), backend=uncached()) as slide:
        assert slide.get_thumbnail((530, 530)).shape == (398, 530, 3)
    with SlideHandle(str(slides["jpeg"]), backend=uncached()) as slide:
        thumb = slide.get_thumbnail_fit((530, 530), 0.95)
        assert np.array_equal(thumb, slide.read_region(0, 0, 512, 384, level=1))
    assert set(slide._slide.reader._arrays) == {1}  # type: ignore[attr-defined]
    with SlideHandle(str(slides["jpeg"]), backend=uncached()) as slide:
        mask = MaskStore(OtsuTissueDetector(), (530, 530), 0).detect(slide)
    assert mask.mask.shape == (384, 512) and mask.downsample == 4.0 and mask.mask.any()


def test_a_backend_without_the_cheaper_thumbnail_gives_its_thumbnail(slides):
    with SlideHandle(str(slides["jpeg"]), backend=OpenSlideBackend()) as slide:
        thumb = slide.get_thumbnail_fit((530, 530), 0.95)
        mask = MaskStore(OtsuTissueDetector(), (530, 530), 0).detect(slide)
    assert thumb.shape == (398, 530, 3) and mask.mask.shape == (398, 530)
    assert mask.downsample == pytest.approx(2048 / 530)
