"""wsistream's public API where ours differed without a reason (issue 22): path resolution
keeps the schemes a user's backend reads, and ``benchmark_throughput`` takes wsistream's
arguments and raises its errors before any work (a user backend's ``memory://`` slides, a
first batch outside the window, fewer slides than ranks, an unpicklable factory,
``cycle=False``), the torch layer's errors, OpenCV's thread pool off in workers, and a
user's own random component reseeded by the pipeline."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from tests.unit.patches.test_dropin import MemoryBackend
from wsi_streamer.patches.types import resolve_slide_paths

torch = pytest.importorskip("torch")

from wsi_streamer.patches.benchmark import benchmark_throughput  # noqa: E402
from wsi_streamer.patches.sampling import RandomSampler  # noqa: E402
from wsi_streamer.patches.torch import WsiStreamDataset  # noqa: E402

SLIDES = [f"memory://slide_{i}.svs" for i in range(4)]


def test_resolve_slide_paths_keeps_other_schemes_for_the_backend(tmp_path: Path) -> None:
    assert resolve_slide_paths(["memory://a.svs", "gs://b/c.svs"]) == ["memory://a.svs",
                                                                        "gs://b/c.svs"]
    (tmp_path / "notes.txt").touch()
    with pytest.raises(FileNotFoundError, match="No WSI files"):
        resolve_slide_paths(tmp_path)


def make_dataset(paths: list[str], pool_size: int, patches_per_slide: int,
                 patches_per_visit: int, seed: int, cycle: bool = True) -> WsiStreamDataset:
    return WsiStreamDataset(paths, backend=MemoryBackend(),
                            sampler=RandomSampler(patch_size=32, seed=1), pool_size=pool_size,
                            patches_per_slide=patches_per_slide,
                            patches_per_visit=patches_per_visit, cycle=cycle, seed=seed,
                            cache_dir=None)


def finite_dataset(paths: list[str], pool_size: int, patches_per_slide: int,
                   patches_per_visit: int, seed: int) -> WsiStreamDataset:
    return make_dataset(paths, pool_size, patches_per_slide, patches_per_visit, seed,
                        cycle=False)


def test_benchmark_reads_a_user_backend_with_no_warmup() -> None:
    (result,) = benchmark_throughput(make_dataset, SLIDES, num_workers=0, pool_size=2,
                                     patches_per_slide=10, batch_size=4, warmup_batches=0,
                                     measure_batches=2, verbose=False)
    assert result.total_patches == 8 and len(result.per_rank_batch_times_ms[0]) == 2


def test_benchmark_refuses_before_any_work() -> None:
    with pytest.raises(RuntimeError, match="All 2 configurations failed"):
        benchmark_throughput(make_dataset, SLIDES[:2], num_workers=[0, 1], world_size=4,
                             verbose=False)

    def local_factory(*args: int) -> WsiStreamDataset:
        raise AssertionError("never called")

    with pytest.raises(TypeError, match="not picklable"):
        benchmark_throughput(local_factory, SLIDES, num_workers=0, world_size=2,
                             verbose=False)
    with pytest.raises(ValueError, match="cycle=True"):
        benchmark_throughput(finite_dataset, SLIDES, num_workers=0, batch_size=4,
                             warmup_batches=1, measure_batches=1, verbose=False)


def test_partition_slides_by_rank_errors_as_wsistream() -> None:
    from wsi_streamer.patches.torch import partition_slides_by_rank

    with pytest.raises(ValueError, match="world_size must be >= 1"):
        partition_slides_by_rank(SLIDES[:1], rank=0, world_size=0)
    with pytest.raises(RuntimeError, match="got 0 slides"):
        partition_slides_by_rank(SLIDES[:1], rank=1, world_size=3)


def test_uint8_output_of_a_float_image_is_a_value_error() -> None:
    from wsi_streamer.patches.torch import image_tensor

    with pytest.raises(ValueError, match=r"output_dtype='uint8'.*dtype float32"):
        image_tensor(np.zeros((4, 4, 3), np.float32), "uint8")


def test_a_worker_turns_off_a_loaded_opencv_thread_pool(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    calls: list[int] = []
    monkeypatch.setitem(sys.modules, "cv2", types.SimpleNamespace(setNumThreads=calls.append))
    next(iter(make_dataset(SLIDES[:1], 1, 2, 1, 0)))
    assert calls == []  # the main process leaves the user's setting alone
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: types.SimpleNamespace(
        id=0, num_workers=1))  # where wsistream's users patch it
    next(iter(make_dataset(SLIDES[:1], 1, 2, 1, 0)))
    assert calls == [0]


class UserOffset:
    """A user's random transform in wsistream's style: its own ``_rng``, not ours."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return np.full_like(image, int(self._rng.integers(0, 200)))


def test_a_user_transform_rng_is_reseeded_by_the_pipeline() -> None:
    from wsi_streamer.patches import PatchPipeline

    def draws(seed: int, transform: UserOffset) -> list[int]:
        pipe = PatchPipeline(SLIDES[:1], backend=MemoryBackend(),
                             sampler=RandomSampler(patch_size=16, seed=1), transforms=transform,
                             patches_per_slide=6, pool_size=1, seed=seed, cache_dir=None)
        return [int(r.image[0, 0, 0]) for r in pipe]

    shared = UserOffset(seed=123)
    before = shared._rng.bit_generator.state
    assert draws(11, shared) == draws(11, UserOffset())  # the pipeline's seed decides
    assert draws(11, shared) != draws(22, shared)  # so workers' streams differ
    assert shared._rng.bit_generator.state == before  # the user's object is untouched


def test_views_errors_and_the_crop_subclass_hook() -> None:
    from wsi_streamer.patches.types import PatchCoordinate, PatchResult
    from wsi_streamer.patches.views import RandomResizedCrop, ViewConfig

    coord = PatchCoordinate(x=0, y=0, level=0, patch_size=8, mpp=0.5, slide_path="s")
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="either image or views"):
        PatchResult(image=None, coordinate=coord, tissue_fraction=1.0)
    with pytest.raises(ValueError, match="at least one view"):
        PatchResult(image=None, coordinate=coord, tissue_fraction=1.0, views={})
    with pytest.raises(ValueError, match="both image and views"):
        PatchResult(image=image, coordinate=coord, tissue_fraction=1.0, views={"a": image})
    with pytest.warns(UserWarning, match="identical copies"):
        ViewConfig(name="local", count=2)

    class Recording(RandomResizedCrop):  # wsistream's crop is a dataclass
        def __post_init__(self) -> None:
            super().__post_init__()
            self.params: list[int] = []

    assert Recording(size=4, scale=(0.5, 1.0)).params == []


def test_storage_options_take_the_storage_layer_region_name() -> None:
    from wsi_streamer.patches.sources import S3Options

    env: dict[str, str] = {}
    assert S3Options.from_mapping({"region": "eu-west-1"}, env).region == "eu-west-1"
    assert S3Options.from_mapping({"region_name": "eu-west-1"}, env).region == "eu-west-1"
    with pytest.raises(ValueError, match="one setting"):
        S3Options.from_mapping({"region": "eu-west-1", "region_name": "us-east-2"}, env)
