"""FastAPI dependencies shared by the tiler routers: sources, items, layers, readers."""

import threading
from dataclasses import dataclass
from typing import Annotated, Literal

import pystac
from fastapi import Path, Query, Request
from pydantic import AfterValidator
from starlette.datastructures import State
from titiler.core.dependencies import DefaultDependency, _parse_asset

from app.catalog import Catalog
from app.db import engine_from_settings
from app.mosaic import MosaicConfig, MosaicService, SearchStore, reader_options_from_settings
from app.security import check_source
from app.settings import Settings

_mosaics_lock = threading.Lock()


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


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
    """The ``url=`` parameter, checked against the allow-list before anything opens it."""
    settings = get_settings(request)
    return check_source(
        url, settings.allowed_prefixes, allow_private=settings.allow_private_sources
    )


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

    def __init__(self, request: Request):
        settings = get_settings(request)
        self.allowed_sources = settings.allowed_prefixes
        self.allow_private = settings.allow_private_sources
        self.scl_mask_classes = list(settings.scl_mask_classes)
        self.max_pixels = settings.max_output_pixels
        self.max_tile_size = settings.max_tile_size


@dataclass(init=False)
class COGReaderParams(DefaultDependency):
    """Limits for the single-COG reader."""

    max_pixels: int
    max_tile_size: int

    def __init__(self, request: Request):
        settings = get_settings(request)
        self.max_pixels = settings.max_output_pixels
        self.max_tile_size = settings.max_tile_size


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
        Literal["scl-clear", "none"] | None,
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
