"""ASGI middlewares that rewrite tiler requests before FastAPI parses them.

- ``PresetMiddleware``: ``preset=ndvi`` expands into the query parameters it stands for
  (assets or expression, rescale, colormap, harmonize); parameters the caller gave win.
- ``TileScaleMiddleware``: ``.../tiles/{tms}/{z}/{x}/{y}@2x.png`` (the TiTiler 0.x / Leaflet
  retina form) becomes ``.../tiles/{tms}/{z}/{x}/{y}.png?tilesize=512``.
- ``ZoomRangeMiddleware``: ``minzoom`` / ``maxzoom`` outside every tile matrix set's zoom
  levels are a 400 before a route loops over them (titiler builds one tile matrix per
  level: ``maxzoom=1000`` was seconds of CPU, then an overflow).
- ``SearchDefaultsMiddleware``: a request for a registered search's tiles, TileJSON, map,
  crops, points or statistics gets the search's ``metadata.defaults`` for the parameters
  it does not give (``app.mosaic.with_defaults``), before presets are expanded.

They work on the raw scope so that titiler's factories, and their OpenAPI, stay as they are.
"""

import json
import re
from urllib.parse import parse_qsl, urlencode

import morecantile
from anyio import to_thread
from rasterio.crs import CRS
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app.asgi_paths import route_path
from app.crs_input import crs_text_error
from app.dependencies import app_services
from app.errors import NotFoundError, TerratilerError
from app.expressions import get_preset
from app.mosaic import with_defaults

_TILE_SCALE = re.compile(r"^(?P<head>.*/tiles/[^/]+/\d+/\d+/\d+)@(?P<scale>[1-4])x(?P<ext>\.\w+)?$")
_PRESET_PREFIXES = ("/stac/", "/collections/", "/searches/")
TILE_SIZE = 256
# The /searches/{id}/... endpoints that read the search's layer.
_SEARCH_LAYER = re.compile(
    r"^/searches/(?P<id>[^/]+)/(tiles/|bbox/|point/|statistics$|[^/]+/(tilejson\.json|map\.html)$)"
)


# The zoom levels of the tile matrix sets the service knows (morecantile's: -10..28).
ZOOM_LEVELS = range(
    min(morecantile.tms.get(name).minzoom for name in morecantile.tms.list()),
    max(morecantile.tms.get(name).maxzoom for name in morecantile.tms.list()) + 1,
)
_ZOOM_PARAMETERS = ("minzoom", "maxzoom")
# titiler's CRS query parameters (titiler.core.dependencies, all read by validate_crs).
_CRS_PARAMETERS = frozenset({"crs", "coord_crs", "dst_crs"})


def _preset_params(name: str, given: set[str]) -> list[tuple[str, str]]:
    """The query parameters a preset adds to a request that already has ``given``."""
    preset = get_preset(name)
    params: list[tuple[str, str]] = []
    if not given & {"assets", "expression"}:
        if preset.expression:
            params.append(("expression", preset.expression))
        for asset in preset.assets or ():
            params.append(("assets", asset))
    if "rescale" not in given and preset.rescale:
        params.extend(("rescale", f"{lo},{hi}") for lo, hi in preset.rescale)
    if not given & {"colormap", "colormap_name"}:
        if preset.colormap_name:
            params.append(("colormap_name", preset.colormap_name))
        elif preset.colormap:
            colormap = {str(k): list(v) for k, v in preset.colormap.items()}
            params.append(("colormap", json.dumps(colormap)))
    if "harmonize" not in given:
        params.append(("harmonize", "true" if preset.harmonize else "false"))
    return params


class PresetMiddleware:
    """Expand ``preset=`` on tiler paths into the parameters it stands for."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Rewrite the query string of HTTP requests that carry ``preset=``."""
        if scope["type"] == "http" and route_path(scope).startswith(_PRESET_PREFIXES):
            query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            presets = [v for k, v in query if k == "preset"]
            if presets:
                rest = [(k, v) for k, v in query if k != "preset"]
                try:
                    added = _preset_params(presets[-1], {k for k, _ in rest})
                except TerratilerError as exc:
                    response = JSONResponse({"detail": exc.message}, status_code=exc.status_code)
                    await response(scope, receive, send)
                    return
                scope = dict(scope)
                scope["query_string"] = urlencode(rest + added).encode("latin-1")
        await self.app(scope, receive, send)


class TileScaleMiddleware:
    """Serve ``{z}/{x}/{y}@{scale}x[.{format}]`` tile URLs as ``tilesize=256*scale``."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Rewrite the path and query of ``@Nx`` tile requests."""
        if scope["type"] == "http" and "@" in scope["path"]:
            match = _TILE_SCALE.match(scope["path"])
            if match:
                query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
                if not any(k == "tilesize" for k, _ in query):
                    query.append(("tilesize", str(TILE_SIZE * int(match["scale"]))))
                scope = dict(scope)
                scope["path"] = match["head"] + (match["ext"] or "")
                scope["raw_path"] = scope["path"].encode()
                scope["query_string"] = urlencode(query).encode("latin-1")
        await self.app(scope, receive, send)


class SearchDefaultsMiddleware:
    """Complete requests for a registered search's layer with its ``metadata.defaults``."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Add the search's defaults to the query string (unknown searches pass as they are)."""
        if scope["type"] == "http" and (match := _SEARCH_LAYER.match(route_path(scope))):
            service = app_services(scope["app"]).mosaics
            try:
                record = await to_thread.run_sync(service.get, match["id"])
            except NotFoundError:
                record = None
            defaults = record.metadata.get("defaults") if record is not None else None
            if defaults:
                query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
                scope = dict(scope)
                scope["query_string"] = urlencode(with_defaults(query, defaults)).encode("latin-1")
        await self.app(scope, receive, send)


class _QueryCheckMiddleware:
    """Answer 400 when a query parameter fails ``check``, before any route parses it.

    Subclasses set ``marker`` (bytes any checked parameter's ``name=`` contains, so that
    other requests pass untouched) and ``check(key, value)`` (the error, or None).
    """

    marker: bytes = b""

    def __init__(self, app: ASGIApp):
        self.app = app

    @staticmethod
    def check(key: str, value: str) -> str | None:
        """The error message of one query parameter, or None."""
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the query parameters, then pass the request on."""
        query_string = scope["type"] == "http" and scope["query_string"]
        # A percent-encoded name (``%63rs=`` is ``crs=`` to titiler) hides from the marker.
        if query_string and (self.marker in query_string or b"%" in query_string):
            query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            for key, value in query:
                detail = self.check(key, value)
                if detail is not None:
                    await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class ZoomRangeMiddleware(_QueryCheckMiddleware):
    """Refuse ``minzoom`` / ``maxzoom`` query values outside ``ZOOM_LEVELS`` (400)."""

    marker = b"zoom="

    @staticmethod
    def check(key: str, value: str) -> str | None:
        """A zoom parameter outside every tile matrix set."""
        if key in _ZOOM_PARAMETERS:
            try:
                # As pydantic reads an int: "+1000", " 1000" and "1000.0" are 1000 too.
                zoom = float(value.strip())
            except ValueError:
                return None  # not a number: titiler's own 422
            if not ZOOM_LEVELS.start <= zoom < ZOOM_LEVELS.stop:
                return (
                    f"{key}: {value} is not a zoom level of any tile matrix set "
                    f"({ZOOM_LEVELS.start}..{ZOOM_LEVELS.stop - 1})"
                )
        return None


class CRSQueryMiddleware(_QueryCheckMiddleware):
    """Refuse CRS query values that titiler's own check lets crash (400).

    titiler's ``validate_crs`` turns the ValueError of ``CRS.from_user_input`` into a 422,
    but lets its other errors through: ``coord_crs=[[1]]`` (a TypeError) was a 500 on
    every endpoint that takes a CRS.
    """

    marker = b"crs="

    @staticmethod
    def check(key: str, value: str) -> str | None:
        """A CRS parameter rasterio fails on other than by ValueError."""
        return _crs_error(key, value) if key in _CRS_PARAMETERS else None


def _crs_error(key: str, value: str) -> str | None:
    # As titiler reads it: brackets around the value are dropped (OGC Maps style).
    text = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    refusal = crs_text_error(text)
    if refusal is not None:
        # Before anything parses it: GDAL fetches URLs and reads files given as a CRS.
        return f"{key}: {refusal}"
    try:
        CRS.from_user_input(text)
    except ValueError:
        return None  # titiler answers these itself (422)
    except Exception as error:  # whatever else rasterio raises, the input is bad
        return f"{key}: not a CRS rasterio can read ({type(error).__name__}: {error})"
    return None
