"""A job's analysis: check the request and features, plan the units, estimate the work.

Validate the request, read and check the features, plan and stage the work units, count
scenes and intervals, estimate the run time.

It reads the features once; afterwards every worker reads its unit from the staged file.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any

from app.batch.config import BatchConfig
from app.batch.features import FeatureTable, read_features
from app.batch.models import BatchStatisticalRequest
from app.batch.naming import check_naming
from app.batch.storage import JobFiles, Storage
from app.batch.units import UnitPlan, plan_units, stage_features
from app.catalog.base import SearchQuery
from app.errors import BadRequestError, NotFoundError
from app.settings import Settings
from app.stac_fields import item_datetime
from app.stats.models import StatisticalRequest
from app.stats.plan import Plan, band_math_assets, make_plan

__all__ = ["Analysis", "analyse", "load_features", "validate_request"]

# Scenes counted at most (a remote catalog is paged through to count them).
MAX_COUNTED_SCENES = 10_000
# Invalid features listed in the analysis (all are in the outputs).
MAX_LISTED = 1000


@dataclass
class Analysis:
    """What the analysis found: figures for the client, unit sizes for the store."""

    summary: dict[str, Any]
    unit_sizes: list[int]


def validate_request(
    request: BatchStatisticalRequest, settings: Settings, catalog: Any = None
) -> Plan:
    """The statistics part of the request, validated (expressions, intervals, limits).

    Args:
        request: The batch statistics request.
        settings: The service settings.
        catalog: The catalog, whose collection names the assets band math may use (a
            batch processing result collection has its own); None: Sentinel-2's.

    """
    model = StatisticalRequest.model_validate(request.statistics_request())
    data = request.input.data
    assets = band_math_assets(catalog, data[0].collection_id if data else "", settings)
    return make_plan(model, settings, assets)


def load_features(source: dict[str, Any], storage: Storage, config: BatchConfig) -> FeatureTable:
    """Read the job's features from where ``source`` says (a checked path/URL or the upload)."""
    href = source["href"]
    remote = "://" in href
    return read_features(
        href,
        storage=Storage.for_url(href, config.storage_options) if remote else storage,
        layer=source.get("layer"),
        name=source.get("name") or href,
        max_features=config.batch_max_features,
        max_bytes=config.batch_max_upload_mb * 1024 * 1024,
        max_geojson_bytes=config.batch_max_geojson_mb * 1024 * 1024,
        timeout=config.batch_features_timeout,
    )


def _scenes(
    plan: Plan, catalog: Any, bbox: tuple[float, float, float, float]
) -> tuple[int, int, bool]:
    """Scenes over the features in the time range, intervals having any, whether capped."""
    try:
        catalog.get_collection(plan.collection)
    except NotFoundError:
        raise BadRequestError(
            f"input.data[0].type: unknown collection '{plan.collection}'"
        ) from None
    query = SearchQuery.scenes(plan.collection, plan.time_range, plan.max_cloud_coverage, bbox=bbox)
    starts = [start for start, _ in plan.intervals]
    begin, end = plan.time_range
    count, hit = 0, set()
    for item in catalog.search(query, max_items=MAX_COUNTED_SCENES + 1):
        when = item_datetime(item)
        if when is None or not begin <= when < end:  # the engine's [from, to)
            continue
        count += 1
        k = bisect.bisect_right(starts, when) - 1
        if k >= 0 and when < plan.intervals[k][1]:
            hit.add(k)
    return min(count, MAX_COUNTED_SCENES), len(hit), count > MAX_COUNTED_SCENES


def analyse(
    request: BatchStatisticalRequest,
    source: dict[str, Any],
    files: JobFiles,
    storage: Storage,
    catalog: Any,
    settings: Settings,
    config: BatchConfig,
    parallelism: int,
) -> Analysis:
    """Analyse a job and stage its features.

    Raises:
        BadRequestError: An invalid request, unreadable features, no features at all.
        TooLargeError: Over a features limit.

    """
    plan = validate_request(request, settings, catalog)
    features = load_features(source, storage, config)
    if len(features) == 0:
        raise BadRequestError("input.features: the file has no features")
    check_naming(features, request.naming)
    units: UnitPlan = plan_units(
        features,
        config.batch_unit_features,
        config.batch_min_units,
        settings.max_geometry_vertices,
    )
    stage_features(storage, files.features, features, units)
    scenes = intervals_with_scenes = 0
    capped = False
    if units.bbox is not None:
        scenes, intervals_with_scenes, capped = _scenes(plan, catalog, units.bbox)
    valid = len(features) - len(units.invalid)
    work = valid * intervals_with_scenes
    estimate = work * config.batch_seconds_per_feature_interval / max(parallelism, 1)
    invalid = [
        {
            "id": int(features.ids[p]),
            "identifier": features.identifier(p),
            "error": message,
        }
        for p, message in list(units.invalid.items())[:MAX_LISTED]
    ]
    summary = {
        "featureCount": len(features),
        "validFeatureCount": valid,
        "invalidFeatureCount": len(units.invalid),
        "invalidFeatures": invalid,
        "hasIdentifier": features.identifiers is not None,
        "crs": features.crs,
        "bbox": list(units.bbox) if units.bbox else None,
        "sceneCount": scenes,
        "sceneCountCapped": capped,
        "intervalCount": len(plan.intervals),
        "intervalsWithScenes": intervals_with_scenes,
        "outputs": [output.name for output in plan.outputs],
        "unitCount": units.count,
        "unitSize": units.unit_size,
        "workers": parallelism,
        "estimatedSeconds": round(math.ceil(estimate * 10) / 10, 1),
    }
    return Analysis(summary=summary, unit_sizes=units.sizes())
