"""Published patching recipes of pathology foundation models, as ``PatchPipeline`` arguments.

Each function returns a fresh ``dict`` of keyword arguments (tissue detector, sampler with patch
size and resolution, tissue threshold, patch filter, augmentation, and where the paper extracts
every non-overlapping tile once, ``replacement="without_replacement"``), to unpack into
``PatchPipeline(slide_paths, **recipe())`` or ``WsiStreamDataset``; override any key as needed.
Where a paper's detector is a model that was not released, a heuristic detector stands in (said
in the docstring). Normalisation and the DINOv2 multi-crop are left to the training code, as in
the papers (mean and std are given in each docstring); every recipe yields one ``image``.
Sources: the papers, and wsistream's recipe pages (ramonkaspar.github.io/wsistream/recipes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .filters import HSVPatchFilter
from .tissue import CLAMTissueDetector, HSVTissueDetector, OtsuTissueDetector
from .transforms import HEDColorAugmentation, RandomFlipRotate

Recipe = dict[str, Any]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FOUR_MPPS = (0.25, 0.5, 1.0, 2.0)  # 40x, 20x, 10x, 5x


def midnight() -> Recipe:
    """Midnight (Karasikov et al. 2025, arXiv:2504.05186; online patching of Aben et al. 2024,
    arXiv:2404.15217): 256 px tiles uniformly at random, at 0.25/0.5/1/2 mpp (uniform choice
    assumed), >= 40% foreground, Virchow's per-tile HSV filter (>= 60% of pixels in H 90-180,
    S 8-255, V 103-255), HED augmentation (sigma not published: Tellez "light" 0.05). The
    foreground U-Net was not released: Otsu stands in. Normalise with mean = std = 0.5."""
    from .sampling.multi import MultiMagnificationSampler

    return {
        "tissue_detector": OtsuTissueDetector(),
        "sampler": MultiMagnificationSampler(target_mpps=list(FOUR_MPPS), patch_size=256,
                                             tissue_threshold=0.4),
        "patch_filter": HSVPatchFilter(),
        "transforms": HEDColorAugmentation(sigma=0.05),
    }


def uni() -> Recipe:
    """UNI (Chen et al. 2024, Nature Medicine, doi:10.1038/s41591-024-02857-3): CLAM tissue
    segmentation (parameters not published: CLAM's defaults), non-overlapping 256 px patches
    at 20x (0.5 mpp; a quarter of UNI's patches were 512 px), about 800 patches per WSI; tissue
    threshold not published (the sampler's 0.4). Normalise with ImageNet mean and std.
    Assumes whole 40x slides: CLAM's a_t=100 drops tissue regions under 100 x 512^2
    level-0 px (~1.6 mm^2 at 0.25 mpp), so a small crop such as CMU-1-Small-Region.svs
    gives 0% tissue (``NoPatchesError``); lower ``CLAMTissueDetector(a_t=...)`` there."""
    from .sampling.random import RandomSampler

    return {
        "tissue_detector": CLAMTissueDetector(),
        "sampler": RandomSampler(patch_size=256, target_mpp=0.5, tissue_threshold=0.4),
        "replacement": "without_replacement",
        "patches_per_slide": 800,
    }


def virchow2() -> Recipe:
    """Virchow2 (Zimmermann et al. 2024, arXiv:2408.00738): 392 px source regions at 40x, 20x,
    10x and 5x (0.25/0.5/1/2 mpp) balanced online about 20/40/20/20%, >= 65% tissue; its 224 px
    global and 98 px local crops come from these regions by extended-context translation in
    the training code; flips (horizontal and vertical), no stain augmentation. The trained
    tissue FCN was not released: Virchow 1's HSV filter stands in on the thumbnail."""
    from .sampling.multi import MultiMagnificationSampler

    return {
        "tissue_detector": HSVTissueDetector(),
        "sampler": MultiMagnificationSampler(target_mpps=list(FOUR_MPPS),
                                             mpp_weights=[0.2, 0.4, 0.2, 0.2], patch_size=392,
                                             tissue_threshold=0.65),
        "transforms": RandomFlipRotate(p_hflip=0.5, p_vflip=0.5, p_rot90=0.0),
    }


def gpfm() -> Recipe:
    """GPFM (Ma et al. 2024, arXiv:2407.18449): CLAM segmentation with the repository's TCGA
    preset (Otsu on saturation, mthresh 7, close 4, a_t 16, a_h 4, 8 holes), every
    non-overlapping 512 px patch at level 0, deliberately not normalised to one magnification;
    contour-based selection (the sampler's 0.4 threshold here). Normalise with ImageNet mean
    and std. Assumes whole slides: a_t=16 drops tissue regions under 16 x 512^2 level-0
    px, which may be all of a small crop."""
    from .sampling.random import RandomSampler

    return {
        "tissue_detector": CLAMTissueDetector(use_otsu=True, sthresh=8, mthresh=7, close=4,
                                              a_t=16, a_h=4, max_n_holes=8),
        "sampler": RandomSampler(patch_size=512, level=0, tissue_threshold=0.4),
        "replacement": "without_replacement",
    }


def prov_gigapath() -> Recipe:
    """Prov-GigaPath (Xu et al. 2024, Nature, doi:10.1038/s41586-024-07441-w): Otsu on the
    luminance of a ~1024 px thumbnail (no blur or morphology), every non-overlapping 256 px
    tile at 0.5 mpp (20x) with >= 10% foreground. Normalise with ImageNet mean and std."""
    from .sampling.random import RandomSampler

    return {
        "tissue_detector": OtsuTissueDetector(blur_ksize=1, morph_close_ksize=0,
                                              min_area_ratio=0.0),
        "thumbnail_size": (1024, 1024),
        "sampler": RandomSampler(patch_size=256, target_mpp=0.5, tissue_threshold=0.1),
        "replacement": "without_replacement",
    }


def phikon_v2() -> Recipe:
    """Phikon-v2 (Filiot et al. 2024, arXiv:2409.09173): 224 px tiles at 20x (0.5 mpp) read
    directly (no resize), >= 60% tissue, extracted offline (every non-overlapping tile). The
    2.5x tissue U-Net was not released: Otsu stands in. Normalise with ImageNet mean and
    std."""
    from .sampling.random import RandomSampler

    return {
        "tissue_detector": OtsuTissueDetector(),
        "sampler": RandomSampler(patch_size=224, target_mpp=0.5, tissue_threshold=0.6),
        "replacement": "without_replacement",
    }


RECIPES: dict[str, Callable[[], Recipe]] = {
    "midnight": midnight,
    "uni": uni,
    "virchow2": virchow2,
    "gpfm": gpfm,
    "prov_gigapath": prov_gigapath,
    "phikon_v2": phikon_v2,
}


def get_recipe(name: str) -> Recipe:
    """The arguments of recipe ``name`` (a key of ``RECIPES``; "-" is read as "_"); raises
    ``ValueError`` listing the names for an unknown one."""
    key = name.strip().lower().replace("-", "_")
    if key not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    return RECIPES[key]()


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "RECIPES", "Recipe", "get_recipe", "gpfm",
           "midnight", "phikon_v2", "prov_gigapath", "uni", "virchow2"]
