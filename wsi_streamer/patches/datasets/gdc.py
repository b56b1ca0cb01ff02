"""TCGA slides from the GDC API, kept for wsistream users: ``query_tcga_slides`` (the ``/files``
endpoint, paginated), ``save_manifest`` (a ``gdc-client`` manifest) and
``download_tcga_slides`` (each file of a manifest from ``/data/{file_id}`` into a folder).

Downloading whole slides is what this package exists to avoid: for training, put the slides
in a bucket once (or use a public one) and stream patches from ``s3://...`` paths; only the
tiles under each patch are read. ``api_url`` points the helpers at another GDC deployment (or
at a test server). Requests use the standard library only."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ... import limits

logger = logging.getLogger(__name__)
GDC_API = "https://api.gdc.cancer.gov"
SLIDE_TYPES = {"diagnostic": "Diagnostic Slide", "frozen": "Tissue Slide"}  # experimental_strategy
FIELDS = ("file_id", "file_name", "file_size", "md5sum", "state", "cases.project.project_id")
MANIFEST_HEADER = ("id", "filename", "md5", "size", "state")
Record = dict[str, Any]


def gdc_filters(cancer_types: str | Iterable[str] | None, slide_type: str) -> dict[str, Any]:
    """The GDC filter of SVS slide images, of ``cancer_types`` (project ids) and
    ``slide_type`` ("diagnostic", "frozen" or "all")."""
    if slide_type not in ("diagnostic", "frozen", "all"):
        raise ValueError(f"slide_type must be 'diagnostic', 'frozen' or 'all', "
                         f"got {slide_type!r}")

    def term(op: str, name: str, value: Any) -> dict[str, Any]:
        return {"op": op, "content": {"field": name, "value": value}}

    terms = [term("=", "files.data_type", "Slide Image"), term("=", "files.data_format", "SVS")]
    if cancer_types is not None:
        projects = [cancer_types] if isinstance(cancer_types, str) else list(cancer_types)
        terms.append(term("=", "cases.project.project_id", projects[0]) if len(projects) == 1
                     else term("in", "cases.project.project_id", projects))
    if slide_type != "all":
        terms.append(term("=", "files.experimental_strategy", SLIDE_TYPES[slide_type]))
    return {"op": "and", "content": terms}


@contextmanager
def _get(url: str) -> Iterator[Any]:
    """The response to ``GET url`` (closed on exit). An ``HTTPError`` holds the response and
    its socket: it is closed before it propagates (otherwise the socket lingers until the
    exception is collected, with a ``ResourceWarning``)."""
    try:
        resp = urllib.request.urlopen(url, timeout=limits.GDC_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise
    with resp:
        yield resp


def query_files(filters: dict[str, Any], *, api_url: str = GDC_API,
                page_size: int = limits.GDC_PAGE_SIZE) -> list[dict[str, Any]]:
    """Every hit of ``filters`` on ``{api_url}/files``, page after page (``from``/``size``)
    until ``pagination.total`` is reached or a page is empty. ``RuntimeError`` past
    ``limits.GDC_MAX_PAGES``; urllib's errors for a failed request."""
    hits: list[dict[str, Any]] = []
    for _ in range(limits.GDC_MAX_PAGES):
        query = urllib.parse.urlencode({"filters": json.dumps(filters), "fields": ",".join(FIELDS),
                                        "format": "JSON", "size": page_size, "from": len(hits)})
        with _get(f"{api_url.rstrip('/')}/files?{query}") as resp:
            data = json.load(resp)["data"]
        page = data["hits"]
        hits.extend(page)
        if not page or len(hits) >= int(data["pagination"]["total"]):
            return hits
    raise RuntimeError(f"GDC query did not end within {limits.GDC_MAX_PAGES} pages")


def _record(hit: dict[str, Any]) -> Record:
    cases = hit.get("cases") or [{}]
    project = (cases[0].get("project") or {}).get("project_id", "unknown")
    return {"file_id": hit["file_id"], "filename": hit["file_name"],
            "file_size": int(hit["file_size"]), "cancer_type": project,
            "md5sum": hit.get("md5sum", ""), "state": hit.get("state", "")}


def query_tcga_slides(cancer_types: str | list[str] | None = None,
                      slide_type: str = "diagnostic", max_per_cancer_type: int | None = None,
                      seed: int | None = 42, *, api_url: str = GDC_API) -> list[Record]:
    """TCGA slide files as records (``file_id, filename, file_size, cancer_type, md5sum,
    state``). ``max_per_cancer_type`` draws at most that many per project (seeded, projects in
    sorted order); ``[]`` when nothing matches."""
    records = [_record(hit) for hit in query_files(gdc_filters(cancer_types, slide_type),
                                                   api_url=api_url)]
    if max_per_cancer_type is not None:
        rng = np.random.default_rng(seed)
        groups: dict[str, list[Record]] = {}
        for rec in records:
            groups.setdefault(rec["cancer_type"], []).append(rec)
        records = []
        for project in sorted(groups):
            group = groups[project]
            if len(group) > max_per_cancer_type:
                picks = rng.choice(len(group), size=max_per_cancer_type, replace=False)
                group = [group[int(i)] for i in picks]
            records.extend(group)
    total = sum(r["file_size"] for r in records)
    logger.info("GDC: %d slides, %.1f GB", len(records), total / 2**30)
    return records


def save_manifest(manifest: list[Record], path: str | os.PathLike[str]) -> Path:
    """``manifest`` as a GDC manifest TSV (``gdc-client download -m``): id, filename, md5,
    size, state. Parent folders are created."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = ["\t".join(MANIFEST_HEADER)]
    rows += ["\t".join(str(rec[k]) for k in ("file_id", "filename", "md5sum", "file_size",
                                              "state")) for rec in manifest]
    out.write_text("\n".join(rows) + "\n")
    return out


def _destination(rec: Record, output_dir: Path, organize_by: str) -> Path:
    name = os.path.basename(str(rec["filename"]))
    if not name or name in (".", ".."):
        raise ValueError(f"GDC record {rec.get('file_id')!r} has no usable file name")
    folder = (output_dir / os.path.basename(str(rec["cancer_type"]))
              if organize_by == "cancer_type" else output_dir)
    return folder / name


def _download(rec: Record, dest: Path, chunk_size: int, api_url: str) -> Path:
    """One file into ``dest`` (through ``dest.partial``, renamed when the size and MD5 match)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    digest = hashlib.md5(usedforsecurity=False)
    url = f"{api_url.rstrip('/')}/data/{urllib.parse.quote(rec['file_id'], safe='')}"
    try:
        with _get(url) as resp, open(partial, "wb") as out:
            while chunk := resp.read(chunk_size):
                digest.update(chunk)
                out.write(chunk)
        size = partial.stat().st_size
        if size != rec["file_size"] or (rec.get("md5sum") and digest.hexdigest() != rec["md5sum"]):
            raise OSError(f"{rec['filename']}: got {size} bytes, md5 {digest.hexdigest()}; "
                          f"expected {rec['file_size']}, md5 {rec.get('md5sum')}")
        partial.replace(dest)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return dest


def download_tcga_slides(manifest: list[Record], output_dir: str | os.PathLike[str],
                         organize_by: str = "cancer_type", skip_existing: bool = True,
                         max_workers: int = 4, chunk_size: int = 8192, *,
                         api_url: str = GDC_API) -> list[Path]:
    """Each file of ``manifest`` into ``output_dir`` (``organize_by="cancer_type"``: one folder
    per project; "flat": all in one), ``max_workers`` at a time; a file already there with the
    right size is kept when ``skip_existing``. Returns the paths (kept ones first);
    ``RuntimeError`` naming the files that failed, after the others are saved. See the module
    docstring: streaming from a bucket is the better road."""
    if organize_by not in ("cancer_type", "flat"):
        raise ValueError(f"organize_by must be 'cancer_type' or 'flat', got {organize_by!r}")
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    kept: list[Path] = []
    todo: list[tuple[Record, Path]] = []
    for rec in manifest:
        dest = _destination(rec, root, organize_by)
        if skip_existing and dest.is_file() and dest.stat().st_size == rec["file_size"]:
            kept.append(dest)
        else:
            todo.append((rec, dest))
    saved: list[Path] = list(kept)
    failed: list[str] = []
    with ThreadPoolExecutor(max(1, max_workers)) as pool:
        futures = [(rec, pool.submit(_download, rec, dest, chunk_size, api_url))
                   for rec, dest in todo]
        for rec, future in futures:
            try:
                saved.append(future.result())
            except Exception as exc:  # noqa: BLE001 - reported together below
                logger.warning("download of %s failed: %s", rec["filename"], exc)
                failed.append(rec["filename"])
    if failed:
        raise RuntimeError(f"{len(failed)}/{len(todo)} downloads failed: {failed}; "
                           f"{len(saved)} slides saved in {root}")
    return saved
