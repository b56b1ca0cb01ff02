"""The official IIIF Image API validator (``iiif-validator`` from PyPI, its
``iiif-validate.py``) against the real gunicorn server, at compliance level 2 of version 3.0.

The validator's own test image (1000x1000 px, 10x10 squares of 100 px whose colours it checks)
is not shipped by the 1.0.5 package: it is built here from the validator's colour table
(``ValidationInfo.colorInfo[column][row]``) and served as a tiled JPEG pyramid (1000, 500,
250, 125 px levels in 256 px tiles). The tests that do not need that image also run on a real
slide (CMU-1-Small-Region.svs, or its generated twin without the real slides). The validator
needs Debian's libmagic1 (python-magic)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.images import downsample2
from tests.servers import Server, gunicorn

pytest.importorskip("iiif_validator", reason="pip install iiif-validator (the test extra)")

TEST_IMAGE = "iiif-test.tif"  # a '-' so that id_escaped (%2D) tests something
REAL = "CMU-1-Small-Region.svs"
# Level <= 2 tests of version 3.0 that check no pixels of the validator's test image.
IMAGE_FREE = ("info_json", "id_basic", "format_jpg", "format_png", "baseurl_redirect", "cors",
              "format_error_random", "id_error_escapedslash", "id_error_random",
              "id_error_unescaped", "id_escaped", "jsonld", "quality_error_random",
              "region_error_random", "rot_error_random", "size_error_random", "size_nofull",
              "region_square", "quality_bitonal", "quality_grey", "quality_color")


def squares_image() -> np.ndarray:
    """The validator's test image: square (column x, row y) is ``colorInfo[x][y]``."""
    from iiif_validator.validator import ValidationInfo

    colours = ValidationInfo().colorInfo
    image = np.zeros((1000, 1000, 3), np.uint8)
    for x in range(10):
        for y in range(10):
            image[y * 100:(y + 1) * 100, x * 100:(x + 1) * 100] = colours[x][y]
    return image


def squares_tiff() -> bytes:
    from tests.fixtures.slides import make_svs

    levels = [squares_image()]
    while len(levels) < 4:
        levels.append(downsample2(levels[-1]))
    return make_svs(images=levels, tile=256, associated=False, qualities=(95,)).data


@pytest.fixture(scope="module")
def server(slide_of_kind: Callable[[str], Path],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("iiif-slides")
    (folder / TEST_IMAGE).write_bytes(squares_tiff())
    shutil.copy(slide_of_kind("aperio"), folder / REAL)  # the real file or its twin
    tmp = tmp_path_factory.mktemp("iiif-server")
    env = {"WSI_SLIDES_DIR": str(folder), "WSI_TILE_CACHE_DIR": str(tmp / "tiles"),
           "WSI_CORS_ORIGINS": "*"}
    with gunicorn(env, tmp / "gunicorn.log", threads=4) as running:
        yield running


def validate(server: Server, identifier: str, tests: tuple[str, ...] = ()) -> str:
    """``iiif-validate.py`` at level 2 of 3.0 (or only ``tests``); asserts it passes."""
    script = Path(sys.executable).with_name("iiif-validate.py")
    host = server.url.removeprefix("http://")
    args = [sys.executable, str(script), "-s", host, "-p", "iiif/3", "-i", identifier,
            "--version=3.0", "--level=2", *(f"--test={name}" for name in tests)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "FAIL" not in output, output + server.log()[-3000:]
    return output


def test_validator_level2_on_its_test_image(server: Server) -> None:
    output = validate(server, TEST_IMAGE)
    passed = [line for line in output.splitlines() if line.endswith(" PASS")]
    assert len(passed) >= 30, output  # every level 0-2 test of 3.0 ran and passed


def test_validator_on_a_real_slide(server: Server) -> None:
    output = validate(server, REAL, IMAGE_FREE)
    passed = [line for line in output.splitlines() if line.endswith(" PASS")]
    assert len(passed) == len(IMAGE_FREE), output


def test_validator_level3_tests_of_implemented_features(server: Server) -> None:
    """Beyond level 2: mirroring, upscaling (^) and the canonical/profile Link headers."""
    tests = ("rot_mirror", "rot_mirror_180", "size_up", "linkheader_canonical",
             "linkheader_profile")
    output = validate(server, TEST_IMAGE, tests)
    assert len([line for line in output.splitlines() if line.endswith(" PASS")]) == len(tests)
