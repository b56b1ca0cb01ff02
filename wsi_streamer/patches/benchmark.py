"""wsistream's ``benchmark`` path: ``benchmark_throughput`` and ``BenchmarkResult`` (defined in
``torch_bench``; torch needed)."""

from .torch_bench import BenchmarkResult, benchmark_throughput

__all__ = ["BenchmarkResult", "benchmark_throughput"]
