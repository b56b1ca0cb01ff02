"""docs/api.md and docs/patches.md stay true (issue 23): every endpoint and error code of the app
is in the API reference and every one it names still exists; every argument of
``PatchPipeline`` and ``WsiStreamDataset`` is in the pipeline reference and every one its table
names still exists; the README links both."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
from werkzeug.exceptions import MethodNotAllowed, NotFound

from wsi_streamer import create_app
from wsi_streamer.config import Config
from wsi_streamer.patches import PatchPipeline
from wsi_streamer.server import errors as server_errors
from wsi_streamer.server import gunicorn_worker

REPO = Path(__file__).resolve().parents[2]
API = REPO / "docs" / "api.md"
PATCHES = REPO / "docs" / "patches.md"
# sample values for the {placeholders} of a documented path
SAMPLES = {"id": "a.svs", "level": "0", "x": "0", "y": "0", "col": "0", "row": "0",
           "name": "label", "region": "full", "size": "max", "rotation": "0",
           "quality": "default", "format": "jpg"}


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Any]:
    folder = tmp_path_factory.mktemp("docs-slides")
    app = create_app(Config(slides_dir=str(folder),
                            tile_cache_dir=str(folder.parent / "docs-tc")))
    return [rule.rule for rule in app.url_map.iter_rules()], app


def documented_paths() -> list[str]:
    return re.findall(r"`GET (/[^`?\[ ]*)", API.read_text())


def test_every_endpoint_of_the_app_is_documented(rules) -> None:
    rule_list, _ = rules
    text = API.read_text()
    for rule in rule_list:
        literal = rule.split("<")[0]
        assert f"`GET {literal}" in text, f"{rule} is not in docs/api.md"


def test_every_documented_endpoint_exists(rules) -> None:
    _, app = rules
    adapter = app.url_map.bind("localhost")
    paths = documented_paths()
    assert "/health/ready" in paths and "/" in paths
    for path in paths:
        concrete = re.sub(r"\{(\w+)\}", lambda m: SAMPLES[m.group(1)],
                          path.replace("...", "x.js"))
        try:
            adapter.match(concrete, method="GET")
        except (NotFound, MethodNotAllowed):
            pytest.fail(f"docs/api.md documents {path}, which the app does not route")


def documented_errors() -> dict[str, str]:
    rows = re.findall(r"^\| (\d{3}|other) \| (`[a-z_]+`(?:, `[a-z_]+`)*) \|", API.read_text(),
                      re.M)
    return {code: status for status, codes in rows for code in re.findall(r"`(\w+)`", codes)}


def test_every_error_code_is_documented_with_its_status() -> None:
    documented = documented_errors()
    table = {code: str(status) for status, code in server_errors.ERRORS.values()}
    table |= {code: str(status) for status, code in server_errors._HTTP_CODES.items()}
    table |= {code: str(status) for code, status in server_errors._AUTH_STATUS.items()}
    table |= {rule[3]: str(rule[1]) for rule in gunicorn_worker._RULES}
    table |= {"storage_unready": "503", "http_error": "other"}
    for code in ("missing_signature", "missing_expiry", "signature_expired",
                 "invalid_signature"):
        table.setdefault(code, "401")
    for code in ("deadline_exceeded", "client_gone", "storage_timeout", "redirect_refused",
                 "metrics_off", "storage_unready"):  # issue 26's, by name
        assert code in table, code
    for code, status in table.items():
        assert documented.get(code) == status, f"{code} ({status}) in docs/api.md"


def test_every_documented_error_code_exists() -> None:
    source = "\n".join(p.read_text() for p in (REPO / "wsi_streamer").rglob("*.py"))
    for code in documented_errors():
        assert f'"{code}"' in source, f"docs/api.md names {code}, which nothing raises"


def test_api_reference_names_the_commands_of_its_start() -> None:
    text = API.read_text()
    for words in ("wsi-streamer serve [SOURCE]", "wsi-streamer check [SOURCE]",
                  "--openslide-fallback", "wsi-streamer sign-url"):
        assert words in text, words


def pipeline_arguments() -> set[str]:
    from wsi_streamer.patches.torch import WsiStreamDataset

    names = set()
    for cls in (PatchPipeline, WsiStreamDataset):
        names |= set(inspect.signature(cls.__init__).parameters) - {"self"}
    return names


def test_every_pipeline_argument_is_documented() -> None:
    pytest.importorskip("torch")
    text = PATCHES.read_text()
    missing = sorted(name for name in pipeline_arguments() if f"`{name}`" not in text)
    assert not missing, f"not in docs/patches.md: {missing}"


def test_every_documented_argument_exists() -> None:
    table = re.findall(r"^\| `(\w+)` \|", PATCHES.read_text(), re.M)
    assert "open_timeout" in table and len(table) >= 20
    parameters = set(inspect.signature(PatchPipeline.__init__).parameters)
    gone = sorted(set(table) - parameters)
    assert not gone, f"docs/patches.md documents arguments PatchPipeline lacks: {gone}"


def test_readme_links_the_references() -> None:
    readme = (REPO / "README.md").read_text()
    for target in re.findall(r"\]\((docs/[^)#]+)\)", readme):
        assert (REPO / target).is_file(), target
    assert "(docs/api.md)" in readme and "(docs/patches.md)" in readme
