"""The one integer parser of the HTTP layer (issue 15.5): ASCII digits only, so Unicode
digits (``'²'.isdigit()`` is true, ``int('²')`` raises; ``int('٣')`` is 3) are the caller's
400, never a 500 and never a value."""

from __future__ import annotations

import pytest

from wsi_streamer.errors import InvalidParameter, InvalidQuality
from wsi_streamer.server.params import MAX_PATH_INT, ascii_int, parse_int, parse_quality, path_int

NOT_INTEGERS = ["\u00b2", "\u2460", "\u0663", "\u0661\u0660", "\uff11", "1\u00b2", "",
                " 1", "1 ", "+1", "1_0", "1.0", "0x1", "1\n", "\t1", "--1", "-", "1e3"]


@pytest.mark.parametrize("raw", NOT_INTEGERS)
def test_only_ascii_digits(raw: str) -> None:
    assert ascii_int(raw, max_digits=12) is None
    with pytest.raises(InvalidQuality):
        parse_quality(raw, 80)
    with pytest.raises(InvalidParameter):
        path_int(raw, "level")
    if raw:
        with pytest.raises(InvalidParameter):
            parse_int(raw, "limit", 100)


def test_values() -> None:
    assert ascii_int("007", max_digits=3) == 7
    assert ascii_int("1234", max_digits=3) is None
    assert ascii_int("-5", max_digits=3) == -5
    assert ascii_int("-5", max_digits=3, signed=False) is None
    assert parse_quality(None, 80) == 80 and parse_quality("100", 80) == 100
    for bad in ("0", "101", "-1", "0100"):
        with pytest.raises(InvalidQuality):
            parse_quality(bad, 80)
    assert parse_int(None, "limit", 100) == 100 and parse_int("", "limit", 100) == 100
    assert parse_int("-3", "limit", 100) == -3
    with pytest.raises(InvalidParameter):
        parse_int("1" * 13, "limit", 100)
    assert path_int("9" * 15, "x") == MAX_PATH_INT
    assert path_int("-" + "9" * 15, "x") == -MAX_PATH_INT
    with pytest.raises(InvalidParameter):
        path_int("9" * 16, "x")
