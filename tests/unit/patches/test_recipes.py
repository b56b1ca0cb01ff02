"""Recipes: each returns fresh pipeline arguments carrying the published numbers."""

from __future__ import annotations

import inspect

import pytest

from wsi_streamer.patches import recipes
from wsi_streamer.patches.filters import HSVPatchFilter
from wsi_streamer.patches.recipes import RECIPES, get_recipe
from wsi_streamer.patches.tissue import (
    CLAMTissueDetector,
    HSVTissueDetector,
    OtsuTissueDetector,
    TissueDetector,
)
from wsi_streamer.patches.transforms import HEDColorAugmentation, RandomFlipRotate

sampling = pytest.importorskip("wsi_streamer.patches.sampling")

PIPELINE_KEYS = {"tissue_detector", "sampler", "patch_filter", "transforms", "views",
                 "shared_transforms", "thumbnail_size", "patches_per_slide", "replacement"}


def test_registry_and_fresh_objects() -> None:
    assert set(RECIPES) == {"midnight", "uni", "virchow2", "gpfm", "prov_gigapath", "phikon_v2"}
    for name, factory in RECIPES.items():
        first, second = factory(), factory()
        assert set(first) <= PIPELINE_KEYS, name
        assert isinstance(first["tissue_detector"], TissueDetector)
        assert isinstance(first["sampler"], sampling.PatchSampler)
        assert first["sampler"] is not second["sampler"], name
        assert first["tissue_detector"] is not second["tissue_detector"], name
        doc = inspect.getdoc(factory) or ""
        assert ("arXiv" in doc or "doi:" in doc) and "20" in doc, name
    assert get_recipe("prov-gigapath")["sampler"].tissue_threshold == 0.1
    with pytest.raises(ValueError, match="midnight"):
        get_recipe("dino")


def test_area_thresholds_on_whole_slides_say_so() -> None:
    """A CLAM area filter in units of 512^2 level-0 px finds nothing on a small region (uni
    gave 0% tissue on CMU-1-Small-Region and yielded nothing, issue 23): such a recipe's
    docstring says it assumes whole slides."""
    for name, factory in RECIPES.items():
        detector = factory()["tissue_detector"]
        if isinstance(detector, CLAMTissueDetector) and detector.a_t > 0:
            assert "Assumes whole" in (inspect.getdoc(factory) or ""), name


def test_midnight() -> None:
    recipe = recipes.midnight()
    sampler = recipe["sampler"]
    assert isinstance(sampler, sampling.MultiMagnificationSampler)
    assert sampler.target_mpps == [0.25, 0.5, 1.0, 2.0] and sampler.patch_size == 256
    assert sampler.tissue_threshold == 0.4 and sampler.mpp_weights is None
    patch_filter = recipe["patch_filter"]
    assert isinstance(patch_filter, HSVPatchFilter)
    assert (patch_filter.hue_range, patch_filter.sat_range, patch_filter.val_range,
            patch_filter.min_pixel_fraction) == ((90, 180), (8, 255), (103, 255), 0.6)
    assert isinstance(recipe["transforms"], HEDColorAugmentation)
    assert recipe["transforms"].sigma == 0.05


def test_uni() -> None:
    recipe = recipes.uni()
    sampler = recipe["sampler"]
    assert isinstance(sampler, sampling.RandomSampler)
    assert (sampler.patch_size, sampler.target_mpp) == (256, 0.5)
    assert isinstance(recipe["tissue_detector"], CLAMTissueDetector)
    assert recipe["tissue_detector"].config_key() == CLAMTissueDetector().config_key()
    assert recipe["patches_per_slide"] == 800
    assert recipe["replacement"] == "without_replacement"


def test_virchow2() -> None:
    recipe = recipes.virchow2()
    sampler = recipe["sampler"]
    assert isinstance(sampler, sampling.MultiMagnificationSampler)
    assert sampler.target_mpps == [0.25, 0.5, 1.0, 2.0]
    assert sampler.mpp_weights == [0.2, 0.4, 0.2, 0.2]  # 40x, 20x, 10x, 5x
    assert sampler.patch_size == 392 and sampler.tissue_threshold == 0.65
    assert isinstance(recipe["tissue_detector"], HSVTissueDetector)
    flips = recipe["transforms"]
    assert isinstance(flips, RandomFlipRotate)
    assert (flips.p_hflip, flips.p_vflip, flips.p_rot90) == (0.5, 0.5, 0.0)
    assert "replacement" not in recipe


def test_gpfm() -> None:
    recipe = recipes.gpfm()
    detector = recipe["tissue_detector"]
    assert isinstance(detector, CLAMTissueDetector)
    assert (detector.use_otsu, detector.sthresh, detector.mthresh, detector.close, detector.a_t,
            detector.a_h, detector.max_n_holes) == (True, 8, 7, 4, 16, 4, 8)
    sampler = recipe["sampler"]
    assert (sampler.patch_size, sampler.level, sampler.target_mpp) == (512, 0, None)
    assert recipe["replacement"] == "without_replacement"


def test_prov_gigapath() -> None:
    recipe = recipes.prov_gigapath()
    detector = recipe["tissue_detector"]
    assert isinstance(detector, OtsuTissueDetector)
    assert (detector.blur_ksize, detector.morph_close_ksize, detector.min_area_ratio) == (1, 0, 0)
    assert recipe["thumbnail_size"] == (1024, 1024)
    sampler = recipe["sampler"]
    assert (sampler.patch_size, sampler.target_mpp, sampler.tissue_threshold) == (256, 0.5, 0.1)
    assert recipe["replacement"] == "without_replacement"


def test_phikon_v2() -> None:
    recipe = recipes.phikon_v2()
    sampler = recipe["sampler"]
    assert isinstance(sampler, sampling.RandomSampler)
    assert (sampler.patch_size, sampler.target_mpp, sampler.tissue_threshold) == (224, 0.5, 0.6)
    assert isinstance(recipe["tissue_detector"], OtsuTissueDetector)


def test_keys_are_pipeline_arguments() -> None:
    pipeline = pytest.importorskip("wsi_streamer.patches.pipeline")
    parameters = set(inspect.signature(pipeline.PatchPipeline).parameters)
    for name, factory in RECIPES.items():
        assert set(factory()) <= parameters, name
