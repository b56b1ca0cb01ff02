"""Issue 12: the architecture contracts of ``.importlinter`` hold (server -> tile | patches ->
slide -> format -> io; patches never imports format; format drivers independent; only
server/ reads Config), and the check can fail: a reversed contract on the same code is
reported broken.

``lint-imports`` runs as a subprocess: in-process it reconfigures logging (``dictConfig``
disables every logger that exists), which would silence other tests' log captures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).parent / "lint-imports"


def lint(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT), "--config", str(config), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_the_contracts_are_kept() -> None:
    done = lint(ROOT / ".importlinter")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 kept, 0 broken" in done.stdout


def test_a_broken_contract_is_reported(tmp_path: Path) -> None:
    reversed_layers = tmp_path / "reversed.ini"
    reversed_layers.write_text("[importlinter]\nroot_package = wsi_streamer\n\n"
                               "[importlinter:contract:upside-down]\nname = upside down\n"
                               "type = layers\nlayers =\n    wsi_streamer.io\n"
                               "    wsi_streamer.format\n")
    done = lint(reversed_layers)
    assert done.returncode != 0 and "BROKEN" in done.stdout, done.stdout
