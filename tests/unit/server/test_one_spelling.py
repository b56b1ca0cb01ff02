"""Issue 23: one spelling for each option. Every command that reads slides takes SOURCE and
spells its storage flags as the settings table does (``config.SETTINGS``: ``--s3-endpoint``
read from ``WSI_S3_ENDPOINT``), and a refused format's 415 names the flag that serves it."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
import tifffile

from wsi_streamer import create_app
from wsi_streamer.config import SETTINGS, Config
from wsi_streamer.patches import cli as patches_cli
from wsi_streamer.server import cli

REPO = Path(__file__).resolve().parents[3]
BY_OPTION = {s.option: s for s in SETTINGS if s.option}


def _options(command: click.Command) -> dict[str, click.Option]:
    return {opt: p for p in command.params if isinstance(p, click.Option) for opt in p.opts}


@pytest.mark.parametrize("name", ["serve", "check", "patches bench", "patches preview"])
def test_commands_that_read_slides_spell_storage_flags_alike(name: str) -> None:
    command: click.Command = cli.main
    for word in name.split():
        assert isinstance(command, click.Group)
        command = command.commands[word]
    arguments = [p.name for p in command.params if isinstance(p, click.Argument)]
    assert arguments == ["source"], arguments
    options = _options(command)
    assert "--endpoint-url" not in options
    for flag in ("--s3-endpoint", "--s3-region"):
        assert flag in options, (name, flag)
        setting = BY_OPTION[flag]
        envvar = options[flag].envvar
        if envvar is not None:  # patches: click reads the variable; serve/check: Config
            assert envvar == setting.env
    for flag in set(options) & set(BY_OPTION):
        assert BY_OPTION[flag].help.split()[0] in (options[flag].help or ""), flag


def test_patches_flags_are_rows_of_the_settings_table() -> None:
    for flag, env, _, text in patches_cli.S3_FLAGS:
        assert BY_OPTION[flag].env == env and BY_OPTION[flag].help == text


def test_train_ddp_spells_the_storage_flags_alike() -> None:
    out = subprocess.run([sys.executable, str(REPO / "examples" / "train_ddp.py"), "--help"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "--s3-endpoint" in out.stdout and "WSI_S3_ENDPOINT" in out.stdout
    assert "--s3-region" in out.stdout and "--endpoint-url" not in out.stdout


def _ndpi_like() -> bytes:
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tif:
        tif.write(np.full((128, 128, 3), 200, np.uint8), tile=(64, 64), compression="jpeg",
                  photometric="rgb", metadata=None, software=False,
                  extratags=[(65420, "I", 1, 1, True)])
    return buf.getvalue()


def test_ndpi_415_names_the_openslide_fallback(tmp_path: Path) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    (slides / "h.ndpi").write_bytes(_ndpi_like())
    client = create_app(Config(slides_dir=str(slides),
                               tile_cache_dir=str(tmp_path / "tc"))).test_client()
    answer = client.get("/slides/h.ndpi")
    assert answer.status_code == 415 and answer.json is not None
    assert "NDPI" in answer.json["message"]
    assert "--openslide-fallback" in answer.json["message"]
    assert "WSI_OPENSLIDE_FALLBACK" in answer.json["message"]
