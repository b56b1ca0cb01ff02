"""``wsi-streamer patches preview`` on a folder (issue 23): one picture per slide, stacked in
one PNG, ``-n`` patches in all (it was per slide, and every slide's boxes were drawn on the
first slide's thumbnail), each slide's line naming its detector and threshold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from tests.fixtures.patch_slides import write_islands_svs
from wsi_streamer.patches.cli import patches_group


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("preview-folder")
    write_islands_svs(where, "a.svs", width=1024, height=768, seed=1, downsamples=(1, 4))
    write_islands_svs(where, "b.svs", width=768, height=1024, seed=2, downsamples=(1, 4))
    return where


def preview(*args: str) -> tuple[str, Image.Image]:
    out = Path(args[args.index("-o") + 1])
    result = CliRunner().invoke(patches_group, ["preview", *args])
    assert result.exit_code == 0, result.output
    with Image.open(out) as picture:
        picture.load()
        return result.output, picture


def test_preview_of_a_folder_draws_each_slide_and_n_in_all(folder: Path, tmp_path: Path
                                                           ) -> None:
    output, both = preview(str(folder), "-n", "5", "--patch-size", "64", "--seed", "1",
                           "-o", str(tmp_path / "both.png"))
    lines = re.findall(r": (\w)\.svs: (\d+) patches, tissue [\d.]+% of (\d+)x(\d+) \((.*)\)",
                       output)
    assert [(name, w, h) for name, _, w, h, _ in lines] == [("a", "1024", "768"),
                                                             ("b", "768", "1024")], output
    assert sum(int(n) for _, n, _, _, _ in lines) == 5  # -n is the total
    assert all("OtsuTissueDetector(" in c and "needs >= " in c for *_, c in lines)
    _, one = preview(str(folder / "a.svs"), "-n", "3", "--patch-size", "64", "--seed", "1",
                     "-o", str(tmp_path / "one.png"))
    assert both.height > one.height  # a picture per slide, stacked
