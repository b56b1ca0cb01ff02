"""wsistream's ``datasets.tcga`` path: the TCGA adapter (``adapters``) and the GDC helpers
(``gdc``)."""

from .adapters import TCGA_SAMPLE_TYPES, TCGAAdapter
from .gdc import download_tcga_slides, query_tcga_slides, save_manifest

__all__ = ["TCGA_SAMPLE_TYPES", "TCGAAdapter", "download_tcga_slides", "query_tcga_slides",
           "save_manifest"]
