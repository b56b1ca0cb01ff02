"""Fixtures shared by every test package.

- ``aws_isolation`` (session, autouse): fake AWS keys and empty AWS config/credentials files,
  so nothing reads the developer's ``~/.aws`` or reaches real AWS.
- ``shared_slides``: ``Path`` of the real scanner files (``../shared/slides``, see its README,
  or ``$WSI_TEST_SLIDES``); tests about those files are skipped, with the reason, without it.
- ``slide_of_kind``: ``kind -> Path``, the real file of that kind or its generated equivalent
  (``tests/fixtures/slide_kinds.py``), for tests that need a slide like it, not that file.
- ``moto_server`` (session): endpoint URL (``http://127.0.0.1:<port>``) of an in-process
  ``moto.server.ThreadedMotoServer`` bound to loopback on a free port.
- ``s3_bucket``: a fresh, empty bucket on that server: ``S3Bucket(client, name, endpoint)``.
- ``svs4``: the 4-level generated SVS (thumbnail, label, macro) as ``GeneratedSlide``.
- ``dicom_series`` (session): ``dicom_series(variant)`` -> the folder of a DICOM WSI series
  made from ``CMU-1-Small-Region.svs`` (``tests/fixtures/dicom.py``: ``jpeg``, ``jp2k``,
  ``walk``), made once per session; skips without wsidicomizer or the shared slides.
- ``app_config`` / ``app`` / ``client`` / ``runner`` (the Flask tutorial's fixtures): the app
  from ``create_app(app_config)``, its test client and its CLI runner. ``app_config`` is an
  empty slides folder and a private tile cache under ``tmp_path``; a module overrides
  ``app_config`` (at any scope) to serve its own slides or settings.

Tests marked ``slow`` (minutes of ``pip wheel`` and the like) are skipped, saying how to run
them, unless ``WSI_RUN_SLOW=1`` (``.ci/run`` sets it) or ``-m`` names ``slow``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

from tests.fixtures.slide_kinds import missing_reason, shared_slides_dir, slide_of_kind

if TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient, FlaskCliRunner

    from wsi_streamer.config import Config

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_SLIDES = shared_slides_dir()
AWS_REGION = "us-east-1"

_bucket_numbers = itertools.count()
RUN_SLOW = "WSI_RUN_SLOW"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``slow`` tests on a developer's plain ``pytest``; CI exports ``WSI_RUN_SLOW=1``."""
    if os.environ.get(RUN_SLOW) == "1" or "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason=f"slow test: set {RUN_SLOW}=1 to run it (.ci/run does)")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def aws_isolation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fake credentials and empty AWS config files for the whole session."""
    empty = tmp_path_factory.mktemp("aws") / "empty"
    empty.write_text("")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL",
                     "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_SECURITY_TOKEN", "testing")
        mp.setenv("AWS_SESSION_TOKEN", "testing")
        mp.setenv("AWS_DEFAULT_REGION", AWS_REGION)
        mp.setenv("AWS_CONFIG_FILE", str(empty))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


@pytest.fixture(scope="session")
def shared_slides() -> Path:
    """The real-slide folder; skips the test, saying how to get it, when it is absent."""
    if not SHARED_SLIDES.is_dir():
        pytest.skip(missing_reason(SHARED_SLIDES))
    return SHARED_SLIDES


@pytest.fixture(scope="session", name="slide_of_kind")
def slide_of_kind_fixture(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``kind -> Path``: the real file of that kind, or its generated equivalent (made once
    per session)."""
    cache = tmp_path_factory.mktemp("slide-kinds")
    return lambda kind: slide_of_kind(kind, cache, SHARED_SLIDES).path


@pytest.fixture(scope="session")
def moto_server(aws_isolation: None) -> Iterator[str]:
    """Endpoint URL of a loopback moto S3 server shared by the session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


class S3Bucket(NamedTuple):
    client: Any  # boto3 S3 client bound to the moto endpoint
    name: str
    endpoint: str


@pytest.fixture
def s3_bucket(moto_server: str) -> S3Bucket:
    """A new, empty bucket (unique name per test) on the session's moto server."""
    import boto3

    client = boto3.session.Session().client("s3", endpoint_url=moto_server,
                                            region_name=AWS_REGION)
    name = f"slides-{next(_bucket_numbers)}"
    client.create_bucket(Bucket=name)
    return S3Bucket(client, name, moto_server)


@pytest.fixture(scope="session")
def svs4() -> Any:
    """A 4-level Aperio-like SVS (thumbnail, label, macro), about 1 MB."""
    from tests.fixtures.slides import make_svs

    return make_svs(1536, 1152, levels=4, tile=256)


@pytest.fixture(scope="session")
def dicom_series(shared_slides: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``make(variant)``: that variant's series folder (named ``CMU-1-Small-Region``),
    written on first use under a session folder and reused."""
    from tests.fixtures.dicom import make_series

    root = tmp_path_factory.mktemp("dicom")
    made: dict[str, Path] = {}

    def make(variant: str) -> Path:
        if variant not in made:
            made[variant] = make_series(shared_slides / "CMU-1-Small-Region.svs",
                                        root / variant / "CMU-1-Small-Region", variant)
        return made[variant]

    return make


@pytest.fixture
def app_config(tmp_path: Path) -> Config:
    """What ``app`` is built from: an empty slides folder and a tile cache of its own."""
    from wsi_streamer.config import Config

    slides = tmp_path / "slides"
    slides.mkdir(exist_ok=True)
    return Config(slides_dir=str(slides), tile_cache_dir=str(tmp_path / "tile-cache"))


@pytest.fixture
def app(app_config: Config) -> Flask:
    """A fresh app (its own registry, block store and tile service) per test."""
    from wsi_streamer import create_app

    return create_app(app_config)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()
