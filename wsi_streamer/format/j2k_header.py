"""What a JPEG 2000 codestream will cost openjpeg to decode, read from its markers before it
is decoded (ISO/IEC 15444-1 annex A; issue 26).

openjpeg allocates from the headers alone: every component as int32 samples (SIZ), one
structure per tile (SIZ's tile grid) and one per code-block (COD/COC block sizes, in the main
header or any tile-part header), whatever the data holds: a 756-byte codestream declaring
8192x8192 peaked at 1013 MiB, 195 bytes declaring 16,384 tiles at 250 MiB, and 4x4 code-blocks
over 2048x2048 at 307 MiB. ``read_header`` walks the markers (main header, then each tile-part
header by its ``Psot`` length: a bounded number of steps) and ``working_set`` turns them into
bytes, so ``jp2k.decode_jp2k`` can refuse a tile before openjpeg sees it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import DecodeError, LimitExceeded
from ..limits import MAX_JPEG_SEGMENTS

_SOC, _SIZ, _COD, _COC, _SOT, _SOD, _EOC = 0x4F, 0x51, 0x52, 0x53, 0x90, 0x93, 0xD9
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
SAMPLE_BYTES = 4  # openjpeg's int32 per decoded sample
TILE_BYTES = 16 << 10  # measured: 16,384 declared tiles cost 250 MiB
CODEBLOCK_BYTES = 400  # measured: 786,432 4x4 code-blocks cost about 300 MiB


@dataclass(frozen=True, slots=True)
class J2kHeader:
    """What SIZ and the COD/COC markers declare. ``sizes`` is each component's
    ``(width, height)``; ``precision`` the largest bit depth; ``tiles`` the tile grid's tile
    count; ``block_area`` the smallest code-block area (samples) any marker asks for."""

    width: int
    height: int
    sizes: tuple[tuple[int, int], ...]
    precision: int
    tiles: int
    block_area: int

    def working_set(self) -> int:
        """Bytes openjpeg and the decoded copy will hold: int32 samples, the output array (1
        byte per sample up to 8 bits, else 2), tile and code-block structures."""
        samples = sum(w * h for w, h in self.sizes)
        out = self.width * self.height * len(self.sizes) * (1 if self.precision <= 8 else 2)
        blocks = sum(-(-w * h // self.block_area) for w, h in self.sizes)
        return (samples * SAMPLE_BYTES + out + self.tiles * TILE_BYTES
                + blocks * CODEBLOCK_BYTES)


def _codestream(data: bytes) -> bytes:
    """The codestream itself: ``data``, or the ``jp2c`` box of a JP2 file (15444-1 I.5)."""
    if not data.startswith(_JP2_SIGNATURE):
        return data
    pos = 0
    for _ in range(MAX_JPEG_SEGMENTS):
        if pos + 8 > len(data):
            break
        length, kind = struct.unpack_from(">I4s", data, pos)
        head = 8
        if length == 1 and pos + 16 <= len(data):
            length, head = struct.unpack_from(">Q", data, pos + 8)[0], 16
        end = len(data) if length == 0 else pos + length
        if kind == b"jp2c":
            return data[pos + head : end]
        if end <= pos:
            break
        pos = end
    raise DecodeError("JP2 file has no codestream box")


def read_header(data: bytes) -> J2kHeader:
    """Parse SIZ and every COD/COC of a codestream (or JP2 file). ``DecodeError`` when it is
    not one, ``LimitExceeded`` past ``MAX_JPEG_SEGMENTS`` markers."""
    stream = _codestream(data)
    if not stream.startswith(b"\xff\x4f\xff\x51") or len(stream) < 42:
        raise DecodeError("JPEG 2000 tile has no SOC/SIZ header")
    xsiz, ysiz, xo, yo, xt, yt, xto, yto, count = struct.unpack_from(">8IH", stream, 8)
    if len(stream) < 42 + 3 * count or not (xt and yt and xsiz > xo and ysiz > yo):
        raise DecodeError("JPEG 2000 tile has a malformed SIZ")
    comps = [struct.unpack_from(">3B", stream, 42 + 3 * i) for i in range(count)]
    if any(dx == 0 or dy == 0 for _, dx, dy in comps):
        raise DecodeError("JPEG 2000 tile has a malformed SIZ")
    sizes = tuple((-(-xsiz // dx) - -(-xo // dx), -(-ysiz // dy) - -(-yo // dy))
                  for _, dx, dy in comps)
    tiles = max(1, -(-(xsiz - xto) // xt) * -(-(ysiz - yto) // yt))
    return J2kHeader(xsiz - xo, ysiz - yo, sizes, max(((s & 0x7F) + 1 for s, _, _ in comps),
                     default=0), tiles, _smallest_block(stream, count))


def _smallest_block(stream: bytes, components: int) -> int:
    """Smallest code-block area (samples) in the COD/COC markers of the main header and of
    every tile-part header (15444-1 A.6.1, A.6.2; tile-parts skipped by ``Psot``)."""
    area = 1 << 20  # larger than any legal code-block (4096 samples)
    pos, tile_end = 2, 0
    for _ in range(MAX_JPEG_SEGMENTS):
        if pos + 4 > len(stream) or stream[pos] != 0xFF:
            return area
        marker = stream[pos + 1]
        if marker == _EOC:
            return area
        if marker == _SOD:  # tile-part data: jump to the next tile-part
            if tile_end <= pos:
                return area
            pos = tile_end
            continue
        length = int.from_bytes(stream[pos + 2 : pos + 4], "big")
        body = stream[pos + 4 : pos + 2 + length]
        if marker == _SOT and len(body) >= 8:
            psot = int.from_bytes(body[2:6], "big")
            tile_end = pos + psot if psot else len(stream)
        elif marker in (_COD, _COC):
            # COD: Scod, SGcod (4 bytes), SPcod: levels, xcb, ycb...; COC: Ccoc (1 or 2
            # bytes), Scoc, SPcoc: levels, xcb, ycb... A block is 2**(xcb+2) x 2**(ycb+2).
            at = 5 if marker == _COD else (2 if components < 257 else 3)
            if len(body) > at + 2:
                area = min(area, 1 << (body[at + 1] + body[at + 2] + 4))
        pos = pos + 2 + length
    raise LimitExceeded("MAX_JPEG_SEGMENTS", f"JPEG 2000 codestream has more than "
                        f"{MAX_JPEG_SEGMENTS} markers")
