"""What rio-tiler's ``STACReader`` derives from an item, kept per item object.

Building a reader derives the asset list, the grid (projection, bounds) and the zooms from
the item's fields; the zooms cost a reprojection each. Catalog items come from the item
cache as the same object on every request, so what one reader derived is kept (weakly, with
the item) for the next reader of that item with the same options.
"""

import threading
import weakref
from typing import Any

import pystac

# The attributes rio-tiler's STACReader sets in its ``__attrs_post_init__``.
FIELDS = ("assets", "height", "width", "bounds", "transform", "crs", "minzoom", "maxzoom")

_derived: weakref.WeakKeyDictionary[pystac.Item, dict[tuple, dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def derived_fields(item: pystac.Item, key: tuple) -> dict[str, Any] | None:
    """The fields a reader of ``item`` with options ``key`` derived, if one did."""
    with _lock:
        return _derived.get(item, {}).get(key)


def keep_derived_fields(item: pystac.Item, key: tuple, reader: Any) -> None:
    """Keep what ``reader`` (a ``STACReader`` of ``item``, options ``key``) derived."""
    fields = {name: getattr(reader, name, None) for name in FIELDS}
    fields["assets"] = tuple(fields["assets"])
    with _lock:
        _derived.setdefault(item, {})[key] = fields
