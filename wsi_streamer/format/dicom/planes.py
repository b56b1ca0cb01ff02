"""Focal planes and optical paths of a VL WSI instance, and which one a slide shows.

A series id may end with ``@<selection>`` (``io.series.split_selection``): ``z=<index>``
picks a focal plane (0 = the lowest, in ascending Z), ``path=<identifier>`` an optical path
(its Optical Path Identifier), both as ``z=1,path=2``; without it, the first focal plane
and the first optical path. TILED_FULL orders frames by tile, then focal plane, then optical
path (PS3.3 C.7.6.17.3); TILED_SPARSE names each frame's Z (Plane Position (Slide)) and
optical path (Optical Path Identification, per frame or shared)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import ImageNotInSeries, UnsupportedFormat

_DEFAULT_PATH = "0"  # an instance that names no optical path has one (as wsidicom reads it)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which focal plane (index in ascending Z) and optical path (identifier; None: the
    first) the slide shows."""

    z: int = 0
    path: str | None = None


DEFAULT = Selection()


def parse_selection(text: str) -> Selection:
    """The selection ``z=<index>,path=<identifier>`` (either part optional; "" = default);
    ``UnsupportedFormat`` for anything else."""
    if not text:
        return DEFAULT
    z, path = 0, None
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if key == "z" and eq and value.isdigit() and len(value) <= 6:
            z = int(value)
        elif key == "path" and eq and value:
            path = value
        else:
            raise UnsupportedFormat(f"DICOM image selection {text[:80]!r}: expected "
                                    "z=<focal plane index>,path=<optical path identifier>")
    return Selection(z, path)


@dataclass(frozen=True, slots=True)
class Planes:
    """An instance's focal planes (Z in micrometres, ascending) and optical paths."""

    focal_planes: tuple[float, ...]
    optical_paths: tuple[str, ...]

    def chosen(self, selection: Selection, name: str) -> tuple[int, str]:
        """``(focal plane index, optical path)`` of ``selection``; ``ImageNotInSeries``
        naming what the instance holds when it has no such plane or path."""
        path = self.optical_paths[0] if selection.path is None else selection.path
        if selection.z >= len(self.focal_planes) or path not in self.optical_paths:
            raise ImageNotInSeries(
                f"DICOM {name!r} has no focal plane z={selection.z} and optical path "
                f"{path!r} (focal planes {describe_planes(self.focal_planes)}; optical paths "
                f"{', '.join(self.optical_paths)})")
        return selection.z, path


def describe_planes(planes: tuple[float, ...]) -> str:
    """``z=0: 0.0 um, z=1: 1.5 um``: how the metadata lists them."""
    return ", ".join(f"z={i}: {z:g} um" for i, z in enumerate(planes))


def _paths(ds: Any) -> list[str]:
    return [str(item.get("OpticalPathIdentifier", "")) for item in
            ds.get("OpticalPathSequence") or []]


def full_frames(ds: Any, frames: int, count: int, selection: Selection, name: str
                ) -> tuple[np.ndarray, Planes]:
    """TILED_FULL: per tile its frame index in the selected plane and path."""
    planes = int(ds.get("TotalPixelMatrixFocalPlanes", 1) or 1)
    paths = int(ds.get("NumberOfOpticalPaths", 1) or 1)
    identifiers = (_paths(ds) or [_DEFAULT_PATH])[:paths]
    if not 0 < planes <= frames or len(identifiers) != paths:
        raise UnsupportedFormat(f"DICOM {name!r}: {planes} focal planes and {paths} optical "
                                f"paths ({len(identifiers)} described)")
    if frames < count * planes * paths:
        raise UnsupportedFormat(f"DICOM {name!r}: {frames} frames for {count} tiles x "
                                f"{planes} focal planes x {paths} optical paths (TILED_FULL)")
    spacing = _slice_spacing_um(ds)
    found = Planes(tuple(i * spacing for i in range(planes)), tuple(identifiers))
    z, path = found.chosen(selection, name)
    first = count * (z + planes * identifiers.index(path))
    return np.arange(first, first + count, dtype=np.int64), found


def _slice_spacing_um(ds: Any) -> float:
    try:
        measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        return float(measures.SpacingBetweenSlices) * 1000.0
    except (AttributeError, IndexError, TypeError, ValueError):
        return 1.0  # unknown: listed by index


def sparse_planes(ds: Any, per_frame: list[Any], name: str
                  ) -> tuple[np.ndarray, np.ndarray, Planes]:
    """TILED_SPARSE: each frame's focal plane index and optical path index, and the planes."""
    shared = _shared_path(ds)
    zs = np.zeros(len(per_frame), np.float64)
    path_names: list[str] = []
    for index, groups in enumerate(per_frame):
        position = (groups.get("PlanePositionSlideSequence") or [None])[0]
        if position is None:
            raise UnsupportedFormat(f"DICOM {name!r}: frame {index} has no plane position")
        zs[index] = round(float(position.get("ZOffsetInSlideCoordinateSystem", 0) or 0), 3)
        identification = groups.get("OpticalPathIdentificationSequence")
        path_names.append(str(identification[0].get("OpticalPathIdentifier", ""))
                          if identification else shared)
    focal = tuple(float(z) for z in np.unique(zs))
    declared = _paths(ds)
    paths = tuple(dict.fromkeys([p for p in declared if p in path_names] + path_names))
    z_index = np.searchsorted(np.asarray(focal), zs)
    path_index = np.asarray([paths.index(p) for p in path_names], np.int64)
    return z_index, path_index, Planes(focal, paths)


def _shared_path(ds: Any) -> str:
    """The optical path of frames that name none: the shared groups', else the first."""
    try:
        shared = ds.SharedFunctionalGroupsSequence[0].OpticalPathIdentificationSequence[0]
        return str(shared.OpticalPathIdentifier)
    except (AttributeError, IndexError, TypeError):
        return (_paths(ds) or [_DEFAULT_PATH])[0]
