"""Build small STAC catalogs from the recorded Earth-Search item, for catalog tests.

Items are the real Earth-Search v1 Sentinel-2 L2A item with a new id, datetime,
footprint, cloud cover and platform, and relative asset hrefs like the demo generator
writes ("../cogs/<id>/<asset>.tif"). Tests compute expected results from these dicts with
plain Python, never from the catalog under test.
"""

from __future__ import annotations

import copy
import json
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"
ITEM_FIXTURE = FIXTURES / "earth-search-v1-sentinel-2-l2a-item.json"
COLLECTION_FIXTURE = FIXTURES / "earth-search-v1-collection-sentinel-2-l2a.json"
COLLECTION = "sentinel-2-l2a"
OTHER_COLLECTION = "sentinel-2-l1c"

# Items sit on a grid of 0.5 degree squares with 0.1 degree gaps, west of Denver.
ORIGIN = (-108.0, 38.0)
CELL = 0.6
SIZE = 0.5
COLUMNS = 8


def template_item() -> dict[str, Any]:
    """Return the recorded Earth-Search item as a dict."""
    return json.loads(ITEM_FIXTURE.read_text())


def square(minx: float, miny: float, size: float = SIZE) -> dict[str, Any]:
    """Return a GeoJSON polygon of a square with its south-west corner at (minx, miny)."""
    maxx, maxy = minx + size, miny + size
    ring = [[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]
    return {"type": "Polygon", "coordinates": [ring]}


def cell_origin(index: int) -> tuple[float, float]:
    """Return the south-west corner of grid cell ``index``."""
    return ORIGIN[0] + (index % COLUMNS) * CELL, ORIGIN[1] + (index // COLUMNS) * CELL


def make_item(
    template: dict[str, Any],
    item_id: str,
    *,
    when: str | None,
    geometry: dict[str, Any] | None,
    cloud: float | None,
    platform: str,
    collection: str = COLLECTION,
    properties: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return a copy of ``template`` changed into a new item."""
    item = copy.deepcopy(template)
    item["id"] = item_id
    item["collection"] = collection
    props = item["properties"]
    props["datetime"] = when
    props["platform"] = platform
    if cloud is None:
        del props["eo:cloud_cover"]
    else:
        props["eo:cloud_cover"] = cloud
    props.update(properties or {})
    item["geometry"] = geometry
    if geometry is None:
        item.pop("bbox", None)
    else:
        xs = [x for x, _ in geometry["coordinates"][0]]
        ys = [y for _, y in geometry["coordinates"][0]]
        item["bbox"] = [min(xs), min(ys), max(xs), max(ys)]
    for key, asset in item["assets"].items():
        suffix = asset["href"].rsplit(".", 1)[-1]
        asset["href"] = f"../cogs/{item_id}/{key}.{suffix}"
    # Earth-Search's own links would point back at Earth-Search.
    item["links"] = [link for link in item["links"] if link["rel"] == "license"]
    return item


def _timestamp(moment: datetime, style: int) -> str:
    """Write ``moment`` in one of the RFC 3339 spellings items use in the wild."""
    if style == 0:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if style == 1:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # Written with a +02:00 offset: must still compare and sort as the same instant.
    return moment.astimezone(timezone(timedelta(hours=2))).isoformat()


def sample_items(count: int = 48, seed: int = 7) -> list[dict[str, Any]]:
    """Return ``count`` varied items of ``COLLECTION``.

    Every 7th item has no ``eo:cloud_cover``; every 10th (from the 5th) has a 10-day
    ``start_datetime``/``end_datetime`` range and a null ``datetime``; the last has no
    geometry; items 0 and 1 share a datetime (to see ties broken by id). Each item has a
    numeric ``test:score`` (9.5 .. 12.x, where text order differs from numeric order)
    and a text ``test:name``.
    """
    rng = random.Random(seed)
    template = template_item()
    start = datetime(2023, 6, 1, 10, 30, tzinfo=UTC)
    items = []
    for index in range(count):
        moment = start + timedelta(days=3 * index, seconds=rng.randrange(0, 36000))
        moment = moment.replace(microsecond=rng.choice([0, 0, 276000, 500000]))
        if index in (0, 1):
            moment = start  # one instant, spelled "...Z" and "....000000Z"
        geometry = None if index == count - 1 else square(*cell_origin(index))
        properties: dict[str, Any] = {
            "test:score": round(9.5 + rng.random() * 3, 3),
            "test:name": rng.choice(["alpha", "Bravo", "charlie", "delta", "echo"]),
            "s2:processing_baseline": rng.choice(["04.00", "05.09"]),
        }
        when: str | None = _timestamp(moment, index % 3)
        if index % 10 == 5:
            properties["start_datetime"] = _timestamp(moment, 0)
            properties["end_datetime"] = _timestamp(moment + timedelta(days=10), 0)
            when = None
        items.append(
            make_item(
                template,
                f"S2{'AB'[index % 2]}_T{index:03d}_L2A",
                when=when,
                geometry=geometry,
                cloud=None if index % 7 == 3 else round(rng.random() * 100, 2),
                platform=rng.choice(["sentinel-2a", "sentinel-2b"]),
                properties=properties,
            )
        )
    return items


def other_items(count: int = 4) -> list[dict[str, Any]]:
    """Return ``count`` items of ``OTHER_COLLECTION``; the first reuses a sample item id."""
    template = template_item()
    items = []
    for index in range(count):
        item_id = "S2A_T000_L2A" if index == 0 else f"L1C_{index:02d}"
        items.append(
            make_item(
                template,
                item_id,
                when=f"2023-07-{index + 1:02d}T12:00:00Z",
                geometry=square(*cell_origin(index)),
                cloud=float(10 * index),
                platform="sentinel-2a",
                collection=OTHER_COLLECTION,
            )
        )
    return items


def write_catalog(
    root: Path, items: list[dict[str, Any]], extra: list[dict[str, Any]] | None = None
) -> Path:
    """Write a catalog folder the way the demo generator lays it out, plus extras.

    ``root/collection.json`` and ``root/items/<id>.json`` for ``items``; when ``extra`` is
    given, ``root/collections/<id>.json`` and ``root/extra.ndjson`` for those; always a
    non-STAC ``root/fields.geojson`` that must not be read as items.
    """
    root.mkdir(parents=True, exist_ok=True)
    collection = json.loads(COLLECTION_FIXTURE.read_text())
    (root / "collection.json").write_text(json.dumps(collection, indent=2))
    (root / "items").mkdir(exist_ok=True)
    for item in items:
        (root / "items" / f"{item['id']}.json").write_text(json.dumps(item, indent=2))
    if extra:
        (root / "collections").mkdir(exist_ok=True)
        other = copy.deepcopy(collection)
        other["id"] = extra[0]["collection"]
        other["title"] = "Sentinel-2 Level-1C"
        (root / "collections" / f"{other['id']}.json").write_text(json.dumps(other))
        lines = [json.dumps(item) for item in extra]
        (root / "extra.ndjson").write_text("\n".join(lines) + "\n")
    fields = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": "field-1",
                "properties": {"identifier": "field-1"},
                "geometry": square(*ORIGIN, 0.01),
            }
        ],
    }
    (root / "fields.geojson").write_text(json.dumps(fields))
    return root
