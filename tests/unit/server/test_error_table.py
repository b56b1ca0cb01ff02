"""The error table of API.md, written here again from the document, against every exception
class of ``wsi_streamer.errors`` as ``server/errors.py`` maps and renders it: status, code,
the JSON body ``{"error", "message", "status"}``, and 5xx bodies without host paths."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from flask import Flask

from wsi_streamer import errors
from wsi_streamer.server.errors import ERRORS, classify

# Every class of errors.py -> (status, code). API.md names the codes of its table; classes
# it does not name get the status of their documented family (400 request validation,
# 503 overload with Retry-After, 500 internal) and a code of their own.
DOCUMENTED: dict[str, tuple[int, str]] = {
    "InvalidLevel": (400, "invalid_level"),
    "TileOutOfBounds": (400, "tile_out_of_bounds"),
    "InvalidQuality": (400, "invalid_quality"),
    "InvalidSignatureFormat": (400, "invalid_signature_format"),
    "InvalidExpiryFormat": (400, "invalid_expiry_format"),
    "MissingSignature": (401, "missing_signature"),
    "MissingExpiry": (401, "missing_expiry"),
    "SignatureExpired": (401, "signature_expired"),
    "InvalidSignature": (401, "invalid_signature"),
    "AuthError": (401, "invalid_signature"),
    "SlideNotFound": (404, "not_found"),
    "InvalidSlideId": (404, "not_found"),
    "AssociatedImageNotFound": (404, "not_found"),
    "UnsupportedFormat": (415, "unsupported_format"),
    "InvalidTiff": (415, "unsupported_format"),
    "LimitExceeded": (415, "unsupported_format"),
    "ImageNotInSeries": (415, "unsupported_format"),
    "DecodeError": (500, "decode_error"),
    "EncodeError": (500, "encode_error"),
    "StorageError": (500, "storage_error"),
    "FlightAbandoned": (500, "storage_error"),
    "ObjectChanged": (500, "storage_error"),
    "ReadPastEnd": (500, "io_error"),
    "ConfigError": (500, "io_error"),
    "WsiError": (500, "io_error"),
    "ResumeStateError": (500, "io_error"),  # the pipeline's; no route raises it
    "StorageConnectionError": (502, "connection_error"),
    "FlightTimeout": (502, "connection_error"),
}
EXTENSIONS: dict[str, tuple[int, str]] = {
    "InvalidRequest": (400, "invalid_request"),
    "InvalidParameter": (400, "invalid_parameter"),
    "NotImplementedFeature": (501, "not_implemented"),
    "Overloaded": (503, "overloaded"),
    "DeadlineExceeded": (503, "deadline_exceeded"),
    "WorkAbandoned": (499, "client_gone"),
    "MetricsOff": (503, "metrics_off"),
    "StorageTimeout": (504, "storage_timeout"),
    "RedirectRefused": (502, "redirect_refused"),
}
EXPECTED_5XX = ("Overloaded", "DeadlineExceeded")  # logged without a traceback
API_CODES = {code for _, code in DOCUMENTED.values()}
CLASSES = {name: cls for name, cls in vars(errors).items()
           if inspect.isclass(cls) and issubclass(cls, errors.WsiError)}


def make(cls: type[errors.WsiError]) -> errors.WsiError:
    """An instance with a message naming a host path, whatever the constructor takes."""
    samples: dict[str, Any] = {"slide_id": "/srv/secret/a.svs", "level": 3, "level_count": 2,
                               "x": 1, "y": 2, "tiles_x": 1, "tiles_y": 1, "raw": "x",
                               "limit": "MAX_X", "message": "at /srv/secret/a.svs",
                               "retry_after": 2, "name": "label", "what": "a render",
                               "seconds": 0.5, "done": "3 tiles"}
    params = list(inspect.signature(cls.__init__).parameters)[1:]
    if params in (["args", "kwargs"], []):
        return cls("failed at /srv/secret/a.svs")
    return cls(**{name: samples[name] for name in params})


def test_every_class_of_errors_py_is_in_this_table() -> None:
    assert set(CLASSES) == set(DOCUMENTED) | set(EXTENSIONS)
    assert not set(DOCUMENTED) & set(EXTENSIONS)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_classify_gives_the_documented_status_and_code(name: str) -> None:
    expected = {**DOCUMENTED, **EXTENSIONS}[name]
    assert classify(make(CLASSES[name])) == expected
    if name in EXTENSIONS:  # a code of its own, never one API.md gives another meaning
        assert expected[1] not in API_CODES


def test_table_keys_are_errors_classes_and_order_cannot_matter() -> None:
    """Resolution goes along the MRO, so a subclass listed after its base still wins."""
    assert set(ERRORS) <= set(CLASSES.values())
    for cls, mapped in ERRORS.items():
        if not issubclass(cls, errors.AuthError):
            assert classify(make(cls)) == mapped  # type: ignore[arg-type]


def test_unexpected_exceptions_are_io_error() -> None:
    assert classify(ValueError("x")) == (500, "io_error")
    assert classify(KeyError("x")) == (500, "io_error")


@pytest.fixture
def raising_app(app: Flask) -> Flask:
    """The shared ``app`` with one more route: ``/raise/<name>`` raises that class."""
    def boom(name: str) -> None:
        if name == "ValueError":
            raise ValueError("/srv/secret/a.svs")
        raise make(CLASSES[name])

    app.add_url_rule("/raise/<name>", "raise", boom)
    return app


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_rendered_as_json_with_status_and_code(raising_app: Flask, name: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    status, code = {**DOCUMENTED, **EXTENSIONS}[name]
    response = raising_app.test_client().get(f"/raise/{name}")
    assert response.status_code == status
    assert response.is_json
    assert set(response.json) == {"error", "message", "status"}
    assert response.json["error"] == code and response.json["status"] == status
    assert response.json["message"]
    assert "Traceback" not in response.get_data(as_text=True)
    if name in EXPECTED_5XX:
        assert response.headers["Retry-After"] == ("2" if name == "Overloaded" else "5")
        assert not [r for r in caplog.records if r.exc_info]
    if name == "WorkAbandoned":  # the client has gone: no trace, and the connection closes
        assert response.headers["Connection"] == "close"
        assert not [r for r in caplog.records if r.exc_info]
    if name == "MetricsOff":  # warned once when metrics went off, not per scrape
        assert not [r for r in caplog.records if r.exc_info]
    if status >= 500 and name not in (*EXPECTED_5XX, "MetricsOff"):
        assert [r for r in caplog.records if r.exc_info], "5xx logged with its traceback"


def test_unexpected_exception_is_a_json_500_without_its_text(raising_app: Flask) -> None:
    response = raising_app.test_client().get("/raise/ValueError")
    assert response.status_code == 500 and response.json["error"] == "io_error"
    assert "/srv/secret" not in response.get_data(as_text=True)


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("GET", "/no/such/route", 404, "not_found"), ("POST", "/health", 405, "method_not_allowed"),
    ("DELETE", "/slides", 405, "method_not_allowed")])
def test_http_errors_are_json_too(client: Any, method: str, path: str, status: int,
                                  code: str) -> None:
    response = client.open(path, method=method)
    assert response.status_code == status and response.is_json
    assert response.json == {"error": code, "message": response.json["message"],
                             "status": status}
