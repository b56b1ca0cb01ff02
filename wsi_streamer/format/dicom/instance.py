"""One VL Whole Slide Microscopy instance (DICOM PS3.3 A.32.8) as a ``DicomImage``: what it
is (VOLUME level, LABEL, OVERVIEW, THUMBNAIL), how its frames are coded, and which frame is
each tile (TILED_FULL: row-major, the first focal plane and optical path; TILED_SPARSE: by
each frame's plane position). Refusals name the transfer syntax, photometric interpretation
or inconsistency (``UnsupportedFormat``, 415)."""

from __future__ import annotations

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
    concatenated: bool


def describe(source: Spans, header: Header) -> Instance:
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
    frames = int(ds.get("NumberOfFrames", 1) or 1)
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
    ranges = frame_ranges(source, header, frames, raw if codec == NATIVE else 4 * raw + (1 << 20))
    table = _tile_frames(ds, name, frames, tiles_x, tiles_y, tile_w, tile_h)
    tiles = np.zeros((tiles_x * tiles_y, 2), np.int64)
    present = table >= 0
    tiles[present] = ranges[table[present]]
    image = DicomImage(name, width, height, tile_w, tile_h, codec, flags[0], flags[1],
                       tiles.astype("<i8").tobytes())
    return Instance(kind, image, str(ds.get("SeriesInstanceUID", "")), _spacing(ds),
                    "ConcatenationUID" in ds)


def is_wsi(ds: Any) -> bool:
    """A VL Whole Slide Microscopy Image (its SOP class)."""
    return str(ds.get("SOPClassUID", "")) == WSI_SOP_CLASS


def kind_of(ds: Any) -> str:
    """``volume``, ``label``, ``macro``, ``thumbnail`` from ImageType's third value, else ""."""
    image_type = [str(v) for v in (ds.get("ImageType") or [])]
    return KINDS.get(image_type[2] if len(image_type) > 2 else "", "")


def _tile_frames(ds: Any, name: str, frames: int, tiles_x: int, tiles_y: int,
                 tile_w: int, tile_h: int) -> np.ndarray:
    """Per tile (row-major) the index of its frame, -1 for none."""
    organisation = str(ds.get("DimensionOrganizationType", "TILED_FULL") or "TILED_FULL")
    count = tiles_x * tiles_y
    if organisation == "TILED_FULL":
        if frames < count:
            raise UnsupportedFormat(f"DICOM {name!r}: {frames} frames for {tiles_x}x{tiles_y} "
                                    "tiles (TILED_FULL)")
        return np.arange(count, dtype=np.int64)  # the first focal plane and optical path
    if organisation != "TILED_SPARSE":
        raise UnsupportedFormat(f"DICOM {name!r}: dimension organisation {organisation!r} "
                                "is not supported (TILED_FULL, TILED_SPARSE)")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) != frames:
        raise UnsupportedFormat(f"DICOM {name!r}: {len(per_frame)} per-frame groups for "
                                f"{frames} frames (TILED_SPARSE)")
    table = np.full(count, -1, np.int64)
    first_z: float | None = None
    for index, groups in enumerate(per_frame):
        position = (groups.get("PlanePositionSlideSequence") or [None])[0]
        if position is None:
            raise UnsupportedFormat(f"DICOM {name!r}: frame {index} has no plane position")
        z = float(position.get("ZOffsetInSlideCoordinateSystem", 0) or 0)
        first_z = z if first_z is None else first_z
        column = int(position.get("ColumnPositionInTotalImagePixelMatrix", 0)) - 1
        row = int(position.get("RowPositionInTotalImagePixelMatrix", 0)) - 1
        if column % tile_w or row % tile_h:
            raise UnsupportedFormat(f"DICOM {name!r}: frame {index} at ({column + 1}, "
                                    f"{row + 1}) is off the tile grid")
        x, y = column // tile_w, row // tile_h
        if not (0 <= x < tiles_x and 0 <= y < tiles_y):
            raise UnsupportedFormat(f"DICOM {name!r}: frame {index} lies outside the image")
        if z == first_z and table[y * tiles_x + x] < 0:
            table[y * tiles_x + x] = index  # the first focal plane and optical path
    return table


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
