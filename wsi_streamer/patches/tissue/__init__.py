"""Tissue detectors (wsistream's ``tissue`` package; the code is in ``detectors``)."""

from .detectors import (
    CLAMTissueDetector,
    CombinedTissueDetector,
    Downsample,
    HSVTissueDetector,
    OtsuTissueDetector,
    TissueDetector,
    normalize_downsample,
)

__all__ = [
    "TissueDetector",
    "OtsuTissueDetector",
    "HSVTissueDetector",
    "CombinedTissueDetector",
    "CLAMTissueDetector",
    "Downsample",
    "normalize_downsample",
]
