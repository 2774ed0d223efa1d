"""What the engine reads from a STAC item's own fields: when it was taken, how it is gridded.

One reading of each field for the statistics engine, the mosaics and the readers:

- the acquisition time: ``datetime``, else ``start_datetime`` (an item over a time range,
  whose ``datetime`` is null), parsed as RFC 3339;
- the projection extension, on the asset first and then on the item: ``proj:code``
  (projection v2) or ``proj:epsg`` (v1) as a CRS name, ``proj:transform`` as an affine
  transform.

Fetching an item by URL is ``app.stac_item``'s job; this module imports nothing heavier
than pystac and affine, so Dask workers can use it.
"""

from datetime import datetime
from typing import Any

import pystac
from affine import Affine

from app.catalog.query import parse_rfc3339


def item_datetime(item: pystac.Item) -> datetime | None:
    """The item's acquisition time: ``datetime``, else ``start_datetime``.

    Returns:
        The time, or None when the item has neither, or its ``start_datetime`` is not an
        RFC 3339 date-time.

    """
    if item.datetime is not None:
        return item.datetime
    start = item.properties.get("start_datetime")
    if isinstance(start, str):
        try:
            return parse_rfc3339(start)
        except ValueError:
            return None
    return None


def _crs_name(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if ":" in text else f"EPSG:{text}"


def asset_crs(item: pystac.Item, key: str) -> str | None:
    """The CRS of an asset (``EPSG:32633``) from ``proj:code`` or ``proj:epsg``, if recorded."""
    for fields in (item.assets[key].extra_fields, item.properties):
        name = _crs_name(fields.get("proj:code") or fields.get("proj:epsg"))
        if name:
            return name
    return None


def asset_transform(item: pystac.Item, key: str) -> Affine | None:
    """The affine transform of an asset from ``proj:transform``, if recorded."""
    for fields in (item.assets[key].extra_fields, item.properties):
        coefficients = fields.get("proj:transform")
        if coefficients and len(coefficients) >= 6:
            return Affine(*coefficients[:6])
    return None
