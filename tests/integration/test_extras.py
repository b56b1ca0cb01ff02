"""Every declared extra installs with plain pip in a fresh virtualenv (issue 14): a stale pin
(``.[bench]``'s s3fs / fsspec, which the resolver of a fresh venv's pip could not satisfy) is
caught here before a user meets it. Each extra is resolved with ``pip install --dry-run`` by
the pip that ``python -m venv`` bundles, against the configured package index: slow (minutes,
network), so it runs in CI (``WSI_RUN_SLOW=1``)."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


def declared_extras() -> list[str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(REPO_ROOT / "setup.cfg")
    return sorted(parser["options.extras_require"])


@pytest.fixture(scope="module")
def fresh_pip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("fresh-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    return venv / "bin" / "pip"


def test_the_extras_are_the_documented_ones() -> None:
    assert {"test", "patches", "openslide", "torch", "bench"} <= set(declared_extras())


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("extra", declared_extras())
def test_extra_resolves_in_a_fresh_venv(extra: str, fresh_pip: Path) -> None:
    result = subprocess.run([str(fresh_pip), "install", "--dry-run", "--quiet",
                             "--disable-pip-version-check", f"{REPO_ROOT}[{extra}]"],
                            capture_output=True, text=True, timeout=1500)
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("ERROR")]
    assert result.returncode == 0, "\n".join(errors[-5:]) or result.stderr[-3000:]
