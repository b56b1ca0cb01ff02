"""Log lines cannot be forged (issue 15.6): request text is escaped in the access line and in
error lines, and the package's handler escapes control characters in every message and in
tracebacks."""

from __future__ import annotations

import logging
import sys
from typing import Any

import pytest

from wsi_streamer.server.logs import EscapingFormatter, escape


def test_escape() -> None:
    assert escape("/a\r\nb\x00\x1b[31m\x85\u2028\\") == "/a\\r\\nb\\x00\\x1b[31m\\x85\\u2028\\\\"
    assert escape("/tiles/caf\u00e9.svs/0/0/0.jpg") == "/tiles/caf\u00e9.svs/0/0/0.jpg"


def test_formatter_escapes_messages_and_tracebacks() -> None:
    formatter = EscapingFormatter("%(name)s: %(message)s")
    record = logging.LogRecord("wsi_streamer.x", logging.ERROR, __file__, 1,
                               "id %s", ("a\nforged line\x00",), None)
    assert formatter.format(record) == "wsi_streamer.x: id a\\nforged line\\x00"
    try:
        raise ValueError("bad\x1b[2J")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "m", None, sys.exc_info())
    text = formatter.format(record)
    assert "\x1b" not in text and "\\x1b[2J" in text and "Traceback" in text


def test_access_line_escapes_the_path(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="wsi_streamer.access"):
        client.get("/slides/x%0D%0Aforged%00.svs")
    lines = [r.getMessage() for r in caplog.records if r.name == "wsi_streamer.access"]
    assert lines and "/slides/x\\r\\nforged\\x00.svs" in lines[-1]
    assert not any(ch in lines[-1] for ch in "\r\n\x00")
