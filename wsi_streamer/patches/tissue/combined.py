"""wsistream's ``tissue.combined`` path: the AND of detectors (defined in ``detectors``)."""

from .detectors import CombinedTissueDetector

__all__ = ["CombinedTissueDetector"]
