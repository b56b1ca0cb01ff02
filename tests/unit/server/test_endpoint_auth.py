"""Every endpoint declares its auth in ``server.app.ENDPOINT_AUTH``: a blueprint whose
endpoint is missing there stops ``create_app``, so it cannot be served unprotected."""

from __future__ import annotations

import pytest
from flask import Flask

from wsi_streamer import create_app
from wsi_streamer.config import Config
from wsi_streamer.server import app as app_module


def test_every_endpoint_is_in_the_table(app: Flask) -> None:
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert "iiif.image" in endpoints
    assert endpoints <= app_module.ENDPOINT_AUTH.keys(), endpoints - app_module.ENDPOINT_AUTH.keys()


def test_an_unlisted_endpoint_stops_the_app(app_config: Config,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    table = dict(app_module.ENDPOINT_AUTH)
    del table["iiif.image"]
    monkeypatch.setattr(app_module, "ENDPOINT_AUTH", table)
    with pytest.raises(RuntimeError, match="iiif.image"):
        create_app(app_config)


def test_only_health_and_static_are_public() -> None:
    public = {k for k, v in app_module.ENDPOINT_AUTH.items() if v == app_module.PUBLIC}
    assert public == {"health.health", "health.ready", "static"}
