"""Dataset adapters (wsistream's ``datasets`` package: the adapters are in ``adapters``, the
TCGA/GDC helpers in ``gdc``)."""

from .adapters import (
    TCGA_SAMPLE_TYPES,
    DatasetAdapter,
    TCGAAdapter,
    path_parts,
    strip_extension,
)
from .gdc import download_tcga_slides, query_tcga_slides, save_manifest

__all__ = ["TCGA_SAMPLE_TYPES", "DatasetAdapter", "TCGAAdapter", "download_tcga_slides",
           "path_parts", "query_tcga_slides", "save_manifest", "strip_extension"]
