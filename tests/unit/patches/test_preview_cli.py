"""``wsi-streamer patches preview`` on a folder (issue 23): one picture per slide, stacked in
one PNG, ``-n`` patches in all (it was per slide, and every slide's boxes were drawn on the
first slide's thumbnail), each slide's line naming its detector and threshold; its progress
and ``patches bench``'s off a terminal (``wsi_streamer.progress``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from tests.fixtures.patch_slides import write_islands_svs
from wsi_streamer.patches.cli import patches_group
from wsi_streamer.progress import PROGRESS_ENV


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


def test_preview_and_bench_report_progress_off_a_terminal(folder: Path, tmp_path: Path
                                                          ) -> None:
    runner = CliRunner()
    env = {PROGRESS_ENV: "0"}  # a line per update: counted, not timed
    preview = runner.invoke(patches_group, ["preview", str(folder), "-n", "4", "--patch-size",
                                            "64", "-o", str(tmp_path / "p.png")], env=env)
    assert preview.exit_code == 0, preview.output
    lines = [line for line in preview.stderr.splitlines() if line.startswith("preview: ")]
    assert [line.split(",")[0] for line in lines] == ["preview: 1/2 slides",
                                                      "preview: 2/2 slides", "preview: 2/2 slides"]
    assert lines[-1].endswith(" s")  # the closing line: rate and seconds
    bench = runner.invoke(patches_group, ["bench", str(folder), "-n", "6", "--patch-size",
                                          "64", "--no-cache"], env=env)
    assert bench.exit_code == 0, bench.output
    counts = [line.split(",")[0] for line in bench.stderr.splitlines()
              if line.startswith("bench: ")]
    assert counts[:6] == [f"bench: {i}/6 patches" for i in range(1, 7)], bench.stderr


def test_a_source_that_can_never_yield_says_so(folder: Path, tmp_path: Path) -> None:
    """uni's CLAM area filter finds no tissue on these small slides: ``bench`` (an endless
    stream) fails with NoPatchesError and each slide's reason in one line; ``preview`` (a
    finite one) says 0 patches and why (the detector's a_t in the caption)."""
    runner = CliRunner()
    bench = runner.invoke(patches_group, ["bench", str(folder), "-n", "5", "--recipe", "uni",
                                          "--no-cache"])
    assert bench.exit_code == 1
    error = [line for line in bench.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "NoPatchesError" in error[0], bench.stderr
    assert "a.svs: no valid patch position" in error[0] and "b.svs" in error[0]
    output, _ = preview(str(folder / "a.svs"), "-n", "5", "--recipe", "uni", "-o",
                        str(tmp_path / "none.png"))
    assert "a.svs: 0 patches, tissue 0.0%" in output and "a_t=100" in output, output
