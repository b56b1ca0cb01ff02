"""One VL Whole Slide Microscopy instance (DICOM PS3.3 A.32.8) as a ``DicomImage``: what it
is (VOLUME level, LABEL, OVERVIEW, THUMBNAIL), how its frames are coded, and which frame is
each tile (TILED_FULL: row-major, the first focal plane and optical path; TILED_SPARSE: by
each frame's plane position). Refusals name the transfer syntax, photometric interpretation
or inconsistency (``UnsupportedFormat``, 415)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import LimitExceeded, UnsupportedFormat
from ...limits import (
    MAX_DICOM_FRAMES,
    MAX_DIMENSION,
    MAX_TILE_SIDE,
    MAX_TILES_PER_LEVEL,
    MIN_TILE_SIDE,
    TILE_SIDE_MULTIPLE,
)
from ..spans import Spans
from .frames import frame_ranges
from .header import EXPLICIT_VR_LE, Header
from .planes import DEFAULT, Planes, Selection, full_frames, sparse_planes
from .structure import JP2K, JPEG, NATIVE, DicomImage

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2.4.50": JPEG,  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.90": JP2K,  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": JP2K,  # JPEG 2000
    "1.2.840.10008.1.2.4.201": JP2K,  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": JP2K,  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": JP2K,  # HTJ2K
    EXPLICIT_VR_LE: NATIVE,
}
# Photometric interpretations per codec -> (JPEG coded as RGB, JPEG 2000 needs YCbCr -> RGB)
PHOTOMETRICS = {
    JPEG: {"YBR_FULL_422": (False, False), "YBR_FULL": (False, False), "RGB": (True, False)},
    JP2K: {"YBR_ICT": (False, False), "YBR_RCT": (False, False), "RGB": (False, False),
           "YBR_FULL": (False, True)},
    NATIVE: {"RGB": (False, False)},
}
KINDS = {"VOLUME": "volume", "LABEL": "label", "OVERVIEW": "macro", "THUMBNAIL": "thumbnail"}


@dataclass(frozen=True, slots=True)
class Instance:
    kind: str  # volume, label, macro, thumbnail
    image: DicomImage
    series_uid: str
    spacing_mm: tuple[float, float] | None  # (between rows, between columns)
    planes: Planes
    selected: tuple[int, str]  # the focal plane index and optical path shown


def describe(source: Spans, parts: Sequence[Header], selection: Selection = DEFAULT
             ) -> Instance:
    """The instance of ``parts`` (one header, or a concatenation's parts in order: their
    frames end to end), showing ``selection``'s focal plane and optical path."""
    header = parts[0]
    ds, name = header.dataset, header.member.name
    sop = str(ds.get("SOPClassUID", ""))
    if not is_wsi(ds):
        raise UnsupportedFormat(f"DICOM {name!r} is not a VL Whole Slide Microscopy image "
                                f"(SOP class {_uid_name(sop)})")
    kind = kind_of(ds)
    syntax = header.transfer_syntax
    codec = TRANSFER_SYNTAXES.get(syntax)
    if codec is None:
        raise UnsupportedFormat(f"DICOM {name!r}: transfer syntax {_uid_name(syntax)} is not "
                                "supported (JPEG baseline, JPEG 2000, HTJ2K, explicit VR "
                                "little endian)")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    flags = PHOTOMETRICS[codec].get(photometric)
    if flags is None or int(ds.get("SamplesPerPixel", 0)) != 3 or int(
            ds.get("BitsAllocated", 0)) != 8:
        raise UnsupportedFormat(f"DICOM {name!r}: {photometric or 'no'} photometric "
                                f"interpretation with {ds.get('SamplesPerPixel')} samples of "
                                f"{ds.get('BitsAllocated')} bits is not supported with "
                                f"{_uid_name(syntax)}")
    if codec == NATIVE and int(ds.get("PlanarConfiguration", 0)) != 0:
        raise UnsupportedFormat(f"DICOM {name!r}: planar (colour-by-plane) pixels")
    tile_w, tile_h = int(ds.get("Columns", 0)), int(ds.get("Rows", 0))
    width = int(ds.get("TotalPixelMatrixColumns", tile_w))
    height = int(ds.get("TotalPixelMatrixRows", tile_h))
    frames = sum(int(part.dataset.get("NumberOfFrames", 1) or 1) for part in parts)
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise LimitExceeded("MAX_DIMENSION", f"DICOM {name!r} is {width}x{height} px")
    if not (0 < tile_w <= MAX_TILE_SIDE and 0 < tile_h <= MAX_TILE_SIDE):
        raise LimitExceeded("MAX_TILE_SIDE", f"DICOM {name!r} has {tile_w}x{tile_h} frames")
    if not 0 < frames <= MAX_DICOM_FRAMES:
        raise LimitExceeded("MAX_DICOM_FRAMES", f"DICOM {name!r} has {frames} frames")
    tiles_x, tiles_y = -(-width // tile_w), -(-height // tile_h)
    if kind == "volume" and tiles_x * tiles_y > 1 and (
            min(tile_w, tile_h) < MIN_TILE_SIDE or tile_w % TILE_SIDE_MULTIPLE
            or tile_h % TILE_SIDE_MULTIPLE):  # as TIFF levels: overviews reduce tiles evenly
        raise LimitExceeded("TILE_SIDE_MULTIPLE", f"DICOM {name!r}: {tile_w}x{tile_h} px "
                            f"frames; tiled levels need sides that are multiples of "
                            f"{TILE_SIDE_MULTIPLE}, at least {MIN_TILE_SIDE}")
    if tiles_x * tiles_y > MAX_TILES_PER_LEVEL:
        raise LimitExceeded("MAX_TILES_PER_LEVEL", f"DICOM {name!r} has {tiles_x}x{tiles_y} "
                            "tiles")
    raw = tile_w * tile_h * 3
    limit = raw if codec == NATIVE else 4 * raw + (1 << 20)
    ranges = np.concatenate([frame_ranges(source, part, int(
        part.dataset.get("NumberOfFrames", 1) or 1), limit) for part in parts])
    table, planes, selected = _tile_frames(ds, _per_frame(parts), name, frames, (
        tiles_x, tiles_y, tile_w, tile_h), selection)
    tiles = np.zeros((tiles_x * tiles_y, 2), np.int64)
    present = table >= 0
    tiles[present] = ranges[table[present]]
    image = DicomImage(name, width, height, tile_w, tile_h, codec, flags[0], flags[1],
                       tiles.astype("<i8").tobytes())
    return Instance(kind, image, str(ds.get("SeriesInstanceUID", "")), _spacing(ds),
                    planes, selected)


def _per_frame(parts: Sequence[Header]) -> list[Any]:
    """The Per-frame Functional Groups of every part, end to end."""
    return [groups for part in parts
            for groups in part.dataset.get("PerFrameFunctionalGroupsSequence") or []]


def is_wsi(ds: Any) -> bool:
    """A VL Whole Slide Microscopy Image (its SOP class)."""
    return str(ds.get("SOPClassUID", "")) == WSI_SOP_CLASS


def kind_of(ds: Any) -> str:
    """``volume``, ``label``, ``macro``, ``thumbnail`` from ImageType's third value, else ""."""
    image_type = [str(v) for v in (ds.get("ImageType") or [])]
    return KINDS.get(image_type[2] if len(image_type) > 2 else "", "")


def _tile_frames(ds: Any, per_frame: list[Any], name: str, frames: int,
                 grid: tuple[int, int, int, int], selection: Selection
                 ) -> tuple[np.ndarray, Planes, tuple[int, str]]:
    """Per tile (row-major) the index of its frame in the selected focal plane and optical
    path (-1 for none), the instance's planes, and the plane and path selected."""
    tiles_x, tiles_y, tile_w, tile_h = grid
    organisation = str(ds.get("DimensionOrganizationType", "TILED_FULL") or "TILED_FULL")
    count = tiles_x * tiles_y
    if organisation == "TILED_FULL":
        table, planes = full_frames(ds, frames, count, selection, name)
        return table, planes, planes.chosen(selection, name)
    if organisation != "TILED_SPARSE":
        raise UnsupportedFormat(f"DICOM {name!r}: dimension organisation {organisation!r} "
                                "is not supported (TILED_FULL, TILED_SPARSE)")
    if len(per_frame) != frames:
        raise UnsupportedFormat(f"DICOM {name!r}: {len(per_frame)} per-frame groups for "
                                f"{frames} frames (TILED_SPARSE)")
    z_index, path_index, planes = sparse_planes(ds, per_frame, name)
    z, path = planes.chosen(selection, name)
    wanted = (z_index == z) & (path_index == planes.optical_paths.index(path))
    table = np.full(count, -1, np.int64)
    for index in np.flatnonzero(wanted)[::-1]:  # the first frame of a place wins
        position = per_frame[index].PlanePositionSlideSequence[0]
        column = int(position.get("ColumnPositionInTotalImagePixelMatrix", 0)) - 1
        row = int(position.get("RowPositionInTotalImagePixelMatrix", 0)) - 1
        if column % tile_w or row % tile_h:
            raise UnsupportedFormat(f"DICOM {name!r}: frame {index} at ({column + 1}, "
                                    f"{row + 1}) is off the tile grid")
        x, y = column // tile_w, row // tile_h
        if not (0 <= x < tiles_x and 0 <= y < tiles_y):
            raise UnsupportedFormat(f"DICOM {name!r}: frame {index} lies outside the image")
        table[y * tiles_x + x] = index
    return table, planes, (z, path)


def _spacing(ds: Any) -> tuple[float, float] | None:
    """PixelSpacing (mm, between rows then columns) of the Shared Functional Groups."""
    try:
        measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        row, column = (float(v) for v in measures.PixelSpacing)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    return (row, column) if row > 0 and column > 0 else None


def _uid_name(uid: str) -> str:
    """A UID with its registered name when pydicom knows it (``CT Image Storage``)."""
    from pydicom.uid import UID

    try:
        known = UID(uid).name
    except Exception:  # noqa: BLE001 - an odd UID string is shown as given
        known = uid
    return f"{known} ({uid})" if known and known != uid else repr(uid)
