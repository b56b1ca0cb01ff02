"""wsistream's ``tissue.base`` path: the detector base class (defined in ``detectors``)."""

from .detectors import TissueDetector

__all__ = ["TissueDetector"]
