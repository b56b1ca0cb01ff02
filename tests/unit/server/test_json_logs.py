"""``WSI_LOG_FORMAT=json`` and request ids (issue 14): one JSON object per record, on one line
whatever the request put in it; the access record's ``request_id`` is the response's
``X-Request-Id``; a sane incoming id is kept, anything else replaced; ``/metrics`` counts the
request in this process when no multiprocess folder is set."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest
from flask import Flask
from flask.testing import FlaskClient

from wsi_streamer.server.logs import JsonFormatter, access_logger


@pytest.fixture
def json_records(app: Flask) -> io.StringIO:
    """The access logger's records, written by a ``JsonFormatter`` handler."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    access_logger.addHandler(handler)
    level = access_logger.level
    access_logger.setLevel(logging.INFO)
    yield stream
    access_logger.removeHandler(handler)
    access_logger.setLevel(level)


def test_access_record_id_is_the_header(client: FlaskClient, json_records: io.StringIO) -> None:
    kept = client.get("/health", headers={"X-Request-Id": "lb-1234:abc_def.9"})
    replaced = client.get("/slides/a%0D%0Ab.svs", headers={"X-Request-Id": 'x" y;' * 20})
    fresh = client.get("/health")
    assert kept.headers["X-Request-Id"] == "lb-1234:abc_def.9"
    assert len(replaced.headers["X-Request-Id"]) == 32
    assert fresh.headers["X-Request-Id"] != replaced.headers["X-Request-Id"]
    lines = json_records.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 3
    assert [r["request_id"] for r in records] == [
        kept.headers["X-Request-Id"], replaced.headers["X-Request-Id"],
        fresh.headers["X-Request-Id"]]
    assert records[1]["path"] == "/slides/a\r\nb.svs" and records[1]["status"] == 404
    assert {"time", "level", "logger", "method", "path", "status", "ms", "cache_hit",
            "storage_requests", "storage_bytes", "pid", "request_id"} <= set(records[0])


def test_error_record_is_one_line_with_its_traceback(app: Flask) -> None:
    formatter = JsonFormatter()
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord("wsi_streamer.x", logging.ERROR, __file__, 1,
                                   "failed %s", ("a\r\nb",), sys.exc_info())
    with app.test_request_context("/"):
        from flask import g

        g.request_id = "rid-1"
        line = formatter.format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "failed a\r\nb" and parsed["level"] == "error"
    assert parsed["request_id"] == "rid-1" and "ValueError: bad" in parsed["exc_info"]


def test_metrics_count_this_process_without_a_folder(client: FlaskClient,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)

    def count() -> float:
        text = client.get("/metrics").get_data(as_text=True)
        line = next((ln for ln in text.splitlines() if ln.startswith(
            'wsi_http_requests_total{endpoint="health.health",status="200"}')), None)
        return float(line.split()[-1]) if line else 0.0

    before = count()
    for _ in range(3):
        client.get("/health")
    assert count() == before + 3


def test_the_request_id_is_readable_cross_origin(client: FlaskClient) -> None:
    """Browsers expose only the listed headers to scripts of another origin."""
    reply = client.get("/health", headers={"Origin": "https://viewer.example"})
    exposed = {h.strip() for h in reply.headers["Access-Control-Expose-Headers"].split(",")}
    assert "X-Request-Id" in exposed and reply.headers["X-Request-Id"]
