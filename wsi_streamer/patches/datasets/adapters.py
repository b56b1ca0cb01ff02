"""Dataset adapters: slide path -> ``SlideMetadata`` (wsistream's adapters; no download helpers,
this library streams). Paths may be local paths or ``s3://`` URLs; they are split on "/" as text,
never through ``pathlib``."""

from __future__ import annotations

import logging
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from ..types import SlideMetadata

logger = logging.getLogger(__name__)

# GDC sample type codes: https://gdc.cancer.gov/resources-tcga-users/tcga-code-tables/sample-type-codes
TCGA_SAMPLE_TYPES: dict[str, str] = {
    "01": "Primary Solid Tumor",
    "02": "Recurrent Solid Tumor",
    "03": "Primary Blood Derived Cancer - Peripheral Blood",
    "04": "Recurrent Blood Derived Cancer - Bone Marrow",
    "05": "Additional - New Primary",
    "06": "Metastatic",
    "07": "Additional Metastatic",
    "08": "Human Tumor Original Cells",
    "09": "Primary Blood Derived Cancer - Bone Marrow",
    "10": "Blood Derived Normal",
    "11": "Solid Tissue Normal",
    "12": "Buccal Cell Normal",
    "13": "EBV Immortalized Normal",
    "14": "Bone Marrow Normal",
    "20": "Control Analyte",
    "40": "Recurrent Blood Derived Cancer - Peripheral Blood",
    "50": "Cell Lines",
    "60": "Primary Xenograft Tissue",
    "61": "Cell Line Derived Xenograft Tissue",
}

FROZEN_SECTIONS = frozenset({"TS", "BS", "MS"})  # top, bottom, middle; DX is diagnostic FFPE

# TCGA-{TSS}-{participant}-{sample code}{vial}-{portion}-{slide}, then ".UUID..." or the end.
_TCGA_BARCODE = re.compile(
    r"^TCGA-(?P<tss>[A-Z0-9]{2})-(?P<participant>[A-Z0-9]{4})-(?P<sample>\d{2})(?P<vial>[A-Z])"
    r"-(?P<portion>\d{2})-(?P<slide>[A-Z]{2}[A-Z0-9])(?:\.(?P<rest>.*))?$")
_UUID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")


class DatasetAdapter(ABC):
    """Parses dataset metadata out of a slide path (local path or URL string)."""

    @abstractmethod
    def parse_metadata(self, slide_path: str) -> SlideMetadata:
        """Metadata for ``slide_path``; must not raise for an unexpected name (fill what is
        known and say why in ``extra``)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def path_parts(slide_path: str | os.PathLike[str]) -> list[str]:
    """The non-empty "/"-separated segments of a path or URL (``s3://b/k`` -> ``["s3:", "b",
    "k"]``; on Windows "\\" also separates)."""
    text = os.fspath(slide_path).replace(os.sep, "/")
    return [part for part in text.split("/") if part]


def strip_extension(filename: str) -> str:
    """``filename`` without its last suffix (``a.b.svs`` -> ``a.b``), as ``PurePath.stem``."""
    stem, dot, suffix = filename.rpartition(".")
    return stem if dot and stem and suffix else filename


@dataclass
class TCGAAdapter(DatasetAdapter):
    """TCGA slide barcodes (``TCGA-A1-A0SB-01Z-00-DX1.<UUID>.svs``) -> patient id
    (``TCGA-A1-A0SB``), tissue source site as ``tissue_type``, sample type from the GDC code
    table, cancer type from ``cancer_type`` or else a ``TCGA-*`` parent folder (``TCGA-BRCA``).
    ``extra``: tissue_source_site, vial, portion, slide_id, slide_section, is_frozen,
    sample_code, barcode (and uuid when the name has one). A name that is not a TCGA slide
    barcode gives ``dataset_name="TCGA"``, empty fields and ``extra["parse_error"]``. Logs one
    warning per adapter for each kind of problem, then debug lines."""

    cancer_type: str | None = None
    _warned_barcode: bool = field(default=False, init=False, repr=False, compare=False)
    _warned_cancer: bool = field(default=False, init=False, repr=False, compare=False)

    def parse_metadata(self, slide_path: str) -> SlideMetadata:
        path = os.fspath(slide_path)
        parts = path_parts(path)
        filename = parts[-1] if parts else ""
        stem = strip_extension(filename)
        match = _TCGA_BARCODE.match(stem)
        if match is None:
            self._note("barcode", "TCGAAdapter: %r is not a TCGA slide barcode "
                       "(TCGA-TSS-PART-01Z-00-DX1...); its metadata is empty", stem)
            return SlideMetadata(slide_path=path, dataset_name="TCGA",
                                 extra={"parse_error": f"Could not parse barcode from: {stem}"})
        tss, participant = match["tss"], match["participant"]
        sample_code, slide_id = match["sample"], match["slide"]
        barcode = f"TCGA-{tss}-{participant}-{sample_code}{match['vial']}-{match['portion']}-" \
                  f"{slide_id}"
        section = slide_id[:2]
        extra: dict[str, object] = {
            "tissue_source_site": tss, "vial": match["vial"], "portion": match["portion"],
            "slide_id": slide_id, "slide_section": section,
            "is_frozen": section in FROZEN_SECTIONS, "sample_code": sample_code,
            "barcode": barcode,
        }
        uuid = _UUID.match(match["rest"] or "")
        if uuid is not None:
            extra["uuid"] = uuid.group(0)
        return SlideMetadata(
            slide_path=path, dataset_name="TCGA", patient_id=f"TCGA-{tss}-{participant}",
            tissue_type=tss, cancer_type=self._cancer_type(parts),
            sample_type=TCGA_SAMPLE_TYPES.get(sample_code, f"Unknown ({sample_code})"),
            extra=extra)

    def _cancer_type(self, parts: list[str]) -> str | None:
        if self.cancer_type is not None:
            return self.cancer_type
        parent = parts[-2] if len(parts) >= 2 else ""
        if parent.startswith("TCGA-") and len(parent) > len("TCGA-"):
            return parent
        self._note("cancer", "TCGAAdapter: parent folder %r is not a TCGA project (e.g. "
                   "TCGA-BRCA); cancer_type is None (set TCGAAdapter(cancer_type=...) or put "
                   "slides under TCGA-XXXX/)", parent)
        return None

    def _note(self, kind: str, message: str, value: str) -> None:
        attribute = f"_warned_{kind}"
        if getattr(self, attribute):
            logger.debug(message, value)
            return
        setattr(self, attribute, True)
        logger.warning(message, value)

    def __repr__(self) -> str:
        return f"TCGAAdapter(cancer_type={self.cancer_type!r})"


__all__ = ["TCGA_SAMPLE_TYPES", "DatasetAdapter", "TCGAAdapter", "path_parts",
           "strip_extension"]
