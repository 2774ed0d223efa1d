"""ASGI middlewares that rewrite or refuse tiler requests before FastAPI parses them.

- ``TileScaleMiddleware``: ``.../tiles/{tms}/{z}/{x}/{y}@2x.png`` (the TiTiler 0.x / Leaflet
  retina form) becomes ``.../tiles/{tms}/{z}/{x}/{y}.png?tilesize=512``.
- ``ZoomRangeMiddleware``: ``minzoom`` / ``maxzoom`` outside every tile matrix set's zoom
  levels are a 400 before a route loops over them (titiler builds one tile matrix per
  level: ``maxzoom=1000`` was seconds of CPU, then an overflow).
- ``CRSQueryMiddleware``: CRS query values rasterio fails on other than by ValueError
  are a 400, on every route.

They apply to every route alike (the retina URL form is a path no route declares; titiler
2.4 registers no ``@{scale}x`` tile routes). Presets and search defaults are not here: the
factories' layer dependencies resolve them (``app.layers``).
"""

import re
from urllib.parse import parse_qsl, urlencode

import morecantile
from rasterio.crs import CRS
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app.crs_input import crs_text_error
from app.evalscript.budget import request_budget

_TILE_SCALE = re.compile(r"^(?P<head>.*/tiles/[^/]+/\d+/\d+/\d+)@(?P<scale>[1-4])x(?P<ext>\.\w+)?$")
TILE_SIZE = 256


# The zoom levels of the tile matrix sets the service knows (morecantile's: -10..28).
ZOOM_LEVELS = range(
    min(morecantile.tms.get(name).minzoom for name in morecantile.tms.list()),
    max(morecantile.tms.get(name).maxzoom for name in morecantile.tms.list()) + 1,
)
_ZOOM_PARAMETERS = ("minzoom", "maxzoom")
# titiler's CRS query parameters (titiler.core.dependencies, all read by validate_crs).
_CRS_PARAMETERS = frozenset({"crs", "coord_crs", "dst_crs"})


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


class V8BudgetMiddleware:
    """Every request's V8 calls share ``evalscript_timeout_seconds`` of V8 time.

    A search tile's items, a crop's reads: one request cannot run items x timeout seconds.
    """

    def __init__(self, app: ASGIApp, seconds: float):
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request within one V8 budget (app.evalscript.budget)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with request_budget(self.seconds):
            await self.app(scope, receive, send)
