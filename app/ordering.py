"""Mosaicking orders: which scene (item) comes first where several cover a pixel.

Sentinel Hub's ``mosaickingOrder``, used by the Statistical API
(``dataFilter.mosaickingOrder``), batch jobs and ``terratiler batch stats``, and by the
mosaics of registered searches (``order=``), which add ``search``:

- ``mostRecent``: newest first (Sentinel Hub's default);
- ``leastRecent``: oldest first;
- ``leastCC``: lowest ``eo:cloud_cover`` first, then newest;
- ``search`` (mosaics only): the order the catalog returned the items (the search's
  ``sortby``).

``order_key`` is the one sort key of the first three; each caller breaks ties its own way
(the statistics engine by item id, the mosaics by catalog order). This module imports
nothing heavy (the command line builds its choices from it).
"""

import math
from datetime import datetime
from typing import Literal, cast, get_args

from app.errors import BadRequestError

MosaickingOrder = Literal["mostRecent", "leastRecent", "leastCC"]
MOSAICKING_ORDERS: tuple[MosaickingOrder, ...] = get_args(MosaickingOrder)
DEFAULT_ORDER: MosaickingOrder = "mostRecent"

#: The catalog's own order of a search's items (mosaics only).
SEARCH_ORDER: Literal["search"] = "search"
ItemOrder = Literal[MosaickingOrder, "search"]
ITEM_ORDERS: tuple[str, ...] = get_args(ItemOrder)


def check_item_order(order: str) -> ItemOrder:
    """``order`` if it names an order of a search's items.

    Raises:
        BadRequestError: Not one of ``ITEM_ORDERS`` (400 naming ``order``).

    """
    if order not in ITEM_ORDERS:
        raise BadRequestError(f"order: must be one of {', '.join(ITEM_ORDERS)}, got '{order}'")
    return cast(ItemOrder, order)


def order_key(
    order: MosaickingOrder, when: datetime | None, cloud_cover: float | None
) -> tuple[float, ...]:
    """The sort key of a scene in ``order``: smaller keys come first.

    Args:
        order: ``mostRecent``, ``leastRecent`` or ``leastCC``.
        when: The scene's acquisition time; scenes without one go last in every order.
        cloud_cover: Its ``eo:cloud_cover``; scenes without one go last in ``leastCC``.

    Returns:
        A tuple of floats; append a tie-breaker to make the order total.

    """
    stamp = None if when is None else when.timestamp()
    newest_first = math.inf if stamp is None else -stamp
    if order == "leastRecent":
        return (math.inf if stamp is None else stamp,)
    if order == "leastCC":
        return (math.inf if cloud_cover is None else cloud_cover, newest_first)
    return (newest_first,)
