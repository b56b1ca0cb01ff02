"""wsistream's ``tissue.otsu`` path: Otsu (defined in ``detectors``)."""

from .detectors import OtsuTissueDetector

__all__ = ["OtsuTissueDetector"]
