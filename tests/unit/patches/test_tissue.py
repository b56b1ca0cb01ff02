"""Tissue detectors: Otsu, HSV, CLAM, Combined (no OpenCV), their validation and config keys."""

from __future__ import annotations

import copy
import importlib
import subprocess
import sys

import numpy as np
import pytest

from wsi_streamer.patches.color import require_extra, rgb_to_hsv_cv
from wsi_streamer.patches.tissue import (
    CLAMTissueDetector,
    CombinedTissueDetector,
    HSVTissueDetector,
    OtsuTissueDetector,
    TissueDetector,
    normalize_downsample,
)

PINK = (200, 110, 170)  # H&E-like: R max, B > G -> OpenCV hue about 160, saturation about 115
WHITE = 245


def white(height: int = 120, width: int = 160) -> np.ndarray:
    return np.full((height, width, 3), WHITE, dtype=np.uint8)


def with_blob(image: np.ndarray, top: int, left: int, size: int,
              colour: tuple[int, int, int] = PINK) -> np.ndarray:
    image[top:top + size, left:left + size] = colour
    return image


# --- Otsu ---------------------------------------------------------------------------------

def test_otsu_finds_dark_islands_on_white() -> None:
    image = with_blob(with_blob(white(), 10, 10, 40), 60, 90, 30)
    mask = OtsuTissueDetector().detect(image, 32.0)
    assert mask.dtype == bool and mask.shape == (120, 160)
    assert mask[20:40, 20:40].all() and mask[70:85, 100:115].all()
    assert not mask[0:5, 100:160].any() and not mask[110:, :60].any()
    assert abs(int(mask.sum()) - (40 * 40 + 30 * 30)) < 60


@pytest.mark.parametrize("value", [255, 240, 0])
def test_otsu_uniform_image_is_empty(value: int) -> None:
    image = np.full((64, 64, 3), value, dtype=np.uint8)
    assert not OtsuTissueDetector().detect(image, (8.0, 8.0)).any()


def test_otsu_removes_small_components_and_keeps_border_tissue() -> None:
    image = white(100, 100)
    image[0:60, 0:60] = PINK  # touches two borders: closing must not erode it there
    image[90:92, 90:92] = PINK  # 4 px, below int(0.001 * 100 * 100) = 10 px: removed
    mask = OtsuTissueDetector(blur_ksize=1, min_area_ratio=0.001).detect(image, 1.0)
    assert mask[0, 0] and mask[0:55, 0:55].all()
    assert not mask[88:94, 88:94].any()
    kept = OtsuTissueDetector(blur_ksize=1, min_area_ratio=0.0).detect(image, 1.0)
    assert kept[90:92, 90:92].any()


def test_otsu_closing_fills_a_one_pixel_gap() -> None:
    image = white(60, 60)
    image[10:50, 10:29] = PINK
    image[10:50, 30:50] = PINK  # column 29 stays white
    closed = OtsuTissueDetector(blur_ksize=1, morph_close_ksize=5).detect(image, 1.0)
    raw = OtsuTissueDetector(blur_ksize=1, morph_close_ksize=0).detect(image, 1.0)
    assert not raw[20:40, 29].any()
    assert closed[20:40, 29].all()


# --- HSV ----------------------------------------------------------------------------------

def test_hsv_detector_inclusive_box() -> None:
    image = np.zeros((1, 4, 3), dtype=np.uint8)
    image[0] = [PINK, (WHITE, WHITE, WHITE), (40, 80, 200), (90, 40, 60)]
    hsv = rgb_to_hsv_cv(image)[0]
    mask = HSVTissueDetector().detect(image, 1.0)[0]
    expected = [(90 <= h <= 180) and (8 <= s) and (103 <= v) for h, s, v in hsv.tolist()]
    assert mask.tolist() == expected == [True, False, True, False]
    # the box ends are inclusive: a box exactly at a pixel's value keeps it
    h, s, v = (int(c) for c in hsv[0])
    exact = HSVTissueDetector(hue_range=(h, h), sat_range=(s, s), val_range=(v, v))
    assert exact.detect(image, 1.0)[0].tolist() == [True, False, False, False]
    above = HSVTissueDetector(hue_range=(h + 1, 180))
    assert not above.detect(image, 1.0)[0, 0]


def test_hsv_detector_white_is_empty() -> None:
    assert not HSVTissueDetector().detect(np.full((8, 8, 3), 255, np.uint8), 1.0).any()


# --- CLAM ---------------------------------------------------------------------------------

def clam(**overrides: object) -> CLAMTissueDetector:
    # unit = int(32**2 / 1) = 1024 px at downsample 1; a_t=1 -> > 1024 px, a_h=0.1 -> > 102 px
    options: dict[str, object] = {"ref_patch_size": 32, "a_t": 1, "a_h": 0.1, "mthresh": 3,
                                  "close": 0}
    options.update(overrides)
    return CLAMTissueDetector(**options)  # type: ignore[arg-type]


def test_clam_keeps_big_blob_drops_small_one() -> None:
    image = with_blob(with_blob(white(120, 160), 10, 10, 50), 80, 120, 20)  # 2500 vs 400 px
    mask = clam().detect(image, (1.0, 1.0))
    assert mask[15:55, 15:55].all()
    assert not mask[80:100, 120:140].any()
    # the unit scales with the downsample: at downsample 2 the unit is 256 px, both survive
    both = clam().detect(image, 2.0)
    assert both[85:95, 125:135].all()


def test_clam_hole_rules() -> None:
    image = with_blob(white(100, 100), 10, 10, 80)  # 6400 px square
    image[20:40, 20:40] = WHITE  # 400 px hole: above a_h (102 px)
    image[60:65, 60:65] = WHITE  # 25 px hole: below a_h, filled
    mask = clam().detect(image, 1.0)
    assert not mask[22:38, 22:38].any()
    assert mask[60:65, 60:65].all()
    assert mask[12:18, 12:88].all()
    # max_n_holes=0: every hole is filled
    assert clam(max_n_holes=0).detect(image, 1.0)[22:38, 22:38].all()
    # only the largest max_n_holes holes stay holes
    image[60:75, 60:75] = WHITE  # 225 px, now also above a_h
    one = clam(max_n_holes=1).detect(image, 1.0)
    assert not one[22:38, 22:38].any() and one[62:73, 62:73].all()


def test_clam_net_area_excludes_holes() -> None:
    ring = with_blob(white(80, 80), 10, 10, 40)  # 1600 px square
    ring[16:44, 16:44] = WHITE  # leaves a 1600 - 784 = 816 px ring: below 1024
    assert not clam().detect(ring, 1.0).any()
    assert clam(a_t=0.5).detect(ring, 1.0)[12, 12:48].all()


def test_clam_threshold_median_and_white() -> None:
    assert not CLAMTissueDetector().detect(np.full((64, 64, 3), 255, np.uint8), 1.0).any()
    image = with_blob(white(60, 60), 10, 10, 40)
    image[30, 5] = PINK  # isolated pixel: removed by the median blur
    mask = clam(a_t=0.0).detect(image, 1.0)
    assert not mask[30, 5] and mask[15:45, 15:45].all()
    assert not clam(a_t=0.0, sthresh_up=0).detect(image, 1.0).any()
    assert clam(a_t=0.0, use_otsu=True).detect(image, 1.0)[15:45, 15:45].all()


# --- Combined, validation, keys ------------------------------------------------------------

def test_combined_is_logical_and() -> None:
    image = with_blob(white(), 10, 10, 40)
    image[60:100, 80:120] = (60, 60, 60)  # dark grey: Otsu tissue, not in the HSV box
    otsu = OtsuTissueDetector().detect(image, 1.0)
    hsv = HSVTissueDetector().detect(image, 1.0)
    combined = CombinedTissueDetector([OtsuTissueDetector(), HSVTissueDetector()])
    assert np.array_equal(combined.detect(image, 1.0), otsu & hsv)
    assert otsu[70:90, 90:110].all() and not combined.detect(image, 1.0)[70:90, 90:110].any()


@pytest.mark.parametrize(("factory", "name"), [
    (lambda: OtsuTissueDetector(blur_ksize=4), "blur_ksize"),
    (lambda: OtsuTissueDetector(blur_ksize=0), "blur_ksize"),
    (lambda: OtsuTissueDetector(morph_close_ksize=-1), "morph_close_ksize"),
    (lambda: OtsuTissueDetector(min_area_ratio=-0.1), "min_area_ratio"),
    (lambda: HSVTissueDetector(hue_range=(100, 90)), "hue_range"),
    (lambda: HSVTissueDetector(sat_range=(1, 2, 3)), "sat_range"),  # type: ignore[arg-type]
    (lambda: CLAMTissueDetector(mthresh=4), "mthresh"),
    (lambda: CLAMTissueDetector(close=-1), "close"),
    (lambda: CLAMTissueDetector(max_n_holes=-1), "max_n_holes"),
    (lambda: CLAMTissueDetector(ref_patch_size=0), "ref_patch_size"),
    (lambda: CLAMTissueDetector(a_t=-1), "a_t"),
    (lambda: CLAMTissueDetector(sthresh=2.5), "sthresh"),  # type: ignore[arg-type]
    (lambda: CombinedTissueDetector([]), "detectors"),
    (lambda: CombinedTissueDetector([object()]), "detectors"),  # type: ignore[list-item]
])
def test_invalid_arguments_name_the_argument(factory: object, name: str) -> None:
    with pytest.raises((ValueError, TypeError), match=name):
        factory()  # type: ignore[operator]


def test_detect_validates_inputs() -> None:
    detector = OtsuTissueDetector()
    with pytest.raises(TypeError, match="thumbnail"):
        detector.detect(np.zeros((4, 4, 3), dtype=np.float32), 1.0)
    with pytest.raises(ValueError, match="thumbnail"):
        detector.detect(np.zeros((4, 4), dtype=np.uint8), 1.0)
    with pytest.raises(ValueError, match="downsample"):
        detector.detect(white(), 0.0)
    assert normalize_downsample(2) == (2.0, 2.0)
    assert normalize_downsample((2, 3.5)) == (2.0, 3.5)


def test_config_key_is_stable_and_distinguishes_configurations() -> None:
    key = OtsuTissueDetector().config_key()
    assert key == OtsuTissueDetector().config_key() == copy.deepcopy(OtsuTissueDetector()
                                                                     ).config_key()
    assert "OtsuTissueDetector" in key and "blur_ksize=7" in key
    assert key != OtsuTissueDetector(blur_ksize=5).config_key()
    assert key != CLAMTissueDetector().config_key()
    nested = CombinedTissueDetector([OtsuTissueDetector(), HSVTissueDetector()]).config_key()
    assert key in nested and HSVTissueDetector().config_key() in nested
    from_list = HSVTissueDetector(hue_range=[90, 180])  # type: ignore[arg-type]
    assert from_list.config_key() == HSVTissueDetector().config_key()

    class Custom(TissueDetector):
        def __init__(self, level: int) -> None:
            self.level = level
            self._cache: object = None

        def detect(self, thumbnail: np.ndarray, downsample: object = 1.0) -> np.ndarray:
            return np.zeros(thumbnail.shape[:2], dtype=bool)

    assert Custom(2).config_key().endswith("Custom/v1(level=2)")


def test_require_extra_names_the_install_command() -> None:
    with pytest.raises(ImportError, match=r'pip install "wsi_streamer\[patches\]"'):
        require_extra("wsi_streamer_no_such_module")


@pytest.mark.parametrize(("args", "imports"), [
    ("", True),  # the default component filter (min_area_ratio 0.001) labels with scipy
    ("min_area_ratio=0", False),  # a fixed dyadic blur kernel, no component filter
    ("min_area_ratio=0, blur_ksize=9", True),  # a blur without a fixed kernel
])
def test_detectors_import_their_extras_when_built_not_at_first_detection(
        args: str, imports: bool) -> None:
    """Forked DataLoader workers inherit what the builder imported: building an Otsu detector
    imports scipy.ndimage exactly when its detect() will use it; importing the package does
    not."""
    code = ("import sys\n"
            "from wsi_streamer.patches.tissue import OtsuTissueDetector\n"
            "assert 'scipy.ndimage' not in sys.modules\n"
            f"OtsuTissueDetector({args})\n"
            "print('scipy.ndimage' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(imports)


@pytest.mark.parametrize("build", [OtsuTissueDetector, CLAMTissueDetector])
def test_a_missing_extra_fails_when_the_detector_is_built(
        build: type[TissueDetector], monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def without_scipy(name: str, package: str | None = None) -> object:
        if name.startswith(("scipy", "skimage")):
            raise ImportError(f"No module named {name!r}")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", without_scipy)
    with pytest.raises(ImportError, match=r'pip install "wsi_streamer\[patches\]"'):
        build()


def test_fast_closing_and_blur_equal_the_scipy_filters() -> None:
    from scipy import ndimage

    from wsi_streamer.patches.tissue import imageops as impl

    rng = np.random.default_rng(3)
    mask = rng.random((120, 170)) > 0.55
    for footprint in (impl.ellipse(5), impl.ellipse(7), np.ones((4, 4), dtype=bool)):
        grown = ndimage.maximum_filter(mask.astype(np.uint8), footprint=footprint,
                                       mode="constant", cval=0)
        want = ndimage.minimum_filter(grown, footprint=footprint, mode="constant",
                                      cval=1).astype(bool)
        assert np.array_equal(impl.close(mask, footprint), want)
    grey = rng.integers(0, 256, (90, 130), dtype=np.uint8)
    for ksize in (3, 5, 7):
        kernel = np.asarray(impl.SMALL_GAUSSIANS[ksize], dtype=np.float64)
        ref = grey.astype(np.float64)
        for axis in (0, 1):
            ref = ndimage.correlate1d(ref, kernel, axis=axis, mode="mirror")
        diff = np.abs(impl.gaussian_blur(grey, ksize).astype(float) - ref)
        assert diff.max() <= 0.5 + 1e-9  # exact value, rounded


def test_otsu_threshold_equals_scikit_image() -> None:
    from skimage.filters import threshold_otsu

    from wsi_streamer.patches.tissue import imageops as impl

    rng = np.random.default_rng(5)
    bimodal = np.concatenate([rng.normal(80, 20, 5000), rng.normal(220, 10, 9000)])
    images = [np.clip(bimodal, 0, 255).astype(np.uint8).reshape(100, 140),
              rng.integers(0, 256, (64, 80), dtype=np.uint8),
              rng.integers(37, 41, (30, 30), dtype=np.uint8),  # a narrow range
              np.array([[0, 255]], dtype=np.uint8), np.array([[3, 4, 4, 9]], dtype=np.uint8)]
    for image in images:
        assert impl.otsu_threshold(image) == float(threshold_otsu(image))
    assert impl.otsu_threshold(np.full((5, 5), 7, dtype=np.uint8)) is None


def test_banded_grey_and_blur_equal_the_whole_image_arithmetic() -> None:
    """Over several bands of rows (and a last, partial one): OpenCV's fixed-point luma and the
    exact rounded blur, as whole-image integer arithmetic computes them."""
    from scipy import ndimage

    from wsi_streamer.patches.color import BAND_ROWS, rgb_to_grey_cv
    from wsi_streamer.patches.tissue import imageops as impl

    rng = np.random.default_rng(8)
    rgb = rng.integers(0, 256, (2 * BAND_ROWS + 37, 50, 3), dtype=np.uint8)
    wide = rgb.astype(np.int64)
    want = (9798 * wide[..., 0] + 19235 * wide[..., 1] + 3735 * wide[..., 2] + 16384) >> 15
    grey = rgb_to_grey_cv(rgb)
    assert grey.dtype == np.uint8 and np.array_equal(grey, want)
    kernel = np.asarray([round(w * 64) for w in impl.SMALL_GAUSSIANS[7]], dtype=np.int64)
    ref = grey.astype(np.int64)
    for axis in (0, 1):
        ref = ndimage.correlate1d(ref, kernel, axis=axis, mode="mirror")
    assert np.array_equal(impl.gaussian_blur(grey, 7), (ref + 2048) >> 12)


def test_closing_with_gaps_in_the_footprint_rows_equals_scipy() -> None:
    from scipy import ndimage

    from wsi_streamer.patches.tissue import imageops as impl

    mask = np.random.default_rng(4).random((40, 70)) > 0.7
    footprint = np.array([[1, 0, 1, 1, 0], [0, 0, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=bool)
    grown = ndimage.maximum_filter(mask.astype(np.uint8), footprint=footprint,
                                   mode="constant", cval=0)
    want = ndimage.minimum_filter(grown, footprint=footprint, mode="constant", cval=1)
    assert np.array_equal(impl.close(mask, footprint), want.astype(bool))


@pytest.mark.parametrize("blobs", [40, 400])  # Pillow's uint8 path, then numpy's
def test_small_components_are_dropped_as_their_areas_say(blobs: int) -> None:
    from scipy import ndimage

    from wsi_streamer.patches.tissue import imageops as impl

    rng = np.random.default_rng(blobs)
    mask = np.zeros((200, 300), dtype=bool)
    for _ in range(blobs):  # squares of 1-6 px sides, most apart
        y, x, side = rng.integers(0, 194), rng.integers(0, 294), rng.integers(1, 7)
        mask[y:y + side, x:x + side] = True
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    assert (count < 256) == (blobs < 256)
    areas = np.bincount(labels.ravel())
    kept = impl.drop_small_components(mask, 12)
    assert kept.dtype == bool and kept.flags.writeable
    assert np.array_equal(kept, (areas >= 12)[labels] & mask)
    assert impl.drop_small_components(mask, 1) is mask  # nothing that small: untouched
