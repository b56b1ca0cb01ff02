"""Pipeline statistics with wsistream's keys, plus the storage counters (``io/*``)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunningStats:
    """Count, mean, min and max without keeping the values."""

    count: int = 0
    total: float = 0.0
    min_val: float = float("inf")
    max_val: float = float("-inf")

    def update(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.min_val = min(self.min_val, value)
        self.max_val = max(self.max_val, value)

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


@dataclass
class PipelineStats:
    """What one pipeline did in this process since the last ``reset_stats``."""

    slides_processed: int = 0
    slides_failed: int = 0
    slides_seen: set[str] = field(default_factory=set)
    patches_extracted: int = 0
    patches_filtered: int = 0
    patch_errors: int = 0
    tissue_fractions: RunningStats = field(default_factory=RunningStats)
    magnification_counts: dict[float | None, int] = field(default_factory=dict)
    cancer_type_counts: dict[str, int] = field(default_factory=dict)
    sample_type_counts: dict[str, int] = field(default_factory=dict)
    recent_errors: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=100))
    error_count: int = 0
    detections: int = 0
    mask_cache_hits: int = 0

    def record_error(self, slide_path: str, message: str) -> None:
        self.recent_errors.append((slide_path, message))
        self.error_count += 1

    def count_mpp(self, mpp: float | None) -> None:
        key = round(mpp, 2) if mpp is not None else None
        self.magnification_counts[key] = self.magnification_counts.get(key, 0) + 1

    def count_metadata(self, cancer_type: str | None, sample_type: str | None) -> None:
        if cancer_type:
            self.cancer_type_counts[cancer_type] = self.cancer_type_counts.get(cancer_type, 0) + 1
        if sample_type:
            self.sample_type_counts[sample_type] = self.sample_type_counts.get(sample_type, 0) + 1

    def to_dict(self) -> dict[str, int | float]:
        """Flat dict (``wandb.log``-ready), wsistream's keys first."""
        out: dict[str, int | float] = {
            "pipeline/slides_processed": self.slides_processed,
            "pipeline/slides_failed": self.slides_failed,
            "pipeline/slides_unique": len(self.slides_seen),
            "pipeline/patches_extracted": self.patches_extracted,
            "pipeline/patches_filtered": self.patches_filtered,
        }
        mean = self.tissue_fractions.mean
        if mean is not None:
            out["pipeline/mean_tissue_fraction"] = mean
            out["pipeline/min_tissue_fraction"] = self.tissue_fractions.min_val
            out["pipeline/max_tissue_fraction"] = self.tissue_fractions.max_val
        for mpp, count in self.magnification_counts.items():
            out[f"pipeline/mpp_{mpp:.2f}" if mpp is not None else "pipeline/mpp_unknown"] = count
        for cancer, count in self.cancer_type_counts.items():
            out[f"pipeline/cancer_type/{cancer}"] = count
        for sample, count in self.sample_type_counts.items():
            out[f"pipeline/sample_type/{sample.replace(' ', '_').lower()}"] = count
        if self.error_count:
            out["pipeline/error_count"] = self.error_count
        out["pipeline/patch_errors"] = self.patch_errors
        out["io/detections"] = self.detections
        out["io/mask_cache_hits"] = self.mask_cache_hits
        return out

    def handed_out(self) -> dict[str, Any]:
        """The counts of what the consumer was handed (counted as it takes each patch, so
        exact between two results): patches, filtered, failed reads, per mpp. A pipeline's
        resumable state carries them (the other counts are of this process's work)."""
        return {"patches_extracted": self.patches_extracted,
                "patches_filtered": self.patches_filtered, "patch_errors": self.patch_errors,
                "mpp": [[mpp, n] for mpp, n in self.magnification_counts.items()]}

    def continue_from(self, saved: dict[str, Any]) -> None:
        """Take ``handed_out``'s counts (of a saved state) as this run's so far."""
        counts = (int(saved["patches_extracted"]), int(saved["patches_filtered"]),
                  int(saved["patch_errors"]))
        per_mpp = {None if mpp is None else float(mpp): int(n) for mpp, n in saved["mpp"]}
        self.patches_extracted, self.patches_filtered, self.patch_errors = counts
        self.magnification_counts = per_mpp
