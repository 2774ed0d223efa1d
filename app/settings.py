"""Service settings: one pydantic-settings class, environment prefix ``TERRATILER_``."""

from pathlib import Path
from typing import Annotated

from pydantic import field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.datasets import DEFAULT_MAX_IDLE, DEFAULT_READER_THREADS, DEFAULT_REMOTE_TTL
from app.gdal_env import SKIPPED_DRIVERS
from app.public_links import check_public_url
from app.rendering import DEFAULT_PNG_ZLEVEL

EARTH_SEARCH_URL = "https://earth-search.aws.element84.com/v1"
EARTH_SEARCH_COGS = "https://sentinel-cogs.s3.us-west-2.amazonaws.com/"


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Everything tunable in terratiler; every default works offline."""

    model_config = SettingsConfigDict(env_prefix="TERRATILER_", extra="ignore")

    # Where items come from: a folder of STAC items (LocalCatalog) or an http(s) STAC API URL.
    catalog: str = "data/demo"
    collection: str = "sentinel-2-l2a"
    data_dir: Path = Path("data")

    # URL / path prefixes the service may read COGs from. Empty: the catalog folder (when
    # local), the data folder and the Earth-Search COG bucket.
    allowed_sources: Annotated[list[str], NoDecode] = []

    database_url: str | None = None
    dask_scheduler: str | None = None
    # Keys that writes (batch jobs, POST /searches/register) require; unset or "": no
    # authentication. A non-blank value that yields no key (" , ") is a start-up error.
    api_keys: Annotated[list[str], NoDecode] = []

    # Upstream STAC API behaviour.
    stac_timeout: float = 30.0
    stac_retries: int = 3
    stac_backoff: float = 0.5

    # Request bounds.
    max_search_limit: int = 1000
    default_search_limit: int = 10

    max_output_pixels: int = 4096 * 4096
    max_tile_size: int = 1024
    max_histogram_bins: int = 1000  # bins of a histogram: tiler statistics, Statistical API
    item_cache_ttl: float = 300.0
    item_cache_size: int = 4096

    # Mosaics of registered searches (/searches).
    mosaic_min_zoom: int = 7  # WebMercatorQuad zoom; below it a tile is a 400
    mosaic_max_items_per_tile: int = 50  # items read per tile / crop / feature
    mosaic_max_items_per_point: int = 500
    mosaic_time_limit: float = 5.0  # seconds per tile / crop / feature / point
    mosaic_max_search_items: int = 2000  # a bigger search is a 413
    mosaic_index_ttl: float = 300.0  # seconds before a search's item list is refreshed
    mosaic_index_max_items: int = 20_000  # items held in memory over all searches
    mosaic_threads: int = 4  # item reads in flight per request

    # Statistical API limits (400 naming the field when exceeded).
    stats_max_pixels: int = 25_000_000
    stats_max_vertices: int = 100_000
    stats_max_intervals: int = 400
    stats_max_outputs: int = 10
    stats_max_scenes: int = 2_000

    # Batch statistics jobs (app.batch.config documents each).
    batch_workers: int = 2
    batch_threads_per_worker: int = 1
    batch_unit_features: int = 1024
    batch_min_units: int = 8
    batch_unit_retries: int = 3
    batch_lease_seconds: float = 30.0
    batch_outputs: Annotated[list[str], NoDecode] = []
    batch_max_features: int = 1_000_000
    batch_max_upload_mb: int = 512
    batch_seconds_per_feature_interval: float = 0.002
    s3_endpoint_url: str | None = None

    # Cache-Control of successful GET responses ("" to send none).
    cache_control: str = "public, max-age=3600"

    # Sentinel-2: SCL classes that mask=scl-clear turns into nodata.
    scl_mask_classes: Annotated[list[int], NoDecode] = [0, 1, 3, 8, 9, 10, 11]

    # Sources: private/loopback hosts are refused unless the operator opts in.
    allow_private_sources: bool = False

    # Reading (app.datasets): open datasets kept for reuse, threads reading a request's assets.
    dataset_pool_size: int = DEFAULT_MAX_IDLE  # idle open datasets per process (0: none)
    dataset_pool_remote_ttl: float = DEFAULT_REMOTE_TTL  # seconds a remote dataset is reused
    reader_threads: int = DEFAULT_READER_THREADS  # per process and pool (remote assets; items)
    # zlib level of PNG tiles and crops, 1..9 (app.rendering: level 1 is ~3x faster to
    # encode than 6 for ~10 % more bytes).
    png_zlevel: int = DEFAULT_PNG_ZLEVEL

    # GDAL (applied once, by app.gdal_env).
    gdal_cachemax_mb: int = 512
    vsi_cache_size: int = 50_000_000
    gdal_http_max_retry: int = 3
    gdal_http_retry_delay: float = 0.5
    gdal_http_timeout: int = 30
    gdal_http_connect_timeout: int = 10
    vsicurl_cache_size: int = 128_000_000
    # Drivers that only point at other files or URLs (see app.gdal_env.SKIPPED_DRIVERS).
    gdal_skip_drivers: Annotated[list[str], NoDecode] = list(SKIPPED_DRIVERS)
    # The Sentinel-2 COG bucket is public: unsigned S3 requests.
    aws_no_sign_request: bool = True

    # Links and caching (app.public_links). The service's URL as its users reach it, e.g.
    # "https://tiles.example.com/terratiler": every link (TileJSON, STAC, map.html, WMTS)
    # is built from it. Unset: links follow the request's Host, responses holding them are
    # Cache-Control: private and every response carries Vary: Host.
    public_url: str | None = None

    @field_validator(
        "allowed_sources",
        "scl_mask_classes",
        "gdal_skip_drivers",
        "batch_outputs",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _api_keys(cls, value: object) -> object:
        # " , " or [" "] means someone meant to set keys: silently running without
        # authentication would be the worst reading of it.
        given = value.strip() if isinstance(value, str) else value
        keys = _split_commas(value)
        if given and isinstance(keys, list) and not any(str(k).strip() for k in keys):
            raise ValueError(
                f"api_keys: {value!r} holds no key; give comma-separated keys, or leave "
                "TERRATILER_API_KEYS unset (or empty) to run without authentication"
            )
        return [str(k).strip() for k in keys if str(k).strip()] if isinstance(keys, list) else keys

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        return check_public_url(value) if value and value.strip() else None

    @property
    def catalog_is_remote(self) -> bool:
        """Whether ``catalog`` names a STAC API rather than a local folder."""
        return self.catalog.startswith(("http://", "https://"))

    @property
    def allowed_prefixes(self) -> list[str]:
        """The effective allow-list of source prefixes."""
        if self.allowed_sources:
            return list(self.allowed_sources)
        prefixes = [str(self.data_dir.resolve()), EARTH_SEARCH_COGS]
        if not self.catalog_is_remote:
            prefixes.insert(0, str(Path(self.catalog).resolve()))
        return prefixes
