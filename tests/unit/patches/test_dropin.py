"""wsistream drop-in (issue 22): its module tree, its backend protocol (a user's own
``SlideBackend`` subclass with custom URI schemes), ``TiffSlideBackend`` read natively."""

from __future__ import annotations

import contextlib
import copy
import importlib
import threading
import warnings
from collections.abc import Iterator

import numpy as np
import pytest

from wsi_streamer.patches import PatchPipeline, RandomSampler, SlideHandle
from wsi_streamer.patches.backends.base import SlideBackend
from wsi_streamer.patches.types import SlideProperties

# wsistream 0.1.6's public modules and the names its README, docs, examples and tests import.
TREE = {
    "backends": ["SlideBackend", "OpenSlideBackend", "TiffSlideBackend"],
    "backends.base": ["SlideBackend"], "backends.openslide": ["OpenSlideBackend"],
    "backends.tiffslide": ["TiffSlideBackend"],
    "tissue": ["TissueDetector", "OtsuTissueDetector", "HSVTissueDetector",
               "CLAMTissueDetector", "CombinedTissueDetector"],
    "tissue.base": ["TissueDetector"], "tissue.otsu": ["OtsuTissueDetector"],
    "tissue.hsv": ["HSVTissueDetector"], "tissue.clam": ["CLAMTissueDetector"],
    "tissue.combined": ["CombinedTissueDetector"],
    "transforms": ["PatchTransform", "ComposeTransforms", "HEDColorAugmentation",
                   "RandomFlipRotate", "ResizeTransform", "NormalizeTransform",
                   "AlbumentationsWrapper"],
    "transforms.base": ["PatchTransform", "ComposeTransforms"],
    "transforms.albumentations": ["AlbumentationsWrapper"],
    "transforms.geometric": ["RandomFlipRotate"], "transforms.hed": ["HEDColorAugmentation"],
    "transforms.normalize": ["NormalizeTransform"], "transforms.resize": ["ResizeTransform"],
    "filters": ["PatchFilter", "HSVPatchFilter"], "filters.base": ["PatchFilter"],
    "filters.hsv": ["HSVPatchFilter"],
    "datasets": ["DatasetAdapter", "TCGAAdapter", "query_tcga_slides",
                 "download_tcga_slides", "save_manifest"],
    "datasets.base": ["DatasetAdapter"],
    "datasets.tcga": ["TCGAAdapter", "query_tcga_slides", "download_tcga_slides",
                      "save_manifest"],
    "sampling": ["PatchSampler", "RandomSampler", "GridSampler", "MultiMagnificationSampler",
                 "ContinuousMagnificationSampler", "CoordinatePool",
                 "MultiLevelCoordinatePool", "enumerate_grid_coordinates"],
    "sampling.base": ["PatchSampler", "CoordinatePool", "MultiLevelCoordinatePool",
                      "enumerate_grid_coordinates"],
    "sampling.random": ["RandomSampler"], "sampling.grid": ["GridSampler"],
    "sampling.multi_magnification": ["MultiMagnificationSampler"],
    "sampling.continuous_magnification": ["ContinuousMagnificationSampler"],
    "slide": ["SlideHandle"], "pipeline": ["PatchPipeline", "PipelineStats"],
    "types": ["PatchCoordinate", "PatchResult", "SlideMetadata", "SlideProperties",
              "TissueMask", "WSI_EXTENSIONS", "resolve_slide_paths"],
    "views": ["CropParams", "RandomResizedCrop", "ViewConfig", "expand_view_names"],
}


@pytest.mark.parametrize("module", sorted(TREE))
def test_wsistream_module_tree_with_one_definition_per_name(module):
    mod = importlib.import_module(f"wsi_streamer.patches.{module}")
    for name in TREE[module]:
        obj = getattr(mod, name)
        if isinstance(obj, type) or callable(obj):
            home = importlib.import_module(obj.__module__)
            assert getattr(home, name) is obj  # a re-export of the one definition


class MemoryBackend(SlideBackend):
    """wsistream's documented extension point, written as its users write it."""

    opened: list[str] = []
    lock = threading.Lock()

    def __init__(self, *, token: str = "default") -> None:
        self.token = token
        self.path: str | None = None
        self.reading = False

    def open(self, path: str) -> None:
        if not path.startswith("memory://"):
            raise FileNotFoundError(path)
        self.path = path
        with MemoryBackend.lock:
            MemoryBackend.opened.append(path)

    def close(self) -> None:
        self.path = None

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        assert self.path is not None and not self.reading  # one read at a time per slide
        self.reading = True
        try:
            return np.full((height, width, 4), 90, dtype=np.uint8)  # RGBA: alpha dropped
        finally:
            self.reading = False

    def get_thumbnail(self, size: tuple[int, int]) -> np.ndarray:
        w, h = size
        thumb = np.full((h, w, 3), 240, dtype=np.uint8)
        thumb[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 80
        return thumb

    def get_properties(self) -> SlideProperties:
        assert self.path is not None
        return SlideProperties(path=self.path, dimensions=(4096, 4096), level_count=2,
                               level_dimensions=((4096, 4096), (2048, 2048)),
                               level_downsamples=(1.0, 2.0), mpp=0.25, vendor="memory")


def test_a_user_backend_with_its_own_scheme_runs_through_the_pipeline():
    MemoryBackend.opened = []
    backend = MemoryBackend(token="secret")
    paths = [f"memory://slide_{i}.svs" for i in range(3)]
    pipe = PatchPipeline(paths, backend=backend, sampler=RandomSampler(patch_size=128, seed=1),
                         patches_per_slide=4, pool_size=2, seed=3, cache_dir=None)
    results = list(pipe)
    assert len(results) == 12
    assert {r.coordinate.slide_path for r in results} == set(paths)
    assert all(r.image.shape == (128, 128, 3) and r.image.dtype == np.uint8 for r in results)
    assert sorted(MemoryBackend.opened) == paths  # each slide opened once, in a copy
    assert backend.path is None  # the user's object itself is never opened
    assert copy.deepcopy(backend).token == "secret"
    assert pipe.stats_dict()["pipeline/slides_processed"] == 3


def test_slide_handle_opens_a_user_backend_itself():
    backend = MemoryBackend()
    with SlideHandle("memory://one.svs", backend=backend) as slide:
        assert backend.path == "memory://one.svs"
        assert slide.properties.dimensions == (4096, 4096)
        assert slide.read_region(0, 0, 64, 32, level=1).shape == (32, 64, 3)
    assert backend.path is None


def test_our_backends_refuse_unknown_schemes():
    with pytest.raises(ValueError, match="only local paths"):
        PatchPipeline(["memory://slide_0.svs"], cache_dir=None)


def test_tiffslide_backend_reads_natively_with_one_warning(island_paths):
    from wsi_streamer.patches.backends import NativeBackend, TiffSlideBackend
    from wsi_streamer.patches.backends import tiffslide as module

    module._warned.clear()
    with pytest.warns(UserWarning, match="native reader"):
        backend = TiffSlideBackend()
    with warnings_as_errors():
        TiffSlideBackend()  # once per process
    assert isinstance(backend, NativeBackend)
    with pytest.raises(RuntimeError, match=r"not open; call open\(\) first"):
        backend.get_properties()
    backend.open(island_paths[0])
    try:
        assert backend.get_properties().level_count >= 1
        assert backend.read_region(0, 0, 0, 16, 8).shape == (8, 16, 3)
    finally:
        backend.close()


@contextlib.contextmanager
def warnings_as_errors() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield
