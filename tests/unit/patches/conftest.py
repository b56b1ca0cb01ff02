"""Slides for the pipeline tests, written once per session into a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.patch_slides import write_islands_svs


@pytest.fixture(scope="session")
def island_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 2048x1536 SVS slides (mpp 0.25, downsamples 1, 4, 16), tissue islands on white."""
    folder = tmp_path_factory.mktemp("islands")
    for index in range(4):
        write_islands_svs(folder, f"slide-{index}.svs", seed=index)
    return folder


@pytest.fixture(scope="session")
def island_paths(island_dir: Path) -> list[str]:
    return sorted(str(p) for p in island_dir.glob("*.svs"))


@pytest.fixture(scope="session")
def white_slide(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("white")
    return str(write_islands_svs(folder, "white.svs", fraction=0.0, width=1024, height=768))


@pytest.fixture(scope="session")
def sparse_slide(tmp_path_factory: pytest.TempPathFactory) -> str:
    """About 1% tissue in one small island."""
    folder = tmp_path_factory.mktemp("sparse")
    return str(write_islands_svs(folder, "sparse.svs", fraction=0.01, count=1, seed=5))


@pytest.fixture
def cache_dir(tmp_path: Path) -> str:
    return str(tmp_path / "host-cache")
