"""wsistream's ``tissue.clam`` path: CLAM's (defined in ``detectors``)."""

from .detectors import CLAMTissueDetector

__all__ = ["CLAMTissueDetector"]
