"""The batch statistics request: ``POST /statistics``'s, with features and an output.

That is the statistics request without ``input.bounds``, plus ``input.features`` (where
the geometries come from) and ``output`` (where results go).

``input.features`` is a path or URL (``s3://bucket/fields.gpkg``, a local path under the
allowed sources, ``https://...``), an object ``{"href", "layer"}`` (or Sentinel Hub's
``{"s3": {"url"}}``), an inline GeoJSON FeatureCollection, or absent when the file is
uploaded with the request (multipart). ``output`` is a folder or ``s3://`` prefix (or
``{"path"}`` / ``{"s3": {"url"}}``); results go to ``<output>/<job_id>/``. ``naming`` chooses
the per-feature file names (``app.batch.naming``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from app.batch.naming import Naming
from app.stats.models import Bounds, RequestInput, StatisticalRequest

__all__ = ["BatchInput", "BatchStatisticalRequest", "FeatureSource"]


class FeatureSource(BaseModel):
    """A features file by reference."""

    model_config = ConfigDict(extra="ignore")

    href: str = Field(description="Path or URL: local (allow-listed), s3://, http(s)://.")
    layer: str | None = Field(default=None, description="Layer of a multi-layer GeoPackage.")


class BatchInput(RequestInput):
    """The collection and the features (``input.bounds`` is not used by batch jobs)."""

    # Declared only to refuse it with a clear message; hidden from the schema.
    bounds: SkipJsonSchema[Bounds | None] = None
    features: FeatureSource | dict[str, Any] | None = Field(
        default=None,
        description="A path/URL, {href, layer}, {s3: {url}}, an inline GeoJSON "
        "FeatureCollection, or omitted when the file is uploaded (multipart `features`).",
    )

    @field_validator("features", mode="before")
    @classmethod
    def _features(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"href": value}
        if isinstance(value, dict) and isinstance(value.get("s3"), dict):
            return {"href": value["s3"].get("url", ""), "layer": value.get("layer")}
        return value

    @model_validator(mode="after")
    def _no_bounds(self) -> BatchInput:
        if self.bounds is not None:
            raise ValueError(
                "input.bounds is not used by batch jobs: give the geometries as input.features"
            )
        if isinstance(self.features, dict) and self.features.get("type") != "FeatureCollection":
            raise ValueError(
                "input.features: give a path/URL, {href}, {s3: {url}} or a GeoJSON "
                "FeatureCollection"
            )
        return self


class BatchStatisticalRequest(StatisticalRequest):
    """A batch statistics job: the statistics request, its features and its output."""

    input: BatchInput
    output: str | None = Field(
        default=None,
        description="Folder or s3:// prefix the job writes `<output>/<job_id>/` under "
        "(default: the service's batch folder).",
    )
    naming: Naming = Field(
        default="id",
        description="Per-feature file names: `id` (Sentinel Hub's `<id>.json`) or "
        "`identifier` (`<identifier>.json`, the features' `identifier` column made file-safe; "
        "every feature needs a distinct one).",
    )

    @field_validator("output", mode="before")
    @classmethod
    def _output(cls, value: Any) -> Any:
        if isinstance(value, dict):
            if isinstance(value.get("s3"), dict):
                return value["s3"].get("url")
            return value.get("path") or value.get("url")
        return value

    def statistics_request(self) -> dict[str, Any]:
        """The part ``compute_many`` takes: the request without features and output."""
        body = self.model_dump(by_alias=True, exclude_none=True, exclude={"output", "naming"})
        body["input"].pop("features", None)
        return body
