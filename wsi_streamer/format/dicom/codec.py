"""The DICOM driver's structure as checked JSON data for the shared cache: every field's type
and the tile tables' sizes are checked before the dataclasses are built (``records.Doc``)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from ...records import CacheEntryError, Doc
from .structure import JP2K, JPEG, NATIVE, DicomImage, DicomStructure


def encode_structure(structure: DicomStructure) -> dict[str, Any]:
    """The structure as JSON-ready data (``format.drivers`` adds the schema and version)."""
    return {"levels": [_image_doc(image) for image in structure.levels],
            "associated": [[name, _image_doc(image)] for name, image in structure.associated],
            "properties": [[key, value] for key, value in structure.properties],
            "mpp_x": structure.mpp_x, "mpp_y": structure.mpp_y,
            "icc_profile": (base64.b64encode(structure.icc_profile).decode()
                            if structure.icc_profile is not None else None),
            "focal_planes": list(structure.focal_planes),
            "optical_paths": list(structure.optical_paths), "selection": structure.selection}


def decode_structure(doc: Doc) -> DicomStructure:
    """The structure ``encode_structure`` wrote; ``CacheEntryError`` for anything else."""
    doc.keys({"levels", "associated", "properties", "mpp_x", "mpp_y", "icc_profile",
              "focal_planes", "optical_paths", "selection"})
    levels = tuple(_image(Doc(item, f"level {i}")) for i, item in enumerate(doc.items("levels")))
    if not levels:
        raise CacheEntryError("structure: no levels")
    associated = []
    for pair in doc.items("associated"):
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            raise CacheEntryError("structure: an associated image is not [name, image]")
        associated.append((pair[0], _image(Doc(pair[1], f"associated {pair[0]}"))))
    properties = doc.text_pairs("properties")
    icc = doc.raw("icc_profile")
    if icc is not None and not isinstance(icc, str):
        raise CacheEntryError("structure: icc_profile is not text")
    planes, paths = doc.items("focal_planes"), doc.items("optical_paths")
    if not all(isinstance(z, (int, float)) and not isinstance(z, bool) for z in planes) or (
            not all(isinstance(p, str) for p in paths)):
        raise CacheEntryError("structure: focal planes or optical paths of the wrong type")
    return DicomStructure(levels, tuple(associated), properties,
                          doc.number_or_none("mpp_x"), doc.number_or_none("mpp_y"),
                          _b64(icc) if icc is not None else None,
                          tuple(float(z) for z in planes), tuple(paths), doc.text("selection"))


def _image_doc(image: DicomImage) -> dict[str, Any]:
    return {"name": image.name, "width": image.width, "height": image.height,
            "tile_width": image.tile_width, "tile_height": image.tile_height,
            "codec": image.codec, "rgb": image.rgb, "ycbcr": image.ycbcr,
            "tiles": base64.b64encode(image.tiles).decode()}


def _image(doc: Doc) -> DicomImage:
    doc.keys({"name", "width", "height", "tile_width", "tile_height", "codec", "rgb",
              "ycbcr", "tiles"})
    image = DicomImage(doc.text("name"), doc.integer("width"), doc.integer("height"),
                       doc.integer("tile_width"), doc.integer("tile_height"), doc.text("codec"),
                       doc.flag("rgb"), doc.flag("ycbcr"), _b64(doc.text("tiles")))
    if image.codec not in (JPEG, JP2K, NATIVE) or min(
            image.width, image.height, image.tile_width, image.tile_height) <= 0:
        raise CacheEntryError(f"structure: image {image.name!r} has a bad codec or size")
    if len(image.tiles) != 16 * image.tiles_x * image.tiles_y:
        raise CacheEntryError(f"structure: image {image.name!r} tile table size")
    return image


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CacheEntryError("structure: bad base64") from exc
