"""wsistream's ``benchmark`` path: ``benchmark_throughput`` and ``BenchmarkResult`` (defined in
``torch.bench``; torch needed)."""

from .torch.bench import BenchmarkResult, benchmark_throughput

__all__ = ["BenchmarkResult", "benchmark_throughput"]
