"""Patch streaming for training: wsistream's components and arguments on our range-request
reader (``from wsistream import X`` -> ``from wsi_streamer.patches import X``). The contract is
PATCHES.md; the torch layer is ``wsi_streamer.patches.torch``."""

from .backends import NativeBackend, OpenSlideBackend, SlideBackend
from .datasets import DatasetAdapter, TCGAAdapter
from .filters import HSVPatchFilter, PatchFilter
from .handle import SlideHandle
from .pipeline import PatchPipeline
from .sampling import (
    ContinuousMagnificationSampler,
    GridSampler,
    MultiMagnificationSampler,
    PatchSampler,
    RandomSampler,
)
from .tissue import (
    CLAMTissueDetector,
    CombinedTissueDetector,
    HSVTissueDetector,
    OtsuTissueDetector,
    TissueDetector,
)
from .transforms import (
    AlbumentationsWrapper,
    ComposeTransforms,
    HEDColorAugmentation,
    NormalizeTransform,
    PatchTransform,
    RandomFlipRotate,
    ResizeTransform,
)
from .types import (
    NoPatchesError,
    PatchCoordinate,
    PatchResult,
    SlideMetadata,
    SlideProperties,
    TissueMask,
)
from .views import CropParams, RandomResizedCrop, ViewConfig, expand_view_names

__all__ = [
    "AlbumentationsWrapper", "CLAMTissueDetector", "CombinedTissueDetector",
    "ComposeTransforms", "ContinuousMagnificationSampler", "CropParams", "DatasetAdapter",
    "GridSampler", "HEDColorAugmentation", "HSVPatchFilter", "HSVTissueDetector",
    "MultiMagnificationSampler", "NativeBackend", "NoPatchesError", "NormalizeTransform",
    "OpenSlideBackend", "OtsuTissueDetector", "PatchCoordinate", "PatchFilter",
    "PatchPipeline", "PatchResult", "PatchSampler", "PatchTransform", "RandomFlipRotate",
    "RandomResizedCrop", "RandomSampler", "ResizeTransform", "SlideBackend", "SlideHandle",
    "SlideMetadata", "SlideProperties", "TCGAAdapter", "TissueDetector", "TissueMask",
    "ViewConfig", "expand_view_names",
]
