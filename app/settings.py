"""Service settings: one pydantic-settings class, environment prefix ``TERRATILER_``."""

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

EARTH_SEARCH_URL = "https://earth-search.aws.element84.com/v1"
EARTH_SEARCH_COGS = "https://sentinel-cogs.s3.us-west-2.amazonaws.com/"

# The default of ``gdal_skip_drivers`` (GDAL_SKIP, applied by app.gdal_env): drivers whose
# "files" are indirections to other files or URLs (server descriptions, tile indexes,
# catalogs): a crafted document would make GDAL fetch what it names. Sources are GeoTIFFs
# (security.SOURCE_DRIVER); these are never needed.
#
# VRT is deliberately NOT here although a VRT document is the classic way to read
# arbitrary files: rasterio builds in-memory VRTs for its own work
# (warp.calculate_default_transform, which rio-tiler calls for every reprojected tile,
# and boundless window reads at scene edges), so GDAL_SKIP=VRT breaks tiles, crops and
# statistics (see tests/test_security.py). VRT documents are refused instead by
# security.check_source (local files are sniffed) and by opening sources with
# driver=security.SOURCE_DRIVER (GDAL then never tries the VRT driver on them).
SKIPPED_DRIVERS: tuple[str, ...] = (
    "WMS",
    "WMTS",
    "WCS",
    "HTTP",
    "DAAS",
    "EEDA",
    "EEDAI",
    "PLMOSAIC",
    "STACIT",
    "STACTA",
    "GTI",
    "KMLSUPEROVERLAY",
    "DERIVED",
) + (
    # OGR (vector) drivers that are indirections too. The service reads no vector data
    # through GDAL (features files are parsed in Python: app.batch.features), but GDAL is
    # one process-wide driver manager: skipping them means no library call (pyogrio,
    # rasterio) can be talked into following an OGR VRT (<SrcDataSource>CSV:/etc/passwd),
    # reading any text file as CSV, running VirtualOGR from an SQLite file, or querying a
    # server named in a string. GeoJSON and GPKG stay: the demo writes its fields with them.
    # (Database drivers the bundled GDAL builds lack are left out: GDAL warns about each.)
    "OGR_VRT",
    "CSV",
    "SQLite",
    "WFS",
    "OAPIF",
    "CSW",
    "GPSBabel",
    "Carto",
    "Elasticsearch",
    "AmigoCloud",
    "NGW",
    "PLSCENES",
    "MVT",
    "PMTiles",
    "OGR_GMT",
    "XLSX",
    "ODS",
)


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def check_public_url(value: str) -> str:
    """``value`` as a base URL: ``http(s)://host[:port][/prefix]``, no trailing slash.

    Raises:
        ValueError: Not an http(s) URL with a host, or with a query, fragment or user.

    """
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"public_url: {value!r} is not an http(s):// URL with a host")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"public_url: {value!r} must have no query, fragment or user")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


class Settings(BaseSettings):
    """Everything tunable in terratiler; every default works offline."""

    model_config = SettingsConfigDict(env_prefix="TERRATILER_", extra="ignore")

    # Where items come from: a folder of STAC items (LocalCatalog), the same folder on
    # s3:// (collection.json + items/, read once at start-up; s3_endpoint_url applies) or
    # an http(s) STAC API URL.
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
    # Deprecated alias of max_geometry_vertices (it bounded the Statistical API only): set,
    # and max_geometry_vertices not, it is the vertex bound of every geometry.
    stats_max_vertices: int | None = None
    stats_max_intervals: int = 400
    stats_max_outputs: int = 10
    stats_max_scenes: int = 2_000

    # Batch statistics jobs (app.batch.config.BatchConfig).
    # Dask: worker processes (and threads each) of the in-process LocalCluster used when
    # dask_scheduler is unset.
    batch_workers: int = 2
    batch_threads_per_worker: int = 1
    # Work units: at most this many features, and at least this many units per job
    # (smaller units on small jobs keep every worker busy).
    batch_unit_features: int = 1024
    batch_min_units: int = 8
    # A unit whose worker died (or whose task raised) is resubmitted this many times.
    batch_unit_retries: int = 3
    # Jobs are driven by one service replica at a time: it renews its lease every
    # lease/3 s; a job whose lease is older is taken over by another replica.
    batch_lease_seconds: float = 30.0
    # Where jobs may write: folders and s3:// prefixes; a job naming no output writes under
    # the first. Empty: <data_dir>/batch.
    batch_outputs: Annotated[list[str], NoDecode] = []
    # Input limits.
    batch_max_features: int = 1_000_000
    batch_max_upload_mb: int = 512
    # Rough cost of one feature x interval (s) for the analysis' run-time estimate.
    batch_seconds_per_feature_interval: float = 0.002
    # s3:// outputs and inputs: another endpoint than AWS (MinIO, moto ...).
    s3_endpoint_url: str | None = None

    # Cache-Control of successful GET responses ("" to send none).
    cache_control: str = "public, max-age=3600"

    # Sentinel-2: SCL classes that mask=scl-clear turns into nodata.
    scl_mask_classes: Annotated[list[int], NoDecode] = [0, 1, 3, 8, 9, 10, 11]

    # Sources: private/loopback hosts are refused unless the operator opts in.
    allow_private_sources: bool = False

    # Reading (app.datasets): open datasets kept for reuse, threads reading a request's assets.
    dataset_pool_size: int = 128  # idle open datasets per process (0: none)
    dataset_pool_remote_ttl: float = 300.0  # seconds a remote dataset is reused
    reader_threads: int = 16  # per process and pool (remote assets; items)
    # Requests computed at once per process (anyio's worker threads; more wait for one).
    # Memory under load settles near caches + request_threads x a request's working set.
    request_threads: int = 40
    # zlib level of PNG tiles and crops, 1..9 (app.rendering: level 1 is ~3x faster to
    # encode than 6 for ~10 % more bytes).
    png_zlevel: int = 1

    # GDAL (applied once, by app.gdal_env).
    gdal_cachemax_mb: int = 512
    vsi_cache_size: int = 50_000_000
    gdal_http_max_retry: int = 3
    gdal_http_retry_delay: float = 0.5
    gdal_http_timeout: int = 30
    gdal_http_connect_timeout: int = 10
    vsicurl_cache_size: int = 128_000_000
    # Drivers that only point at other files or URLs (see SKIPPED_DRIVERS above).
    gdal_skip_drivers: Annotated[list[str], NoDecode] = list(SKIPPED_DRIVERS)
    # The Sentinel-2 COG bucket is public: unsigned S3 requests.
    aws_no_sign_request: bool = True

    # Batch inputs (issue 12: features files are read without GDAL, app.batch.features).
    # Seconds an http(s) features URL has to answer; it is fetched once, redirects refused.
    batch_features_timeout: float = 30.0
    # GeoJSON (a features file, or a JSON job request with inline features) is parsed whole,
    # at ~15x its size in memory (10 MB peaked at 154 MB): bounded apart from
    # batch_max_upload_mb; larger feature sets go as GeoPackage or GeoParquet.
    batch_max_geojson_mb: int = 64

    # Upstream calls: bounded in time and concurrency; redirects checked hop by hop
    # (issue 12 items 6 and 7).
    # Requests to the STAC API in flight at once per process (waits on its landing page
    # included): a hung upstream holds at most this many server threads.
    stac_max_concurrency: int = 16
    # Seconds a request waits for one of those slots before a 503 naming the limit.
    stac_queue_timeout: float = 1.0
    # Seconds one upstream STAC request may take in all, retries included (stac_timeout
    # bounds each connect and read; an upstream trickling bytes would pass that), then 504.
    stac_request_deadline: float = 60.0
    # Seconds a mosaic request waits for another request's first build of the same search's
    # item index (a catalog search) before a 504; the build goes on.
    mosaic_index_wait: float = 30.0
    # Redirects followed from a remote source (COG, STAC item, features file), each hop
    # checked against the allow-list; 0 refuses every redirect.
    source_max_redirects: int = 3
    # Seconds a checked redirect chain (source -> final URL) is reused before it is checked
    # again (one small ranged GET per hop).
    source_redirect_cache_seconds: float = 300.0

    # Request size and parser bounds (issue 12: one deep filter crashed the process).
    # Bytes of a request body, counted while it streams in (413 past it); batch job
    # creation (/batch/...) takes up to batch_max_upload_mb instead.
    max_body_bytes: int = 16 * 1024 * 1024
    max_query_bytes: int = 32_768  # bytes of a URL's query string (414 past it)
    # Bytes of all request headers (431 past it). uvicorn's default httptools parser has
    # no bound of its own: put a proxy in front, or serve with --http h11, to bound reading.
    max_header_bytes: int = 32_768
    # Nesting of arrays/objects in JSON bodies and JSON parameters (json.loads recurses;
    # a Statistical API request with a MultiPolygon is ~10).
    max_json_depth: int = 48
    # CQL2 filters: characters (413), and nested operations (cql2 0.6 segfaults near 1000
    # and its validation costs ~40 ms per level; a hand-written filter is ~5).
    max_filter_length: int = 65_536
    max_filter_depth: int = 16
    # Entries of a search's ids, collections and sortby lists (413 past it).
    max_search_list_items: int = 10_000

    # Geometries in requests (issue 12, app.geometry_limits): one bound everywhere a
    # geometry comes in (Statistical API, tiler feature/statistics, STAC search intersects
    # and CQL2 filters, registered searches, mosaic statistics, batch features), counted on
    # the raw JSON before shapely or pydantic parse it. Over a bound: a 413 naming it.
    max_geometry_vertices: int = 100_000  # vertices of one request's geometry
    max_geometry_features: int = 100  # features of a FeatureCollection body (one read each)
    # Canonical JSON bytes of a registered search: it is stored, listed by GET /searches and
    # re-parsed when its mosaic index is built (a 10^6-vertex search was 43 MB).
    max_search_bytes: int = 1_000_000

    # Memory of one read request (app.budget): tiles, crops, previews, features, points,
    # statistics and mosaics. Over a limit: a 413 naming the field.
    # Bytes a request may hold at once, estimated before reading as output pixels x bytes
    # per pixel over every band read, harmonized, computed and output (a mosaic: x items
    # in flight and kept). 2 GiB: a true-colour band-math crop (red;green;blue, SCL mask)
    # at the 4096x4096 max_output_pixels needs ~1.4 GiB.
    max_request_bytes: int = 2 * 1024**3
    max_assets_per_request: int = 32  # assets named by one request, repeats counted
    max_bands_per_request: int = 32  # bands read by one request (repeats, SCL mask included)
    max_expression_outputs: int = 16  # `;`-separated outputs of one expression

    # Links and caching (app.public_links). The service's URL as its users reach it, e.g.
    # "https://tiles.example.com/terratiler": every link (TileJSON, STAC, map.html, WMTS)
    # is built from it. Unset: links follow the request's Host, responses holding them are
    # Cache-Control: private and every response carries Vary: Host.
    public_url: str | None = None

    # Canonical JSON bytes of a registered search's metadata (name, bounds, defaults): it is
    # stored and listed with the search (400 past it).
    max_search_metadata_bytes: int = 16_384

    # Result collections of batch processing jobs (createCollection, app.catalog.layered):
    # seconds between reads of their registry in the service database, so a collection
    # registered by another process or replica is served within this time (the process
    # that registers it serves it at once). 0 reads it on every catalog call.
    result_collections_refresh_seconds: float = 2.0
    # Batch processing jobs (issue 14, app.batch.processing). Most tiles one job may have
    # (counted from the grid before any tile is listed: a 413 naming it).
    batch_max_tiles: int = 50_000
    # Most pixels of one tile, buffer included (each output of a tile is held whole in a
    # worker's memory, a median over N scenes N times): a 413 naming it. Grid 3 at 0.0001
    # degree (10^8 pixels) needs it raised.
    batch_max_tile_pixels: int = 25_000_000
    # Rough cost of one megapixel x scene of a tile (s) for the analysis' run-time estimate.
    batch_seconds_per_megapixel_scene: float = 0.05
    # Most outputs of one processing job (each is a band held whole per tile in a worker's
    # memory, one file per tile): a 413 naming it.
    batch_max_outputs: int = 32
    # Most memory one tile's composites may hold in a worker (MB, estimated at analysis: a
    # median keeps every scene of the tile, a stack every date, float32 per pixel): a 413
    # naming it, suggesting a shorter timeRange or smaller tiles.
    batch_max_tile_memory_mb: int = 4096
    # glibc's MALLOC_TRIM_THRESHOLD_ of the LocalCluster workers this service starts. Dask
    # gives its workers 65536 (`distributed.nanny.pre-spawn-environ`): glibc then stops
    # raising its mmap threshold, so every tile-sized array is a fresh mmap whose pages are
    # faulted in again (bench/process.py: about a third more CPU, system time, per tile).
    # None: not set (glibc's dynamic threshold); a number of bytes: that value. A remote
    # cluster (`dask_scheduler`) is its operators' to configure, in the workers' Dask config
    # (`distributed.nanny.pre-spawn-environ`); a MALLOC_TRIM_THRESHOLD_ in this service's own
    # environment wins over the setting (Dask's rule), and its workers inherit it.
    batch_malloc_trim_threshold: int | None = None
    # Animations (issue 18: GET /searches/{id}/bbox/.../{w}x{h}.gif|webp, POST
    # /collections/{id}/animation.gif|webp). Frames (scene dates or intervals) one animation
    # may read: a 400 naming it, suggesting a longer `interval`.
    animation_max_frames: int = 60
    # Output pixels over every frame read (width x height x frames; each frame is also bound
    # by max_output_pixels): a 413 naming it. Every frame's images are held until encoding.
    animation_max_pixels: int = 16_000_000
    # Frames per second at most (`fps`): a 400 naming it. Default `fps` of an animation.
    animation_max_fps: float = 30.0
    animation_default_fps: float = 2.0
    # Seconds all the reads of one animation wait at most (mosaic_time_limit is one crop's);
    # frames not read in time are left out (X-Mosaic-Partial: time-limit).
    animation_time_limit: float = 30.0
    # The preset of a tiler request that names no layer (no assets, expression or preset;
    # items, /stac and searches without a default layer): tiles, TileJSON, WMTS, maps,
    # crops, points and statistics then show it (one of app.expressions.PRESETS, checked
    # at start-up). None or "": such a request is a 400.
    default_preset: str | None = "true-color"
    # Evalscripts (issue 16, app.evalscript). Longest accepted script (characters): a 413
    # naming it, before the script is parsed.
    evalscript_max_chars: int = 100_000
    # Most syntax-tree nodes of one script (esprima's AST): a 413 naming it.
    evalscript_max_nodes: int = 20_000
    # Deepest nesting of the syntax tree: a 413 naming it (the translator recurses over it).
    evalscript_max_depth: int = 200
    # Wall time of all the V8 calls of one request (s): a 408 naming it.
    evalscript_timeout_seconds: float = 5.0
    # Heap of one V8 context (MB): a 413 naming it when a script allocates more.
    evalscript_memory_mb: int = 256
    # Pixels handed to V8 per call (typed arrays in and out, one call per block).
    evalscript_block_pixels: int = 65_536
    # V8 runs scripts in worker processes (a fatal V8 abort must not take the service down):
    # idle workers kept (~60 MB each), scripts run at once (0: the cores, at least 2), and
    # how long a script waits for a turn before a 503 naming evalscript_v8_concurrency.
    evalscript_v8_idle_workers: int = 4
    evalscript_v8_concurrency: int = 0
    evalscript_v8_queue_seconds: float = 30.0
    # Animations made at once per process; one more is a 503 (Retry-After) at once, so that
    # animations (seconds of reads and encoding each) never hold every request thread
    # (request_threads) while tiles wait.
    animation_max_concurrent: int = 4
    # Requests waiting for a V8 turn at once (each holds a request thread while it waits);
    # more are a 503 at once naming it, so V8 requests cannot take every request thread.
    # 0: half of request_threads (at least 1).
    evalscript_v8_max_waiting: int = 0

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

    @model_validator(mode="after")
    def _vertex_alias(self) -> "Settings":
        # stats_max_vertices set (environment, argument or a subclass default) and
        # max_geometry_vertices left at its default: the old name still sets the bound.
        default = Settings.model_fields["max_geometry_vertices"].default
        if (
            self.stats_max_vertices is not None
            and "max_geometry_vertices" not in self.model_fields_set
            and self.max_geometry_vertices == default
        ):
            self.max_geometry_vertices = self.stats_max_vertices
        return self

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

    @field_validator("default_preset")
    @classmethod
    def _default_preset(cls, value: str | None) -> str | None:
        # Presets are named case-insensitively; the name is checked by create_app
        # (app.expressions.PRESETS: settings import nothing of the app).
        return value.strip().lower() if value and value.strip() else None

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        return check_public_url(value) if value and value.strip() else None

    @property
    def catalog_is_remote(self) -> bool:
        """Whether ``catalog`` names a STAC API rather than a local folder."""
        return self.catalog.startswith(("http://", "https://"))

    @property
    def catalog_is_s3(self) -> bool:
        """Whether ``catalog`` names a folder of STAC items on ``s3://``."""
        return self.catalog.startswith("s3://")

    @property
    def allowed_prefixes(self) -> list[str]:
        """The effective allow-list of source prefixes."""
        if self.allowed_sources:
            return list(self.allowed_sources)
        prefixes = [str(self.data_dir.resolve()), EARTH_SEARCH_COGS]
        if self.catalog_is_s3:
            prefixes.insert(0, self.catalog.rstrip("/") + "/")
        elif not self.catalog_is_remote:
            prefixes.insert(0, str(Path(self.catalog).resolve()))
        return prefixes


def default_settings() -> Settings:
    """Every setting at its default, without reading the environment.

    What process-wide state starts with before the service's settings are applied: GDAL's
    options set when ``app`` is imported, the dataset pool and redirect limits of a process
    that never runs ``create_app`` (a Dask worker, a script).
    """
    return Settings.model_construct()
