"""The layer of a tiler request: the caller's parameters, a search's defaults, a preset.

Each layer parameter (``assets``, ``expression``, ``mask``, ``rescale``, ``colormap_name``,
``nodata``, ``pixel_selection`` ...) resolves on its own:

1. the caller's value;
2. else the search's default (``metadata.defaults``; a request naming a layer of its own
   takes no layer default: ``app.mosaic.with_defaults``);
3. else the preset's value (the caller's ``preset``, else the search's default one, else,
   when neither names a layer, the ``default_preset`` setting: ``true-color``);
4. else the parameter's own default.

``complete_query`` writes that rule once, as the request's query completed with what the
defaults and the preset add (``LayerQuery``). ``LayerDependencies(defaults)`` builds, for
one source of defaults (``no_defaults`` for items and ``/stac``, ``search_defaults`` for
``/searches/{search_id}``), the dependencies a factory plugs in: titiler's own (and
terratiler's layer), each parsed from the completed query, so their parameters, checks and
422s are titiler's. ``/cog`` takes none of them: it has no presets.

The links a route returns (TileJSON ``tiles``, map.html's TileJSON and point URLs, tileset
links) carry the completed query: a map keeps the layer it was given when the search's
defaults change, and the viewer sees what a preset stands for.
"""

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path, Query, Request
from fastapi.dependencies.utils import get_dependant, request_params_to_args
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import QueryParams
from titiler.core.dependencies import (
    ColorMapParams,
    DatasetParams,
    ImageRenderingParams,
    TileParams,
)

from app.dependencies import (
    S2AssetsParams,
    S2LayerParams,
    SettingsDep,
    get_mosaics,
    post_process,
)
from app.errors import NotFoundError
from app.expressions import PRESETS, Preset, get_preset
from app.mosaic import MosaicService, with_defaults
from app.request_checks import check_renamed_parameters
from app.settings import Settings

T = TypeVar("T")
#: A search's ``metadata.defaults``: query parameter -> value (a list repeats the key).
Defaults = Mapping[str, Any]

_PRESET_DESCRIPTION = (
    "A named layer (case-insensitive); it sets `assets` or `expression`, `rescale`, the "
    "colormap and `harmonize`, each unless the request or the search's defaults give it. "
    + " ".join(f"`{name}`: {preset.description}" for name, preset in PRESETS.items())
)


# ---------------------------------------------------------------------- the rule

#: The parameters that say what a request reads: a preset adds none of them to a request
#: that gives one, and a request with one of them takes no ``default_preset``.
LAYER_SOURCES = frozenset({"assets", "expression", "evalscript"})


def _preset_pairs(preset: Preset, given: set[str]) -> list[tuple[str, str]]:
    """The query parameters ``preset`` adds to a query that already has ``given``."""
    pairs: list[tuple[str, str]] = []
    if not given & LAYER_SOURCES:
        if preset.expression:
            pairs.append(("expression", preset.expression))
        pairs.extend(("assets", asset) for asset in preset.assets or ())
    if "rescale" not in given and preset.rescale:
        pairs.extend(("rescale", f"{lo},{hi}") for lo, hi in preset.rescale)
    if not given & {"colormap", "colormap_name"}:
        if preset.colormap_name:
            pairs.append(("colormap_name", preset.colormap_name))
        elif preset.colormap:
            colormap = {str(k): list(v) for k, v in preset.colormap.items()}
            pairs.append(("colormap", json.dumps(colormap)))
    if "harmonize" not in given and "evalscript" not in given:
        # An evalscript reads reflectance (its setup's `units` says what it sees).
        pairs.append(("harmonize", "true" if preset.harmonize else "false"))
    return pairs


def complete_query(
    query: Sequence[tuple[str, str]],
    defaults: Defaults | None = None,
    default_preset: str | None = None,
) -> list[tuple[str, str]]:
    """A request's query parameters completed with a search's defaults and a preset.

    The caller's parameters come first, in their order; then the defaults it does not give
    (``app.mosaic.with_defaults``); then, for the last ``preset`` of those (else
    ``default_preset`` when neither names a layer: no ``assets``, ``expression``,
    ``evalscript`` or ``preset``), the parameters it stands for that neither gives. ``preset`` itself is
    dropped.

    Raises:
        BadRequestError: ``preset: unknown preset 'x'; one of ...``.

    """
    pairs = with_defaults(query, defaults)
    presets = [value for key, value in pairs if key == "preset"]
    if not presets and default_preset and not LAYER_SOURCES & {k for k, _ in pairs}:
        presets = [default_preset]
    if not presets:
        return pairs
    rest = [(key, value) for key, value in pairs if key != "preset"]
    return rest + _preset_pairs(get_preset(presets[-1]), {key for key, _ in rest})


@dataclass(frozen=True)
class LayerQuery:
    """The request's query completed by ``complete_query``.

    Attributes:
        params: The completed query parameters.
        completed: Whether the defaults or a preset changed anything.

    """

    params: QueryParams
    completed: bool


#: The last path segment of the routes that describe a source's assets rather than read a
#: layer (titiler's ``/info``, ``/assets``, ``/asset_statistics``): no default preset there.
DESCRIBING_ROUTES = frozenset({"info", "info.geojson", "assets", "asset_statistics"})


def layer_default(request: Request, settings: Settings) -> str | None:
    """The preset of a request that names no layer: ``default_preset``, on reading routes."""
    if request.url.path.rsplit("/", 1)[-1] in DESCRIBING_ROUTES:
        return None
    return settings.default_preset


# ---------------------------------------------------------------------- sources of defaults


async def no_defaults() -> Defaults:
    """No defaults: items and ``/stac`` (their layer is the caller's and its preset)."""
    return {}


def search_defaults(
    search_id: Annotated[str, Path(description="Search id, from `POST /searches/register`.")],
    mosaics: Annotated[MosaicService, Depends(get_mosaics)],
) -> Defaults:
    """The ``metadata.defaults`` of the search ``search_id`` (an unknown search has none).

    An unknown search is left to the route, which answers its own 404.
    """
    try:
        record = mosaics.get(search_id)
    except NotFoundError:
        return {}
    return record.metadata.get("defaults") or {}


# ---------------------------------------------------------------------- dependencies


def tilesize_params(
    tilesize: Annotated[int | None, Query(gt=0, description="Tile size in pixels.")] = None,
) -> int | None:
    """A tile's size in pixels (``tilesize``; a search's defaults may set it)."""
    return tilesize


class LayerDependencies:
    """A factory's layer dependencies, over one source of defaults.

    Each but ``query`` and ``links`` is a titiler (or terratiler) dependency parsed from
    the completed query: it returns what that dependency returns.

    Attributes:
        defaults: The source of defaults (``no_defaults``, ``search_defaults``).
        query: The completed query (``LayerQuery``); it documents ``preset`` and refuses
            an unknown one (400), and an old titiler parameter name
            (``app.request_checks.RENAMED_PARAMETERS``, 400 naming the current one).
        layer: ``S2LayerParams``: assets or expression, mask, harmonize.
        assets: ``S2AssetsParams``: the assets ``/info`` describes.
        dataset: titiler's ``DatasetParams``: nodata, resampling, reproject.
        tile: titiler's ``TileParams``: buffer, padding.
        post_process: ``app.dependencies.post_process``: algorithm, algorithm_params.
        colormap: titiler's ``ColorMapParams``: colormap, colormap_name.
        render: titiler's ``ImageRenderingParams``: rescale, color_formula, return_mask.
        tilesize: ``tilesize_params``.
        links: Route dependency of the routes whose links copy the request's query.

    """

    # The dependencies but ``defaults`` are ``async``: a little CPU, no I/O, so they run on
    # the event loop rather than costing a worker thread hop each (a sync dependency does).

    def __init__(self, defaults: Callable[..., Any] = no_defaults):
        self.defaults = defaults
        self.query = self._query()
        self.links = self._links()
        self.layer = self.resolved(S2LayerParams)
        self.assets = self.resolved(S2AssetsParams)
        self.dataset = self.resolved(DatasetParams)
        self.tile = self.resolved(TileParams)
        self.post_process = self.resolved(post_process)
        self.colormap = self.resolved(ColorMapParams)
        self.render = self.resolved(ImageRenderingParams)
        self.tilesize = self.resolved(tilesize_params)

    def _query(self) -> Callable[..., LayerQuery]:
        async def layer_query(
            request: Request,
            settings: SettingsDep,
            defaults: Annotated[Defaults, Depends(self.defaults)],
            preset: Annotated[str | None, Query(description=_PRESET_DESCRIPTION)] = None,
        ) -> LayerQuery:
            """The request's query completed with the defaults and the preset."""
            # ``preset`` is declared for the docs: the query as a whole says which applies.
            query = request.query_params.multi_items()
            check_renamed_parameters(request.query_params.keys())
            completed = complete_query(query, defaults, layer_default(request, settings))
            return LayerQuery(QueryParams(completed), completed != query)

        return layer_query

    def _links(self) -> Callable[..., None]:
        async def layer_links(
            request: Request, layer: Annotated[LayerQuery, Depends(self.query)]
        ) -> None:
            """The links this route builds carry the completed query.

            titiler's TileJSON, map and tileset endpoints copy ``request.query_params``
            into the URLs they return: they are handed the completed query instead (with
            ``app.routers.tiler.tilejson_tile_size``, which adds TileJSON's tile size, the
            only place a query is rewritten; every parameter dependency reads the layer's
            own ``LayerQuery``).
            """
            if layer.completed:
                request._query_params = layer.params  # type: ignore[attr-defined]

        return layer_links

    def resolved(self, dependency: Callable[..., T]) -> Callable[..., T]:
        """``dependency`` (of query parameters only) parsed from the completed query.

        FastAPI parses the caller's parameters as it does for ``dependency`` itself (so the
        docs and the caller's 422s are titiler's), except that a required one is optional
        to the caller (a preset or a default may give it). When the defaults or a preset
        completed the query, or a required parameter is missing, the parameters are parsed
        again from the completed query, by FastAPI's own function.
        """
        dependant = get_dependant(path="", call=dependency)
        others = dependant.path_params + dependant.header_params + dependant.cookie_params
        assert not (others or dependant.body_params or dependant.dependencies), dependency
        params = dependant.query_params
        caller_params, required = _caller_params(dependency)

        async def resolve(
            caller: Annotated[dict[str, Any], Depends(caller_params)],
            layer: Annotated[LayerQuery, Depends(self.query)],
        ) -> T:
            if not layer.completed and all(caller[name] is not None for name in required):
                return dependency(**caller)
            values, errors = request_params_to_args(params, layer.params)
            if errors:
                raise RequestValidationError(errors)
            return dependency(**values)

        resolve.__doc__ = f"``{getattr(dependency, '__name__', dependency)}``, completed."
        return resolve


def _caller_params(dependency: Callable[..., Any]) -> tuple[Callable[..., dict], frozenset[str]]:
    """A dependency taking ``dependency``'s parameters, the required ones optional.

    Returns:
        The dependency (it returns its parameters by name) and the names made optional.

    """
    signature = inspect.signature(dependency, eval_str=True)
    required = frozenset(
        name for name, param in signature.parameters.items() if param.default is param.empty
    )

    async def caller_params(**values: Any) -> dict[str, Any]:
        return values

    caller_params.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[
            param.replace(default=None) if name in required else param
            for name, param in signature.parameters.items()
        ],
        return_annotation=dict[str, Any],
    )
    return caller_params, required


#: Items and ``/stac``: the caller's parameters and preset.
ITEM_LAYER = LayerDependencies(no_defaults)
#: ``/searches/{search_id}``: the caller's parameters, the search's defaults and a preset.
SEARCH_LAYER = LayerDependencies(search_defaults)
