"""PyTorch integration (``pip install "wsi_streamer[torch]"``), wsistream's ``wsistream.torch``
API: ``WsiStreamDataset`` (``dataset``), ``partition_slides_by_rank`` and the rank, shard and
seed helpers (``ranks``), ``MonitoredLoader`` (``monitor``), ``benchmark_throughput``
(``bench``); the shared statistics of DataLoader workers live in ``stats`` and ``slots``, the
dataset's resumable state (``StatefulDataLoader``, elastic restarts) in ``resume``."""

from .bench import BenchmarkResult, benchmark_throughput
from .dataset import WsiStreamDataset, image_tensor, patch_to_item
from .monitor import MonitoredLoader
from .ranks import (
    RankPartition,
    partition_slides_by_rank,
    rank_and_world_size,
    shard_slides,
    split_seed,
    stream_seed,
)

__all__ = ["BenchmarkResult", "MonitoredLoader", "RankPartition", "WsiStreamDataset",
           "benchmark_throughput", "image_tensor", "partition_slides_by_rank", "patch_to_item",
           "rank_and_world_size", "shard_slides", "split_seed", "stream_seed"]
