"""The DICOM driver: a VL Whole Slide Microscopy series (one folder or key prefix, one object
per level and associated image: ``io.series``) or a single instance. Levels are the VOLUME
instances, largest first (one per size: the first by name); LABEL, OVERVIEW and THUMBNAIL are
the label, macro and thumbnail; mpp from level 0's PixelSpacing; the ICC profile from the
optical path shown. A concatenation (an image split over several objects) is one image; the
focal plane and optical path shown are the series id's selection (``planes``); level 0's
planes and paths are listed in ``SlideInfo`` (the metadata endpoint shows them)."""

from __future__ import annotations

from typing import Any

from ...errors import ImageNotInSeries, UnsupportedFormat
from ...io.range_reader import RangeReader
from ...io.series import Member, members_of, selection_of
from ...limits import MAX_ICC_BYTES
from ...records import Doc
from ..info import SlideInfo
from ..spans import Spans
from .codec import decode_structure, encode_structure
from .concatenation import concatenations
from .header import Header, is_dicom, read_header
from .instance import Instance, describe, is_wsi, kind_of
from .planes import DEFAULT, Selection, parse_selection
from .slide import DicomSlide
from .structure import DicomStructure

_PROPERTIES = ("Manufacturer", "ManufacturerModelName", "SoftwareVersions",
               "SeriesInstanceUID", "StudyInstanceUID", "ContainerIdentifier")


def parse(source: Spans) -> DicomStructure:
    members = members_of(source.reader) or (Member("", 0, source.size),)
    selection = parse_selection(selection_of(source.reader))
    headers = [read_header(source, member) for member in members]
    missing: list[tuple[int, ImageNotInSeries]] = []  # (pixels, why)
    instances = [i for i in (_described(source, parts, selection, missing)
                             for parts in concatenations(headers)) if i is not None]
    series = {i.series_uid for i in instances}
    if len(series) > 1:
        raise UnsupportedFormat(f"the objects belong to {len(series)} DICOM series, not one")
    volumes = sorted((i for i in instances if i.kind == "volume"),
                     key=lambda i: (-i.image.width * i.image.height, i.image.name))
    if not volumes and missing:
        raise max(missing, key=lambda found: found[0])[1]  # naming the largest image's
    if not volumes:
        raise UnsupportedFormat("the DICOM series has no VOLUME image (only "
                                f"{', '.join(sorted({i.kind or 'other' for i in instances}))})")
    levels: list[Instance] = []
    for instance in volumes:
        if not levels or instance.image.width < levels[-1].image.width:
            levels.append(instance)
    base = levels[0]
    associated: dict[str, Instance] = {}
    for instance in instances:
        if instance.kind in ("label", "macro", "thumbnail"):
            associated.setdefault(instance.kind, instance)
    mpp_y, mpp_x = ((s * 1000.0 for s in base.spacing_mm) if base.spacing_mm
                    else (None, None))
    dataset = next(h for h in headers if h.member.name == base.image.name).dataset
    props = [(f"dicom.{key}", str(dataset.get(key))) for key in _PROPERTIES
             if dataset.get(key) not in (None, "")]
    z, path = base.selected
    return DicomStructure(tuple(i.image for i in levels),
                          tuple((name, i.image) for name, i in sorted(associated.items())),
                          tuple(props), mpp_x, mpp_y, _icc(headers, path),
                          base.planes.focal_planes, base.planes.optical_paths,
                          f"z={z},path={path}")


def _described(source: Spans, parts: list[Header], selection: Selection,
               missing: list[tuple[int, ImageNotInSeries]]) -> Instance | None:
    """The instance; None for a label, overview or thumbnail this driver cannot decode (the
    slide is served without it) and for a VOLUME image without the selected focal plane or
    optical path (added to ``missing``: the pyramid is the levels that have it),
    ``UnsupportedFormat`` for anything else (another SOP class in the series refuses it,
    whatever its image type). ``selection`` applies to VOLUME images (the others show their
    first plane and path)."""
    header = parts[0]
    try:
        if kind_of(header.dataset) != "volume":
            selection = DEFAULT
        return describe(source, parts, selection)
    except ImageNotInSeries as exc:
        ds = header.dataset
        missing.append((int(ds.get("TotalPixelMatrixColumns", 0) or 0) * int(
            ds.get("TotalPixelMatrixRows", 0) or 0), exc))
        return None
    except UnsupportedFormat:
        if is_wsi(header.dataset) and kind_of(header.dataset) in ("label", "macro",
                                                                   "thumbnail"):
            return None
        raise


def _icc(headers: list[Header], path: str) -> bytes | None:
    """The ICC profile of optical path ``path`` (else the first one that has a profile)."""
    for header in headers:
        paths = header.dataset.get("OpticalPathSequence") or []
        chosen = [p for p in paths if str(p.get("OpticalPathIdentifier", "")) == path]
        profile = (chosen or paths)[0].get("ICCProfile") if paths else None
        if profile:
            return bytes(profile) if len(profile) <= MAX_ICC_BYTES else None
    return None


class DicomDriver:
    """``FormatDriver`` for DICOM WSI series."""

    name = "dicom"
    label = "DICOM WSI"
    extensions: tuple[str, ...] = ()  # a series is a folder: io.series lists and opens it
    recognises: tuple[str, ...] = ()

    def sniff(self, head: bytes) -> bool:
        return is_dicom(head)

    def parse(self, source: Spans) -> DicomStructure:
        return parse(source)

    def info(self, structure: DicomStructure) -> SlideInfo:
        return structure.info

    def open(self, reader: RangeReader, structure: DicomStructure) -> DicomSlide:
        return DicomSlide(reader, structure)

    def encode(self, structure: DicomStructure) -> dict[str, Any]:
        return encode_structure(structure)

    def decode(self, doc: dict[str, Any]) -> DicomStructure:
        return decode_structure(Doc(doc, "structure"))


DRIVER = DicomDriver()
