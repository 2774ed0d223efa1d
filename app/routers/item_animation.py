"""``POST /collections/{collection_id}/animation.{gif|webp}``: an animation of listed items.

The items (by id, resolved through the configured catalog) are read as a registered
search's mosaic is (``MosaicService.items_backend``), so the frames, the layer parameters
(``preset``, ``assets``/``expression``, ``mask``, ``rescale``, colormap; no search defaults)
and the answers are those of ``GET /searches/{id}/bbox/.../{w}x{h}.gif``.
"""

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path
from fastapi.responses import Response
from pydantic import BaseModel, Field
from titiler.core.dependencies import CoordCRSParams, DstCRSParams

from app.animation import AnimationFormat
from app.catalog.cache import ItemCache
from app.dependencies import SettingsDep, get_item_cache, get_mosaics
from app.errors import TooLargeError
from app.layers import ITEM_LAYER
from app.mosaic import MosaicService
from app.routers.animation import (
    ANIMATION_PATHS,
    AnimationConfig,
    AnimationParams,
    animation_config,
    animation_format,
    animation_response,
    animation_responses,
)
from app.routers.search_tiler import MosaicParams

__all__ = ["AnimationItems", "router"]

router = APIRouter(dependencies=[Depends(ITEM_LAYER.query)])


class AnimationItems(BaseModel):
    """The items and the frame grid of an animation."""

    ids: list[str] = Field(
        min_length=1,
        description="Item ids of the collection (at most `mosaic_max_search_items`); the "
        "frames are their dates, oldest first.",
    )
    bbox: tuple[float, float, float, float] = Field(
        description="`[minx, miny, maxx, maxy]` in `coord_crs` (default WGS84 lon/lat)."
    )
    width: int = Field(gt=0, description="Frame width, pixels.")
    height: int = Field(gt=0, description="Frame height, pixels.")


def items_animation(
    collection_id: Annotated[str, Path(description="STAC collection id")],
    format: Annotated[AnimationFormat, Depends(animation_format)],
    body: Annotated[AnimationItems, Body()],
    items: Annotated[ItemCache, Depends(get_item_cache)],
    mosaics: Annotated[MosaicService, Depends(get_mosaics)],
    settings: SettingsDep,
    config: Annotated[AnimationConfig, Depends(animation_config)],
    params: Annotated[AnimationParams, Depends(AnimationParams)],
    coord_crs=Depends(CoordCRSParams),
    dst_crs=Depends(DstCRSParams),
    layer=Depends(ITEM_LAYER.layer),
    dataset=Depends(ITEM_LAYER.dataset),
    mosaic=Depends(ITEM_LAYER.resolved(MosaicParams)),
    post_process=Depends(ITEM_LAYER.post_process),
    colormap=Depends(ITEM_LAYER.colormap),
    render=Depends(ITEM_LAYER.render),
) -> Response:
    """One frame per date of the listed items (or per `interval`) over `bbox`.

    The items of one date (e.g. adjacent tiles of one pass) combine by `pixel_selection`;
    the query takes what `GET /searches/{id}/bbox/.../{w}x{h}.gif` takes (`preset`,
    `expression`, `mask`, `rescale`, `colormap_name`, `fps`, `interval`, `min_clear`,
    `label`). 404 for an unknown item.
    """
    ids = list(dict.fromkeys(body.ids))
    limit = settings.mosaic_max_search_items
    if len(ids) > limit:
        raise TooLargeError(
            f"ids: {len(ids)} items, over the limit mosaic_max_search_items={limit}"
        )
    backend = mosaics.items_backend(items.get_many(collection_id, ids))
    return animation_response(
        backend,
        body.bbox,
        (body.width, body.height),
        format,
        params,
        config,
        reads={**layer.as_dict(), **dataset.as_dict()},
        mosaic=mosaic.as_dict(),
        post_process=post_process,
        colormap=colormap,
        render=render.as_dict(),
        coord_crs=coord_crs,
        dst_crs=dst_crs,
    )


for _format, _suffix in ANIMATION_PATHS.items():
    router.add_api_route(
        "/collections/{collection_id}/animation" + _suffix,
        items_animation,
        methods=["POST"],
        name=f"items_animation_{_format.value}",
        response_class=Response,
        responses=animation_responses,
        summary=f"An animation of listed items over a bbox ({_format.value.upper()}): "
        "one frame per date",
    )
