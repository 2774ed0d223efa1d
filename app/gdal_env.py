"""GDAL's environment, in one place, from settings.

The options go into ``os.environ`` rather than a ``rasterio.Env``: GDAL reads config
options from the process environment as a fallback, so they apply in every thread,
in titiler's and rio-tiler's own reads, and in Dask worker processes the service
spawns (they inherit the environment; remote workers call ``configure_gdal`` too).
"""

import os
from urllib.parse import urlsplit

from app.settings import Settings, default_settings

# Earth-Search COGs (and the demo's) end in .tif; /vsicurl/ then never probes other
# names (.aux.xml, .ovr, .msk) with extra requests. GDAL compares case-insensitively and
# ignores the query string.
ALLOWED_EXTENSIONS = ".tif,.tiff"

# Bytes fetched by the first GET of a COG: the Sentinel-2 headers (tile offsets of a
# 10980 px band and its overviews) fit, so opening is one request.
INGESTED_BYTES_AT_OPEN = 32768


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(int(value))


def gdal_options(settings: Settings | None = None) -> dict[str, str]:
    """Build the GDAL configuration options of the service.

    Args:
        settings: The service Settings (fields ``gdal_cachemax_mb``, ``vsi_cache_size``,
            ``vsicurl_cache_size``, ``gdal_http_max_retry``, ``gdal_http_retry_delay``,
            ``gdal_http_timeout``, ``gdal_http_connect_timeout``, ``gdal_skip_drivers``,
            ``aws_no_sign_request``, ``s3_endpoint_url``); None: their defaults (``default_settings``).

    Returns:
        Option name -> value, every value a string.

    """
    settings = settings if settings is not None else default_settings()
    options = {
        # Never list a COG's "directory" (an S3 prefix with thousands of keys).
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ALLOWED_EXTENSIONS,
        "GDAL_INGESTED_BYTES_AT_OPEN": str(INGESTED_BYTES_AT_OPEN),
        # Per-file cache of what was read (tiles of one COG overlap between requests).
        "VSI_CACHE": "TRUE",
        "VSI_CACHE_SIZE": str(int(settings.vsi_cache_size)),
        # Process-wide cache of /vsicurl/ blocks (headers of recently used COGs).
        "CPL_VSIL_CURL_CACHE_SIZE": str(int(settings.vsicurl_cache_size)),
        # Values under 100000 are megabytes.
        "GDAL_CACHEMAX": str(int(settings.gdal_cachemax_mb)),
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "GDAL_HTTP_MULTIPLEX": "YES",
        # HTTP/2 where TLS negotiates it; plain http stays HTTP/1.1 (no h2c upgrade
        # attempts against local servers).
        "GDAL_HTTP_VERSION": "2TLS",
        "GDAL_HTTP_MAX_RETRY": _number(settings.gdal_http_max_retry),
        "GDAL_HTTP_RETRY_DELAY": _number(settings.gdal_http_retry_delay),
        "GDAL_HTTP_TIMEOUT": _number(settings.gdal_http_timeout),
        "GDAL_HTTP_CONNECTTIMEOUT": _number(settings.gdal_http_connect_timeout),
        # Never send credentials from the host's ~/.netrc to user-chosen URLs.
        "GDAL_HTTP_NETRC": "NO",
        "GDAL_SKIP": " ".join(settings.gdal_skip_drivers),
    }
    if settings.aws_no_sign_request:
        # The Sentinel-2 COG bucket is public: unsigned requests, no credential lookup.
        options["AWS_NO_SIGN_REQUEST"] = "YES"
    if settings.s3_endpoint_url:
        # s3:// sources on another store than AWS (MinIO, moto): GDAL's /vsis3/ reads the
        # endpoint as host[:port], path-style (bucket names need no DNS), TLS per the URL.
        endpoint = urlsplit(settings.s3_endpoint_url)
        options["AWS_S3_ENDPOINT"] = endpoint.netloc
        options["AWS_HTTPS"] = "YES" if endpoint.scheme == "https" else "NO"
        options["AWS_VIRTUAL_HOSTING"] = "FALSE"
    return options


def configure_gdal(settings: Settings | None = None) -> None:
    """Put the service's GDAL options into ``os.environ``.

    Call it once at start-up (``app.services.configure_process``, from ``create_app`` and
    the batch CLI) and in every Dask worker (``app.batch.worker``), before the first
    dataset is opened: ``GDAL_SKIP`` only counts when GDAL registers its drivers, which
    rasterio does once per process at the first ``rasterio.Env`` / ``rasterio.open`` and
    pyogrio at its import. The other options are read at each use.

    Args:
        settings: The service Settings (None: the defaults); see ``gdal_options``.

    """
    options = gdal_options(settings)
    if not options["GDAL_SKIP"]:
        # An empty GDAL_SKIP is meaningless; do not leave one set by an earlier call.
        options.pop("GDAL_SKIP")
        os.environ.pop("GDAL_SKIP", None)
    if "AWS_NO_SIGN_REQUEST" not in options:
        # Signed requests (a private bucket, MinIO): not left unsigned by an earlier call.
        os.environ.pop("AWS_NO_SIGN_REQUEST", None)
    os.environ.update(options)
