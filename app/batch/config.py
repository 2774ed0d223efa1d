"""Batch options: the ``batch_*`` settings with their defaults, read in one place.

Each option is a field of ``app.settings.Settings`` (environment ``TERRATILER_<NAME>``).
Read through ``BatchConfig.from_settings`` so that a settings object lacking a field
(an older one, or a plain object in a test) falls back to the environment variable and
then to the default below.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = ["DEFAULTS", "BatchConfig"]

#: Option name -> default. Types follow the defaults (lists are comma-separated in env).
DEFAULTS: dict[str, Any] = {
    # Dask: worker processes (and threads each) of the in-process LocalCluster used when
    # ``dask_scheduler`` is unset.
    "batch_workers": 2,
    "batch_threads_per_worker": 1,
    # Work units: at most this many features, and at least this many units per job
    # (smaller units on small jobs keep every worker busy).
    "batch_unit_features": 1024,
    "batch_min_units": 8,
    # A unit whose worker died (or whose task raised) is resubmitted this many times.
    "batch_unit_retries": 3,
    # Jobs are driven by one service replica at a time: it renews its lease every
    # lease/3 s; a job whose lease is older is taken over by another replica.
    "batch_lease_seconds": 30.0,
    # Where jobs may write: folders and s3:// prefixes. Empty: ``<data_dir>/batch``.
    "batch_outputs": [],
    # Input limits.
    "batch_max_features": 1_000_000,
    "batch_max_upload_mb": 512,
    # Rough cost of one feature x interval (s) for the analysis' run-time estimate.
    "batch_seconds_per_feature_interval": 0.002,
    # s3:// outputs and inputs: another endpoint than AWS (MinIO, moto ...).
    "s3_endpoint_url": None,
    # Seconds an http(s) features URL has to answer (fetched once, redirects refused).
    "batch_features_timeout": 30.0,
    # GeoJSON (a features file, or a JSON job request with inline features) is parsed whole,
    # at about 15x its size in memory: a smaller bound than batch_max_upload_mb.
    "batch_max_geojson_mb": 64,
}


def _parse(value: str, default: Any) -> Any:
    if isinstance(default, bool):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    if isinstance(default, list):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value or None


def option(settings: Any, name: str) -> Any:
    """One batch option: the settings field, else ``TERRATILER_<NAME>``, else the default."""
    if hasattr(settings, name):
        return getattr(settings, name)
    env = os.environ.get(f"TERRATILER_{name.upper()}")
    if env is not None:
        return _parse(env, DEFAULTS[name])
    return DEFAULTS[name]


@dataclass(frozen=True)
class BatchConfig:
    """The batch options in force (see ``DEFAULTS`` for their meaning)."""

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

    @classmethod
    def from_settings(cls, settings: Any) -> BatchConfig:
        """Read every option from ``settings`` (see ``option``)."""
        values = {name: option(settings, name) for name in DEFAULTS}
        values["data_dir"] = Path(getattr(settings, "data_dir", "data")).resolve()
        values["dask_scheduler"] = getattr(settings, "dask_scheduler", None) or None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @property
    def default_output(self) -> str:
        """Where jobs write when the request names no output."""
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
