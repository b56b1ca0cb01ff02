"""wsistream's ``tissue.hsv`` path: HSV box (defined in ``detectors``)."""

from .detectors import HSVTissueDetector

__all__ = ["HSVTissueDetector"]
