"""The table of format drivers, and the one way to parse, open and cache-encode a slide.

A format is one module implementing ``contract.FormatDriver`` plus one entry here. ``parse``
fetches the head and tail of the object concurrently (one round trip; most containers keep
their directory at one end or the other), then offers the object to each driver whose
``sniff`` claims its first bytes, in table order: the first that parses it wins. When every
driver refuses, the first refusal is raised (``UnsupportedFormat`` with the reason: "Hamamatsu
NDPI is not supported" rather than a fallback's "not a local file").

A slide made of several objects (``io.series``: a DICOM series folder or prefix) is one reader
whose ``members`` are laid end to end; its open reads every member's head instead (one round
trip), and the first member's first bytes are sniffed.

``NATIVE`` are the drivers that read through ranges (any storage); ``with_openslide()``
appends OpenSlide, which needs a local file, for servers of local folders that turn the
fallback on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import UnsupportedFormat
from ..io.range_reader import RangeReader
from ..io.series import MEMBER_HEAD, members_of
from ..records import CacheEntryError, Doc, check_schema, load_json
from .contract import FormatDriver, SlideReader
from .dicom.driver import DRIVER as DICOM
from .info import SlideInfo
from .spans import OPEN_HEAD, OPEN_TAIL, Spans, open_reads, plan_open_reads
from .tiff.driver import DRIVER as TIFF

NATIVE: tuple[FormatDriver, ...] = (TIFF, DICOM)
__all__ = ["NATIVE", "OPEN_HEAD", "OPEN_TAIL", "Parsed", "decode", "encode", "extensions", "parse",
           "recognised",
           "plan_open_reads", "with_openslide"]

SNIFF_BYTES = 512
STRUCTURE_SCHEMA = "wsi_streamer.structure"
STRUCTURE_VERSION = 2  # 2: the driver's name and its own document (1: TIFF only)


@dataclass(frozen=True, slots=True)
class Parsed:
    """A slide's structure and the driver that made it (and opens it)."""

    driver: FormatDriver
    structure: Any

    @property
    def info(self) -> SlideInfo:
        return self.driver.info(self.structure)

    def open(self, reader: RangeReader) -> SlideReader:
        return self.driver.open(reader, self.structure)


def with_openslide() -> tuple[FormatDriver, ...]:
    """The native drivers, then OpenSlide for what they refuse (local files only);
    ``ImportError`` naming the extra when OpenSlide is not installed."""
    from .openslide_driver import DRIVER as OPENSLIDE
    from .openslide_driver import require_openslide
    require_openslide()
    return (*NATIVE, OPENSLIDE)


def parse(reader: RangeReader, drivers: tuple[FormatDriver, ...] = NATIVE) -> Parsed:
    """The first driver of ``drivers`` that claims and parses the object; ``UnsupportedFormat``
    (the first driver's reason) when none does."""
    if reader.size == 0:
        raise UnsupportedFormat("the file is empty")
    members = members_of(reader)
    if members is None:
        spans = open_reads(reader)
    else:  # a series: every member's head, one round trip (``io.series``)
        spans = Spans(reader)
        spans.fetch([(m.offset, min(m.size, MEMBER_HEAD)) for m in members])
    head = spans.read(0, min(SNIFF_BYTES, reader.size))
    refusal: UnsupportedFormat | None = None
    for driver in drivers:
        if not driver.sniff(head):
            continue
        try:
            return Parsed(driver, driver.parse(spans))
        except UnsupportedFormat as exc:
            refusal = refusal or exc
    if refusal is not None:
        raise refusal
    raise UnsupportedFormat(f"not a slide format this server reads (it reads "
                            f"{', '.join(d.label for d in drivers)})")


def extensions(table: tuple[FormatDriver, ...]) -> tuple[str, ...]:
    """The file names a local folder lists and serves with these drivers."""
    return tuple(dict.fromkeys(ext for driver in table for ext in driver.extensions))


def recognised(table: tuple[FormatDriver, ...]) -> tuple[str, ...]:
    """``extensions`` plus the names a driver opens only to say why it refuses them."""
    served = extensions(table)
    return served + tuple(dict.fromkeys(ext for driver in table for ext in driver.recognises
                                        if ext not in served))


def encode(parsed: Parsed) -> bytes:
    """UTF-8 JSON ``{"schema", "version", "driver", "structure"}`` for the shared cache."""
    doc = {"schema": STRUCTURE_SCHEMA, "version": STRUCTURE_VERSION,
           "driver": parsed.driver.name, "structure": parsed.driver.encode(parsed.structure)}
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(blob: bytes, drivers: tuple[FormatDriver, ...] = NATIVE) -> Parsed:
    """What ``encode`` wrote, for a driver of ``drivers``; ``CacheEntryError`` otherwise (the
    caller treats it as a miss)."""
    doc = Doc(load_json(blob), "structure")
    check_schema(doc, STRUCTURE_SCHEMA, STRUCTURE_VERSION)
    doc.keys({"schema", "version", "driver", "structure"})
    name = doc.text("driver")
    for driver in drivers:
        if driver.name == name:
            return Parsed(driver, driver.decode(doc.raw("structure")))
    raise CacheEntryError(f"structure of driver {name!r}, which is not enabled here")
