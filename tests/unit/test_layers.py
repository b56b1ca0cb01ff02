"""Issue 12: the architecture contracts of ``.importlinter`` hold (server -> tile | patches ->
slide -> format -> io; format drivers independent; only server/ reads Config), and the check
can fail: a reversed contract on the same code is reported broken."""

from __future__ import annotations

from pathlib import Path

import pytest

importlinter_cli = pytest.importorskip("importlinter.cli")

ROOT = Path(__file__).resolve().parents[2]


def lint(config: Path) -> int:
    code: int = importlinter_cli.lint_imports(config_filename=str(config), no_cache=True,
                                              no_logo=True)
    return code


def test_the_contracts_are_kept() -> None:
    assert lint(ROOT / ".importlinter") == 0


def test_a_broken_contract_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reversed_layers = tmp_path / "reversed.ini"
    reversed_layers.write_text("[importlinter]\nroot_package = wsi_streamer\n\n"
                               "[importlinter:contract:upside-down]\nname = upside down\n"
                               "type = layers\nlayers =\n    wsi_streamer.io\n"
                               "    wsi_streamer.format\n")
    monkeypatch.chdir(ROOT)
    assert lint(reversed_layers) != 0
