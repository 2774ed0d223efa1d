"""FastAPI dependencies shared by the tiler routers: sources, items, layers, readers."""

import hmac
import json
import threading
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pystac
from fastapi import Depends, HTTPException, Path, Query, Request
from pydantic import AfterValidator, ValidationError
from rio_tiler.models import ImageData
from starlette.datastructures import State
from titiler.core.algorithm import BaseAlgorithm
from titiler.core.algorithm import algorithms as available_algorithms
from titiler.core.dependencies import (
    DefaultDependency,
    HistogramParams,
    StatisticsParams,
    _parse_asset,
)

from app.budget import MemoryBudget
from app.catalog import Catalog
from app.db import engine_from_settings
from app.errors import BadRequestError
from app.geometry_limits import check_geometry
from app.input_limits import check_json_depth
from app.mosaic import MosaicConfig, MosaicService, SearchStore, reader_options_from_settings
from app.redirects import resolve_redirects
from app.request_checks import check_histogram, check_percentiles
from app.security import check_source
from app.sentinel2 import MaskName
from app.settings import Settings

_mosaics_lock = threading.Lock()


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


def require_api_key(request: Request) -> None:
    """Refuse requests without a configured API key (when ``api_keys`` is set).

    Every endpoint that writes state depends on it (batch jobs, ``POST /searches/register``);
    the key comes as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``.
    """
    keys = get_settings(request).api_keys
    if not keys:
        return
    given = request.headers.get("x-api-key", "").strip()
    authorization = request.headers.get("authorization", "")
    if not given and authorization[:7].lower() == "bearer ":
        given = authorization[7:].strip()
    if not given:
        raise HTTPException(
            status_code=401,
            detail="an API key is required: send it as X-API-Key or Authorization: Bearer",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not any(hmac.compare_digest(given.encode(), key.encode()) for key in keys):
        raise HTTPException(status_code=403, detail="the API key is not valid")


def mosaic_service(state: State) -> MosaicService:
    """The app's ``MosaicService`` (``app.state.mosaics``), built on first use."""
    service = getattr(state, "mosaics", None)
    if service is None:
        with _mosaics_lock:
            service = getattr(state, "mosaics", None)
            if service is None:
                settings = state.settings
                engine = getattr(state, "db_engine", None)
                if engine is None:
                    engine = state.db_engine = engine_from_settings(settings)
                service = state.mosaics = MosaicService(
                    state.catalog,
                    SearchStore(engine),
                    MosaicConfig.from_settings(settings),
                    reader_options_from_settings(settings),
                )
    return service


def get_catalog(request: Request) -> Catalog:
    """The configured catalog backend (swap it with ``app.dependency_overrides``)."""
    return request.app.state.catalog


def allowed_url(
    request: Request,
    url: Annotated[str, Query(description="COG or STAC item URL / path (allow-listed)")],
) -> str:
    """The ``url=`` parameter, checked against the allow-list before anything opens it.

    A remote URL's redirects are followed here, each hop checked (``app.redirects``): the
    reader is given the URL that answers, never one outside the allow-list.
    """
    settings = get_settings(request)
    allowed, private = settings.allowed_prefixes, settings.allow_private_sources
    checked = check_source(url, allowed, allow_private=private)
    return resolve_redirects(checked, allowed, allow_private=private)


def catalog_item(
    request: Request,
    collection_id: Annotated[str, Path(description="STAC collection id")],
    item_id: Annotated[str, Path(description="STAC item id")],
) -> pystac.Item:
    """The item, resolved through the configured catalog (cached by the item cache)."""
    return request.app.state.item_cache.get(collection_id, item_id)


@dataclass(init=False)
class S2ReaderParams(DefaultDependency):
    """Reader options from the settings: the allow-list, SCL classes and limits."""

    allowed_sources: list[str]
    allow_private: bool
    scl_mask_classes: list[int]
    max_pixels: int
    max_tile_size: int
    budget: MemoryBudget

    def __init__(self, request: Request):
        settings = get_settings(request)
        self.allowed_sources = settings.allowed_prefixes
        self.allow_private = settings.allow_private_sources
        self.scl_mask_classes = list(settings.scl_mask_classes)
        self.max_pixels = settings.max_output_pixels
        self.max_tile_size = settings.max_tile_size
        self.budget = MemoryBudget.from_settings(settings)


@dataclass(init=False)
class COGReaderParams(DefaultDependency):
    """Limits for the single-COG reader; the allow-list hides its folders from messages."""

    max_pixels: int
    max_tile_size: int
    budget: MemoryBudget
    allowed_sources: list[str]

    def __init__(self, request: Request):
        settings = get_settings(request)
        self.allowed_sources = settings.allowed_prefixes
        self.max_pixels = settings.max_output_pixels
        self.max_tile_size = settings.max_tile_size
        self.budget = MemoryBudget.from_settings(settings)


@dataclass
class S2LayerParams(DefaultDependency):
    """What to read from a Sentinel-2 item: assets or an expression, mask, harmonization."""

    assets: Annotated[
        list[str] | None,
        AfterValidator(lambda v: _parse_asset(v) if v else v),
        Query(
            description="Asset keys; common names (`red`) or band names (`B04`).",
        ),
    ] = None
    expression: Annotated[
        str | None,
        Query(
            description="Band math naming assets directly, e.g. `(nir-red)/(nir+red)` or "
            "`(B08-B04)/(B08+B04)`; `;` separates output bands.",
        ),
    ] = None
    asset_as_band: Annotated[
        bool | None, Query(description="Treat each asset as a one-band dataset.")
    ] = None
    mask: Annotated[
        MaskName | None,
        Query(
            description="`scl-clear`: cloud, shadow, cirrus, snow, saturated and nodata "
            "pixels (the configured SCL classes) become nodata.",
        ),
    ] = None
    harmonize: Annotated[
        bool | None,
        Query(
            description="Reflectance = DN * scale + offset from `raster:bands`. Default: "
            "on for expressions, off for plain assets.",
        ),
    ] = None


@dataclass(frozen=True)
class CheckedAlgorithm:
    """A titiler algorithm whose failures on the request's image are the request's (400).

    An algorithm gets whatever the request read: hillshade on three bands or a cast of
    an empty layer fails inside the algorithm, with the caller's choice to blame.
    """

    name: str
    algorithm: BaseAlgorithm

    def __call__(self, image: ImageData) -> ImageData:
        """Apply the algorithm to ``image``."""
        try:
            return self.algorithm(image)
        except (ValueError, TypeError, IndexError, ArithmeticError) as exc:
            raise BadRequestError(f"algorithm {self.name}: {exc}") from exc


def post_process(
    algorithm: Annotated[
        Literal[tuple(available_algorithms.list())] | None,
        Query(description="Algorithm name"),
    ] = None,
    algorithm_params: Annotated[
        str | None,
        Query(description="The algorithm's parameters, a JSON object"),
    ] = None,
) -> CheckedAlgorithm | None:
    """Post-processing by titiler's ``algorithm`` / ``algorithm_params``; bad input: 400.

    titiler's own dependency passes any JSON value as keyword arguments, so ``null`` or
    ``[1]`` there is a 500.
    """
    if not algorithm:
        return None
    try:
        params: Any = json.loads(algorithm_params) if algorithm_params else {}
    except ValueError as exc:
        raise BadRequestError(f"algorithm_params: not JSON ({exc})") from exc
    if not isinstance(params, dict):
        raise BadRequestError("algorithm_params: must be a JSON object of parameter names")
    try:
        return CheckedAlgorithm(algorithm, available_algorithms.get(algorithm)(**params))
    except (ValidationError, TypeError) as exc:
        raise BadRequestError(f"algorithm_params: {exc}") from exc


def histogram_params(
    request: Request, params: Annotated[HistogramParams, Depends(HistogramParams)]
) -> HistogramParams:
    """The ``histogram_bins`` / ``histogram_range`` of titiler, checked (400) and bounded."""
    check_histogram(params.bins, params.range, get_settings(request).max_histogram_bins)
    return params


def statistics_params(
    params: Annotated[StatisticsParams, Depends(StatisticsParams)],
) -> StatisticsParams:
    """The ``categorical`` / ``c`` / ``p`` statistics options of titiler, checked (400)."""
    check_percentiles(params.percentiles)
    return params


@dataclass(frozen=True)
class GeometryBody:
    """Route dependency: the JSON body's geometry within ``max_geometry_*``, before parsing.

    FastAPI solves a route's dependencies before it validates the body, and the body it
    decoded is cached on the request: this check sees the raw JSON before geojson-pydantic
    or shapely build anything from it (``app.geometry_limits``).

    Attributes:
        path: Dotted path of the geometry in the body (``""``: the body itself).
    """

    path: str = ""

    async def __call__(self, request: Request) -> None:
        """Refuse (413) a body whose geometry is over a limit, (400) one nested too deep."""
        settings = request.app.state.settings
        # RequestLimitMiddleware checks the nesting of JSON content types only; a deep body
        # sent as text/plain (or any other type) reached json.loads here: RecursionError, 500.
        check_json_depth(await request.body(), settings.max_json_depth)
        try:
            value: Any = await request.json()
        except ValueError:  # not JSON (UnicodeDecodeError too): FastAPI's 422 says so
            return
        for key in self.path.split(".") if self.path else ():
            value = value.get(key) if isinstance(value, dict) else None
        check_geometry(
            value,
            self.path or "body",
            settings.max_geometry_vertices,
            settings.max_geometry_features,
        )
