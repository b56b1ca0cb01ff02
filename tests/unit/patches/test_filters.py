"""HSVPatchFilter and the OpenCV-scale RGB -> HSV conversion it shares with the detectors."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest

from wsi_streamer.patches.color import hsv_box_mask, rgb_to_grey_cv, rgb_to_hsv_cv
from wsi_streamer.patches.filters import HSVPatchFilter, PatchFilter
from wsi_streamer.patches.tissue import HSVTissueDetector

IN_BOX = (200, 110, 170)  # H about 160, S about 115, V 200: inside Midnight's box
OUT_BOX = (250, 250, 250)  # background: S about 0


def reference_hsv(rgb: np.ndarray) -> np.ndarray:
    """cv2.cvtColor(RGB2HSV) for uint8 from its documented formula, in floating point:
    V = max, S = 255 (V - min) / V (0 if V = 0), H = hue degrees / 2 (0 for grey)."""
    out = np.zeros(rgb.shape, dtype=np.int64)
    for index in np.ndindex(rgb.shape[:-1]):
        r, g, b = (float(c) for c in rgb[index])
        v = max(r, g, b)
        diff = v - min(r, g, b)
        s = 255.0 * diff / v if v > 0 else 0.0
        if diff == 0:
            h = 0.0
        elif v == r:
            h = 60.0 * (g - b) / diff
        elif v == g:
            h = 120.0 + 60.0 * (b - r) / diff
        else:
            h = 240.0 + 60.0 * (r - g) / diff
        if h < 0:
            h += 360.0
        out[index] = (round(h / 2) % 180, round(s), v)
    return out


def test_hsv_matches_reference_within_one_level() -> None:
    rng = np.random.default_rng(1234)
    pixels = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    pixels[0, :6] = [(0, 0, 0), (255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255),
                     (128, 128, 128)]
    ours = rgb_to_hsv_cv(pixels).astype(np.int64)
    reference = reference_hsv(pixels)
    hue_gap = np.abs(ours[..., 0] - reference[..., 0])
    assert np.minimum(hue_gap, 180 - hue_gap).max() <= 1  # hue is circular
    assert np.abs(ours[..., 1:] - reference[..., 1:]).max() <= 1
    assert ours[..., 0].max() < 180
    assert ours[0, :6].tolist() == [[0, 0, 0], [0, 0, 255], [0, 255, 255], [60, 255, 255],
                                    [120, 255, 255], [0, 0, 128]]


def test_hsv_agrees_with_colorsys() -> None:
    rng = np.random.default_rng(7)
    pixels = rng.integers(1, 256, size=(200, 3), dtype=np.uint8)
    ours = rgb_to_hsv_cv(pixels).astype(np.float64)
    for (r, g, b), (h, s, v) in zip(pixels.tolist(), ours.tolist(), strict=True):
        ch, cs, cv = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
        assert min(abs(h - ch * 180), 180 - abs(h - ch * 180)) <= 1
        assert abs(s - cs * 255) <= 1 and abs(v - cv * 255) <= 1


def test_grey_is_bt601_luma() -> None:
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    expected = np.rint(pixels.astype(np.float64) @ [0.299, 0.587, 0.114])
    grey = rgb_to_grey_cv(pixels)
    assert grey.dtype == np.uint8 and grey.shape == (64, 64)
    assert np.abs(grey.astype(int) - expected).max() <= 1
    assert rgb_to_grey_cv(np.array([[255, 255, 255], [0, 0, 0]], np.uint8)).tolist() == [255, 0]


def test_hsv_rejects_wrong_input() -> None:
    with pytest.raises(ValueError, match="rgb"):
        rgb_to_hsv_cv(np.zeros((2, 2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="rgb"):
        rgb_to_hsv_cv(np.zeros((2, 2, 4), dtype=np.uint8))


def patch_with(inside: int, total: int = 100) -> np.ndarray:
    patch = np.empty((total, 1, 3), dtype=np.uint8)
    patch[:inside] = IN_BOX
    patch[inside:] = OUT_BOX
    return patch.reshape(10, total // 10, 3)


def test_filter_boundary_is_exact() -> None:
    accepted = HSVPatchFilter()
    assert isinstance(accepted, PatchFilter)
    assert accepted.accept(patch_with(60)) is True
    assert accepted.accept(patch_with(59)) is False
    assert accepted.accept(patch_with(100)) and not accepted.accept(patch_with(0))


@pytest.mark.parametrize("fraction", [0.07, 0.14, 0.28, 0.29, 0.55, 0.56, 0.57])
def test_filter_boundary_survives_float_rounding(fraction: float) -> None:
    # fraction * 100 is 7.000000000000001, 28.999999999999996, ... in floating point
    needed = round(fraction * 100)
    accepted = HSVPatchFilter(min_pixel_fraction=fraction)
    assert accepted.accept(patch_with(needed))
    assert not accepted.accept(patch_with(needed - 1))


def test_filter_edges_and_box() -> None:
    assert HSVPatchFilter(min_pixel_fraction=0.0).accept(patch_with(0))
    assert not HSVPatchFilter().accept(np.zeros((0, 4, 3), dtype=np.uint8))
    # a box that excludes the colour rejects it
    assert not HSVPatchFilter(hue_range=(0, 89)).accept(patch_with(100))
    # the same box as the thumbnail detector, pixel for pixel
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(30, 30, 3), dtype=np.uint8)
    box = hsv_box_mask(image, (90, 180), (8, 255), (103, 255))
    assert np.array_equal(box, HSVTissueDetector().detect(image, 1.0))
    fraction = box.mean()
    assert HSVPatchFilter(min_pixel_fraction=float(fraction)).accept(image)
    assert not HSVPatchFilter(min_pixel_fraction=float(fraction) + 0.002).accept(image)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"min_pixel_fraction": 1.5}, "min_pixel_fraction"),
    ({"min_pixel_fraction": -0.1}, "min_pixel_fraction"),
    ({"min_pixel_fraction": "0.6"}, "min_pixel_fraction"),
    ({"hue_range": (120, 90)}, "hue_range"),
    ({"val_range": 5}, "val_range"),
])
def test_filter_validation(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises((ValueError, TypeError), match=name):
        HSVPatchFilter(**kwargs)  # type: ignore[arg-type]


def test_filter_rejects_non_rgb() -> None:
    with pytest.raises(TypeError, match="patch"):
        HSVPatchFilter().accept(np.zeros((4, 4, 3), dtype=np.float32))
