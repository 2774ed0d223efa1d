"""Batch options: the ``batch_*`` settings a job service and its drivers use.

Each option is a field of ``app.settings.Settings`` (environment ``TERRATILER_<NAME>``),
where its default and meaning are written; ``BatchConfig.from_settings`` is the one place
they are read. Dask workers get the settings themselves with each task (``UnitTask``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.settings import Settings

__all__ = ["BatchConfig"]


@dataclass(frozen=True)
class BatchConfig:
    """The batch options in force (``Settings`` fields of the same names)."""

    batch_workers: int
    batch_threads_per_worker: int
    batch_unit_features: int
    batch_min_units: int
    batch_unit_retries: int
    batch_lease_seconds: float
    batch_outputs: list[str]
    batch_max_features: int
    batch_max_upload_mb: int
    batch_seconds_per_feature_interval: float
    s3_endpoint_url: str | None
    batch_features_timeout: float
    batch_max_geojson_mb: int
    data_dir: Path
    dask_scheduler: str | None
    batch_max_tiles: int
    batch_max_tile_pixels: int
    batch_seconds_per_megapixel_scene: float
    batch_max_outputs: int
    batch_max_tile_memory_mb: int
    batch_malloc_trim_threshold: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> BatchConfig:
        """The batch options of ``settings`` (``data_dir`` made absolute)."""
        return cls(
            batch_workers=settings.batch_workers,
            batch_threads_per_worker=settings.batch_threads_per_worker,
            batch_unit_features=settings.batch_unit_features,
            batch_min_units=settings.batch_min_units,
            batch_unit_retries=settings.batch_unit_retries,
            batch_lease_seconds=settings.batch_lease_seconds,
            batch_outputs=list(settings.batch_outputs),
            batch_max_features=settings.batch_max_features,
            batch_max_upload_mb=settings.batch_max_upload_mb,
            batch_seconds_per_feature_interval=settings.batch_seconds_per_feature_interval,
            s3_endpoint_url=settings.s3_endpoint_url,
            batch_features_timeout=settings.batch_features_timeout,
            batch_max_geojson_mb=settings.batch_max_geojson_mb,
            data_dir=Path(settings.data_dir).resolve(),
            dask_scheduler=settings.dask_scheduler or None,
            batch_max_tiles=settings.batch_max_tiles,
            batch_max_tile_pixels=settings.batch_max_tile_pixels,
            batch_seconds_per_megapixel_scene=settings.batch_seconds_per_megapixel_scene,
            batch_max_outputs=settings.batch_max_outputs,
            batch_max_tile_memory_mb=settings.batch_max_tile_memory_mb,
            batch_malloc_trim_threshold=settings.batch_malloc_trim_threshold,
        )

    @property
    def default_output(self) -> str:
        """Where jobs write when the request names no output.

        The first of ``batch_outputs`` when set (a deployment's workers on other hosts
        write to s3://, not to the service's folder), else ``<data_dir>/batch``.
        """
        if self.batch_outputs:
            return self.batch_outputs[0]
        return str(self.data_dir / "batch")

    @property
    def output_prefixes(self) -> list[str]:
        """Folders and URL prefixes jobs may write under."""
        return list(self.batch_outputs) or [self.default_output]

    @property
    def storage_options(self) -> dict[str, Any]:
        """Options of fsspec for s3:// (the endpoint, when not AWS)."""
        if self.s3_endpoint_url:
            return {"client_kwargs": {"endpoint_url": self.s3_endpoint_url}}
        return {}
