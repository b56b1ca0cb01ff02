"""TCGA helpers against a loopback fake of the GDC API (tests/fixtures/fake_gdc.py, from its
documented responses; no test reaches the internet): the files endpoint paged by ``from``
until ``total`` with wsistream's filters, stratified seeded subsampling, the gdc-client
manifest, and downloads through ``/data/{id}`` checked by size and MD5, kept when present,
failures named after the others are saved."""

from __future__ import annotations

import hashlib
import json
import urllib.error
from pathlib import Path

import pytest

from tests.fixtures.fake_gdc import GdcFile, serve_gdc
from wsi_streamer.patches.datasets import download_tcga_slides, query_tcga_slides, save_manifest
from wsi_streamer.patches.datasets.gdc import _get


def slide(n: int, project: str, **kw: str) -> GdcFile:
    return GdcFile(file_id=f"uuid-{n}", file_name=f"TCGA-{n:02d}-DX1.svs", project_id=project,
                   content=bytes([n]) * (1000 + n), **kw)  # type: ignore[arg-type]


FILES = [slide(1, "TCGA-BRCA"), slide(2, "TCGA-BRCA"), slide(3, "TCGA-BRCA"),
         slide(4, "TCGA-BRCA", experimental_strategy="Tissue Slide"),
         slide(5, "TCGA-LUAD"), slide(6, "TCGA-LUAD"),
         slide(7, "TCGA-LUAD", data_format="TXT")]


def ids(records: list[dict[str, object]]) -> list[object]:
    return [r["file_id"] for r in records]


def test_query_pages_by_from_until_total_with_wsistream_filters() -> None:
    with serve_gdc(FILES, max_page=2) as gdc:  # the server gives 2 hits per page
        records = query_tcga_slides(["TCGA-BRCA", "TCGA-LUAD"], api_url=gdc.url)
        pages = [q for path, q in gdc.requests if path == "/files"]
        assert ids(records) == ["uuid-1", "uuid-2", "uuid-3", "uuid-5", "uuid-6"]
        assert [int(q["from"]) for q in pages] == [0, 2, 4]
        assert all(q["format"] == "JSON" for q in pages)
        assert records[3] == {"file_id": "uuid-5", "filename": "TCGA-05-DX1.svs",
                              "file_size": 1005, "cancer_type": "TCGA-LUAD",
                              "md5sum": hashlib.md5(b"\x05" * 1005).hexdigest(),
                              "state": "released"}
        filters = json.loads(pages[0]["filters"])
        assert filters["op"] == "and"
        assert ids(query_tcga_slides("TCGA-BRCA", slide_type="frozen",
                                     api_url=gdc.url)) == ["uuid-4"]
        assert len(query_tcga_slides("TCGA-BRCA", slide_type="all", api_url=gdc.url)) == 4
        assert len(query_tcga_slides(api_url=gdc.url)) == 5  # every project, SVS only
        gdc.requests.clear()
        assert query_tcga_slides("TCGA-NONE", api_url=gdc.url) == []
        assert len(gdc.requests) == 1
    with pytest.raises(ValueError, match="slide_type"):
        query_tcga_slides(slide_type="bogus", api_url=gdc.url)


def test_stratified_subsampling_is_seeded() -> None:
    with serve_gdc(FILES) as gdc:
        first = query_tcga_slides(max_per_cancer_type=1, seed=3, api_url=gdc.url)
        again = query_tcga_slides(max_per_cancer_type=1, seed=3, api_url=gdc.url)
    assert ids(first) == ids(again)
    assert [r["cancer_type"] for r in first] == ["TCGA-BRCA", "TCGA-LUAD"]


def test_save_manifest_writes_a_gdc_client_manifest(tmp_path: Path) -> None:
    with serve_gdc(FILES) as gdc:
        records = query_tcga_slides("TCGA-LUAD", api_url=gdc.url)
    path = save_manifest(records, tmp_path / "out" / "manifest.txt")
    lines = path.read_text().splitlines()
    assert lines[0] == "id\tfilename\tmd5\tsize\tstate"
    md5 = hashlib.md5(bytes([5]) * 1005).hexdigest()
    assert lines[1] == f"uuid-5\tTCGA-05-DX1.svs\t{md5}\t1005\treleased"
    assert len(lines) == 3


def test_download_checks_keeps_and_names_failures(tmp_path: Path) -> None:
    corrupt = slide(8, "TCGA-LUAD", md5_override="0" * 32)
    with serve_gdc([*FILES, corrupt]) as gdc:
        records = query_tcga_slides(api_url=gdc.url)
        saved = download_tcga_slides(records[:3], tmp_path, api_url=gdc.url, max_workers=2)
        assert [p.relative_to(tmp_path).as_posix() for p in saved] == [
            "TCGA-BRCA/TCGA-01-DX1.svs", "TCGA-BRCA/TCGA-02-DX1.svs",
            "TCGA-BRCA/TCGA-03-DX1.svs"]
        assert saved[0].read_bytes() == b"\x01" * 1001
        gdc.requests.clear()
        assert download_tcga_slides(records[:3], tmp_path, api_url=gdc.url) == saved
        assert gdc.requests == []  # all present with the right size: nothing fetched
        flat = download_tcga_slides(records[3:5], tmp_path / "flat", organize_by="flat",
                                    api_url=gdc.url)
        assert sorted(p.name for p in flat) == ["TCGA-05-DX1.svs", "TCGA-06-DX1.svs"]
        bad = query_tcga_slides(api_url=gdc.url)
        bad = [r for r in bad if r["file_id"] in ("uuid-8", "uuid-5")]
        missing = {**bad[0], "file_id": "uuid-404", "filename": "gone.svs"}
        with pytest.raises(RuntimeError, match=r"2/3 downloads failed.*TCGA-08-DX1.svs"):
            download_tcga_slides([*bad, missing], tmp_path / "bad", api_url=gdc.url)
    assert sorted(p.name for p in (tmp_path / "bad").rglob("*")
                  if p.is_file()) == ["TCGA-05-DX1.svs"]  # no .partial left behind


def test_an_http_error_is_closed_before_it_propagates() -> None:
    """An HTTP error holds the response and its socket: it is closed, not left to the
    collector (whose ResourceWarning surfaced in a later test)."""
    with serve_gdc(FILES) as gdc:
        with pytest.raises(urllib.error.HTTPError) as info, _get(f"{gdc.url}/data/uuid-404"):
            pass
    assert info.value.code == 404
    assert info.value.fp is None or info.value.fp.closed
