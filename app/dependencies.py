"""FastAPI dependencies shared by the routers: services, sources, items, layers, readers.

Every router reaches the settings and the app's services (``app.services.Services``,
built by the lifespan of ``create_app``) through the typed dependencies here, never
``app.state``: ``app.dependency_overrides[get_catalog]`` (or ``get_settings``,
``get_item_cache``, ``get_mosaics``, ``get_batch``) then reaches every use.
"""

import hmac
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pystac
from fastapi import Depends, HTTPException, Path, Query, Request
from pydantic import AfterValidator, ValidationError
from rio_tiler.models import ImageData
from starlette.applications import Starlette
from titiler.core.algorithm import BaseAlgorithm
from titiler.core.algorithm import algorithms as available_algorithms
from titiler.core.dependencies import (
    DefaultDependency,
    HistogramParams,
    StatisticsParams,
    _parse_asset,
)

from app.batch import BatchService
from app.budget import MemoryBudget
from app.catalog import Catalog
from app.catalog.cache import ItemCache
from app.errors import BadRequestError
from app.evalscript import EvalscriptLimits
from app.geometry_limits import check_geometry
from app.input_limits import check_json_depth
from app.mosaic import MosaicService
from app.redirects import resolve_redirects
from app.request_checks import check_histogram, check_percentiles
from app.security import check_source
from app.sentinel2 import MaskName
from app.services import Services
from app.settings import Settings


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def app_services(app: Starlette) -> Services:
    """The services of ``app``, as its lifespan built them (ASGI middlewares call this).

    Raises:
        RuntimeError: The lifespan has not run (a ``TestClient`` used without ``with``)
            or has ended.

    """
    services = getattr(app.state, "services", None)
    if services is None:
        raise RuntimeError(
            "the app's services are built by its lifespan: serve it, or use "
            "`with TestClient(app) as client`"
        )
    return services


def get_catalog(request: Request) -> Catalog:
    """The configured catalog backend (swap it with ``app.dependency_overrides``)."""
    return app_services(request.app).catalog


def get_item_cache(
    request: Request, catalog: Annotated[Catalog, Depends(get_catalog)]
) -> ItemCache:
    """The item cache over ``get_catalog``'s catalog.

    An overridden ``get_catalog`` gets a cache of its own for the request: items never
    come from the configured catalog once another one is swapped in.
    """
    cache = app_services(request.app).item_cache
    if cache.catalog is catalog:
        return cache
    return ItemCache(catalog)


def get_mosaics(request: Request) -> MosaicService:
    """The app's ``MosaicService`` (registered searches and their mosaics)."""
    return app_services(request.app).mosaics


def get_batch(request: Request) -> BatchService:
    """The app's ``BatchService`` (its Dask cluster starts with the first job)."""
    return app_services(request.app).batch


def require_api_key(request: Request, settings: SettingsDep) -> None:
    """Refuse requests without a configured API key (when ``api_keys`` is set).

    Every endpoint that writes state depends on it (batch jobs, ``POST /searches/register``);
    the key comes as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``.
    """
    keys = settings.api_keys
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


def allowed_url(
    settings: SettingsDep,
    url: Annotated[str, Query(description="COG or STAC item URL / path (allow-listed)")],
) -> str:
    """The ``url=`` parameter, checked against the allow-list before anything opens it.

    A remote URL's redirects are followed here, each hop checked (``app.redirects``): the
    reader is given the URL that answers, never one outside the allow-list.
    """
    allowed, private = settings.allowed_prefixes, settings.allow_private_sources
    checked = check_source(url, allowed, allow_private=private)
    return resolve_redirects(checked, allowed, allow_private=private)


def catalog_item(
    items: Annotated[ItemCache, Depends(get_item_cache)],
    collection_id: Annotated[str, Path(description="STAC collection id")],
    item_id: Annotated[str, Path(description="STAC item id")],
) -> pystac.Item:
    """The item, resolved through the configured catalog (cached by the item cache)."""
    return items.get(collection_id, item_id)


@dataclass(init=False)
class S2ReaderParams(DefaultDependency):
    """Reader options from the settings: the allow-list, SCL classes and limits."""

    allowed_sources: list[str]
    allow_private: bool
    scl_mask_classes: list[int]
    max_pixels: int
    max_tile_size: int
    budget: MemoryBudget
    evalscript_limits: EvalscriptLimits

    def __init__(self, settings: SettingsDep):
        self.allowed_sources = settings.allowed_prefixes
        self.allow_private = settings.allow_private_sources
        self.scl_mask_classes = list(settings.scl_mask_classes)
        self.max_pixels = settings.max_output_pixels
        self.max_tile_size = settings.max_tile_size
        self.budget = MemoryBudget.from_settings(settings)
        self.evalscript_limits = EvalscriptLimits.from_settings(settings)


@dataclass(init=False)
class COGReaderParams(DefaultDependency):
    """Limits for the single-COG reader; the allow-list hides its folders from messages."""

    max_pixels: int
    max_tile_size: int
    budget: MemoryBudget
    allowed_sources: list[str]

    def __init__(self, settings: SettingsDep):
        self.allowed_sources = settings.allowed_prefixes
        self.max_pixels = settings.max_output_pixels
        self.max_tile_size = settings.max_tile_size
        self.budget = MemoryBudget.from_settings(settings)


def split_assets(values: list[str]) -> list[str]:
    """Repeated ``assets`` and the comma form (``assets=B04,B03,B02``) alike, in order.

    A value with per-asset options (``red|bidx=1,2``) is one asset: its commas are the
    options'.
    """
    assets: list[str] = []
    for value in values:
        if "|" in value:
            assets.append(value)
        else:
            assets.extend(part.strip() for part in value.split(",") if part.strip())
    return assets


@dataclass
class S2AssetsParams(DefaultDependency):
    """The assets ``/info`` and ``/asset_statistics`` describe (titiler's, comma form too)."""

    assets: Annotated[
        list[str],
        AfterValidator(lambda v: _parse_asset(split_assets(v))),
        Query(
            description="Asset keys; common names (`red`) or band names (`B04`); repeated "
            "or comma-separated (`assets=B04,B03`).",
        ),
    ]


@dataclass
class S2LayerParams(DefaultDependency):
    """What to read from a Sentinel-2 item: assets or an expression, mask, harmonization."""

    assets: Annotated[
        list[str] | None,
        AfterValidator(lambda v: _parse_asset(split_assets(v)) if v else v),
        Query(
            description="Asset keys; common names (`red`) or band names (`B04`); repeated "
            "(`assets=red&assets=green`) or comma-separated (`assets=B04,B03,B02`).",
        ),
    ] = None
    expression: Annotated[
        str | None,
        Query(
            description="Band math naming assets directly, e.g. `(nir-red)/(nir+red)` or "
            "`(B08-B04)/(B08+B04)`, or their first band as titiler writes it "
            "(`(nir_b1-red_b1)/(nir_b1+red_b1)`); `;` separates output bands.",
        ),
    ] = None
    evalscript: Annotated[
        str | None,
        Query(
            description="A Sentinel Hub V3 evalscript (instead of `expression`): its setup() "
            "names the input bands, evaluatePixel(sample) computes each pixel. Translated "
            "to numpy where it can be, else run in a sandboxed V8 (README: Evalscripts).",
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
    settings: SettingsDep, params: Annotated[HistogramParams, Depends(HistogramParams)]
) -> HistogramParams:
    """The ``histogram_bins`` / ``histogram_range`` of titiler, checked (400) and bounded."""
    check_histogram(params.bins, params.range, settings.max_histogram_bins)
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

    async def __call__(self, request: Request, settings: SettingsDep) -> None:
        """Refuse (413) a body whose geometry is over a limit, (400) one nested too deep."""
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
