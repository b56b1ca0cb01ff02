"""TCGAAdapter: barcode parsing for local paths and s3:// URLs, cancer type, parse errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from wsi_streamer.patches.datasets import (
    TCGA_SAMPLE_TYPES,
    DatasetAdapter,
    TCGAAdapter,
    path_parts,
    strip_extension,
)

NAME = "TCGA-A1-A0SB-01Z-00-DX1.B34C267B-CAAA-4AB6-AD5C-276C26F997A1.svs"


def test_barcode_under_a_project_folder(tmp_path: Path) -> None:
    path = str(tmp_path / "TCGA-BRCA" / NAME)
    meta = TCGAAdapter().parse_metadata(path)
    assert meta.slide_path == path and meta.dataset_name == "TCGA"
    assert meta.patient_id == "TCGA-A1-A0SB"
    assert meta.tissue_type == "A1"
    assert meta.cancer_type == "TCGA-BRCA"
    assert meta.sample_type == "Primary Solid Tumor"
    assert meta.extra == {
        "tissue_source_site": "A1", "vial": "Z", "portion": "00", "slide_id": "DX1",
        "slide_section": "DX", "is_frozen": False, "sample_code": "01",
        "barcode": "TCGA-A1-A0SB-01Z-00-DX1", "uuid": "B34C267B-CAAA-4AB6-AD5C-276C26F997A1",
    }
    flat = meta.to_flat_dict()
    assert flat["cancer_type"] == "TCGA-BRCA" and '"barcode": "TCGA-A1-A0SB-01Z-00-DX1"' in \
        flat["extra"]


def test_barcode_in_an_s3_url() -> None:
    url = "s3://tcga-bucket/slides/TCGA-LUAD/TCGA-05-4244-11A-01-TS1.svs"
    meta = TCGAAdapter().parse_metadata(url)
    assert meta.slide_path == url
    assert meta.cancer_type == "TCGA-LUAD"
    assert meta.patient_id == "TCGA-05-4244"
    assert meta.sample_type == "Solid Tissue Normal"
    assert meta.extra["is_frozen"] is True and meta.extra["slide_section"] == "TS"
    assert "uuid" not in meta.extra
    bare = TCGAAdapter().parse_metadata(f"s3://bucket/{NAME}")
    assert bare.patient_id == "TCGA-A1-A0SB" and bare.cancer_type is None  # parent is a bucket


def test_override_unknown_code_and_pathlike(tmp_path: Path) -> None:
    meta = TCGAAdapter(cancer_type="TCGA-OV").parse_metadata(
        str(tmp_path / "TCGA-BRCA" / "TCGA-AA-BBBB-99B-02-BS2.tif"))
    assert meta.cancer_type == "TCGA-OV"
    assert meta.sample_type == "Unknown (99)"
    assert meta.extra["vial"] == "B" and meta.extra["portion"] == "02"
    via_path = TCGAAdapter().parse_metadata(tmp_path / "TCGA-COAD" / NAME)  # type: ignore[arg-type]
    assert via_path.cancer_type == "TCGA-COAD" and isinstance(via_path.slide_path, str)
    assert TCGA_SAMPLE_TYPES["06"] == "Metastatic" and len(TCGA_SAMPLE_TYPES) == 19


@pytest.mark.parametrize("name", [
    "slide-1.svs", "TCGA-A1-A0SB.svs", "TCGA-A1-A0SB-01Z-00-DX1-extra.svs",
    "tcga-a1-a0sb-01z-00-dx1.svs", "xTCGA-A1-A0SB-01Z-00-DX1.svs", "",
])
def test_non_matching_names_give_empty_fields(name: str) -> None:
    meta = TCGAAdapter().parse_metadata(f"s3://bucket/TCGA-BRCA/{name}")
    assert meta.dataset_name == "TCGA"
    assert meta.patient_id is None and meta.cancer_type is None and meta.sample_type is None
    assert meta.tissue_type is None
    assert "parse_error" in meta.extra and list(meta.extra) == ["parse_error"]


def test_warns_once_then_debug(caplog: pytest.LogCaptureFixture) -> None:
    adapter = TCGAAdapter()
    with caplog.at_level(logging.DEBUG, logger="wsi_streamer.patches.datasets"):
        adapter.parse_metadata("/data/a.svs")
        adapter.parse_metadata("/data/b.svs")
        adapter.parse_metadata(f"/data/{NAME}")
        adapter.parse_metadata(f"/other/{NAME}")
    levels = [(r.levelname, "barcode" in r.getMessage()) for r in caplog.records]
    assert levels == [("WARNING", True), ("DEBUG", True), ("WARNING", False), ("DEBUG", False)]


def test_helpers_and_base() -> None:
    assert path_parts("s3://b/TCGA-BRCA/x.svs") == ["s3:", "b", "TCGA-BRCA", "x.svs"]
    assert strip_extension("a.b.svs") == "a.b" and strip_extension("plain") == "plain"
    assert strip_extension(".hidden") == ".hidden"
    assert isinstance(TCGAAdapter(), DatasetAdapter)
    assert repr(TCGAAdapter("TCGA-X")) == "TCGAAdapter(cancer_type='TCGA-X')"
    with pytest.raises(TypeError):
        DatasetAdapter()  # type: ignore[abstract]
