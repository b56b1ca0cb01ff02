"""Views, dataset metadata and open retries inside the pipeline."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wsi_streamer.patches import (
    NativeBackend,
    PatchPipeline,
    RandomFlipRotate,
    RandomResizedCrop,
    RandomSampler,
    TCGAAdapter,
    ViewConfig,
)

FAST: dict[str, Any] = {"thumbnail_size": (512, 512), "seed": 1}
TCGA_NAME = "TCGA-A1-A0SB-01Z-00-DX1.B34C267B-CAAA-4AB6-AD5C-276C26F997A1.svs"


def test_views_are_named_shaped_and_reread_at_their_mpp(island_paths, cache_dir):
    views = [ViewConfig("global", crop=RandomResizedCrop(96, scale=(0.5, 1.0)), count=2),
             ViewConfig("local", crop=RandomResizedCrop(32, scale=(0.1, 0.3)),
                        transforms=RandomFlipRotate(), count=3),
             ViewConfig("context", mpp_override=1.0, patch_size_override=64)]
    pipe = PatchPipeline(island_paths[:2], sampler=RandomSampler(128, target_mpp=0.5),
                         views=views, patches_per_slide=4, cache_dir=cache_dir, **FAST)
    results = list(pipe)
    assert len(results) == 8
    for result in results:
        assert result.image is None and result.views is not None
        assert sorted(result.views) == ["context", "global_0", "global_1", "local_0",
                                        "local_1", "local_2"]
        assert result.views["global_0"].shape == (96, 96, 3)
        assert result.views["local_2"].shape == (32, 32, 3)
        assert result.views["context"].shape == (64, 64, 3)
        assert not np.array_equal(result.views["global_0"], result.views["global_1"])
    with pytest.raises(ValueError, match="reserved"):
        PatchPipeline(island_paths, views=[ViewConfig("image")], cache_dir=cache_dir)
    with pytest.raises(ValueError, match="exclusive"):
        PatchPipeline(island_paths, views=[ViewConfig("a")], transforms=RandomFlipRotate(),
                      cache_dir=cache_dir)


def test_context_view_is_centred_on_the_patch(island_paths, cache_dir):
    views = [ViewConfig("same"), ViewConfig("wide", mpp_override=1.0, patch_size_override=64)]
    pipe = PatchPipeline(island_paths[:1], sampler=RandomSampler(64, target_mpp=0.5),
                         views=views, patches_per_slide=5, cache_dir=cache_dir, **FAST)
    for result in pipe:
        same, wide = result.views["same"], result.views["wide"]  # type: ignore[index]
        # 64 px at 0.5 mpp = the central 32 px of 64 px at 1.0 mpp.
        centre = wide[16:48, 16:48].astype(float)
        small = same.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
        assert np.abs(centre - small).mean() < 12


def test_context_view_of_a_coarser_level_patch_is_centred_in_level0_pixels(island_paths,
                                                                            cache_dir):
    """The primary patch read at level 1 (64 px, downsample 4: 256 level-0 px): the
    ``mpp_override`` view is centred on the patch's level-0 centre (x + 128), not on
    x + 32 (its level-1 half side taken as level-0 pixels). The expected view is read
    directly: 64 px at level 2 (4.0 mpp, no resampling) around that centre."""
    views = [ViewConfig("same"), ViewConfig("wide", mpp_override=4.0, patch_size_override=64)]
    pipe = PatchPipeline(island_paths[:1], sampler=RandomSampler(64, level=1),
                         views=views, patches_per_slide=5, cache_dir=cache_dir, **FAST)
    backend = NativeBackend()
    backend.configure(use_cache=False)
    slide = backend.open_slide(island_paths[0])
    results = list(pipe)
    assert len(results) == 5
    for result in results:
        coord = result.coordinate
        assert coord.level == 1 and coord.patch_size == 64
        cx, cy = coord.x + 64 * 4 / 2, coord.y + 64 * 4 / 2
        x, y = int(round(cx - 64 * 16 / 2)), int(round(cy - 64 * 16 / 2))
        expected = slide.read_region(x=x, y=y, level=2, width=64, height=64)
        assert np.array_equal(result.views["wide"], expected), (coord.x, coord.y)  # type: ignore[index]


def test_dataset_adapter_metadata_and_counts(island_paths, tmp_path, cache_dir):
    folder = tmp_path / "TCGA-BRCA"
    folder.mkdir()
    shutil.copy(island_paths[0], folder / TCGA_NAME)
    pipe = PatchPipeline(str(folder), sampler=RandomSampler(64), patches_per_slide=3,
                         dataset_adapter=TCGAAdapter(), cache_dir=cache_dir, **FAST)
    results = list(pipe)
    meta = results[0].slide_metadata
    assert meta is not None and meta.patient_id == "TCGA-A1-A0SB"
    assert meta.cancer_type == "TCGA-BRCA"  # wsistream keeps the project id
    stats = pipe.stats_dict()
    assert stats["pipeline/cancer_type/TCGA-BRCA"] == 1
    assert any(key.startswith("pipeline/sample_type/") for key in stats)


OPEN_ATTEMPTS: dict[str, int] = {}


class CountingBackend(NativeBackend):
    def open_slide(self, path: str) -> Any:
        OPEN_ATTEMPTS[Path(path).name] = OPEN_ATTEMPTS.get(Path(path).name, 0) + 1
        return super().open_slide(path)


def test_a_slide_that_fails_to_open_is_retried_at_most_twice(island_paths, tmp_path,
                                                              cache_dir):
    OPEN_ATTEMPTS.clear()
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"II*\x00" + b"\x00" * 64)
    pipe = PatchPipeline([str(broken), island_paths[0]], backend=CountingBackend(),
                         sampler=RandomSampler(64), patches_per_slide=2, cycle=True,
                         pool_size=1, cache_dir=cache_dir, **FAST)
    stream = iter(pipe)
    for _ in range(20):
        next(stream)
    stream.close()  # type: ignore[attr-defined]
    assert OPEN_ATTEMPTS["broken.svs"] == 3
    assert OPEN_ATTEMPTS[Path(island_paths[0]).name] >= 10
    assert pipe.stats_dict()["pipeline/slides_failed"] == 3
