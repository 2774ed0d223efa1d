"""LocalCatalog over a folder of items derived from the recorded Earth-Search item.

Expected results are computed with plain Python (and shapely) from the item dicts the
catalog was written from, never read back from the catalog under test.
"""

import base64
import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cql2
import pytest
import shapely
import shapely.geometry
from catalog_items import (
    CELL,
    COLLECTION,
    OTHER_COLLECTION,
    SIZE,
    cell_origin,
    other_items,
    sample_items,
    square,
    write_catalog,
)

from app.catalog.base import Catalog, SearchQuery
from app.catalog.local import LocalCatalog
from app.catalog.query import search_from_body, search_from_get
from app.errors import BadRequestError, NotFoundError

ITEMS = sample_items()
OTHERS = other_items()
ALL = ITEMS + OTHERS


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_catalog(tmp_path_factory.mktemp("catalog"), ITEMS, OTHERS)


@pytest.fixture(scope="module")
def catalog(catalog_dir: Path) -> LocalCatalog:
    return LocalCatalog(catalog_dir)


# ----------------------------------------------------------------------------- helpers


def instant(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))


def time_range(item: dict[str, Any]) -> tuple[datetime, datetime] | None:
    props = item["properties"]
    if props.get("start_datetime") and props.get("end_datetime"):
        return instant(props["start_datetime"]), instant(props["end_datetime"])
    moment = instant(props.get("datetime"))
    return None if moment is None else (moment, moment)


def default_order(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Newest first by datetime (else start_datetime), then id, then collection."""

    def key(item: dict[str, Any]) -> tuple:
        props = item["properties"]
        moment = instant(props.get("datetime") or props.get("start_datetime"))
        return (
            moment is None,
            -moment.timestamp() if moment else 0,
            item["id"],
            item["collection"],
        )

    return sorted(items, key=key)


def keys(items) -> list[tuple[str, str]]:
    """(collection, id) of dicts or pystac Items."""
    return [
        (item["collection"], item["id"])
        if isinstance(item, dict)
        else (item.collection_id, item.id)
        for item in items
    ]


def expected(predicate) -> list[tuple[str, str]]:
    return keys(item for item in default_order(ALL) if predicate(item))


def found(catalog: LocalCatalog, body: dict[str, Any]) -> list[tuple[str, str]]:
    return keys(catalog.search(search_from_body(body)))


def footprint(item: dict[str, Any]):
    return None if item["geometry"] is None else shapely.geometry.shape(item["geometry"])


# ----------------------------------------------------------------------------- reading


def test_reads_items_collections_and_skips_non_stac_geojson(catalog: LocalCatalog):
    assert isinstance(catalog, Catalog)
    assert len(catalog) == len(ALL) == 52
    assert [c.id for c in catalog.collections()] == [OTHER_COLLECTION, COLLECTION]
    assert catalog.get_collection(COLLECTION).title == "Sentinel-2 Level-2A"
    assert "field-1" not in [key[1] for key in found(catalog, {"limit": 1})]
    assert found(catalog, {"ids": ["field-1"]}) == []


def test_asset_hrefs_made_absolute_relative_to_item_file(catalog: LocalCatalog, catalog_dir: Path):
    root = catalog_dir.resolve()
    item = catalog.get_item(COLLECTION, "S2A_T002_L2A")
    assert item.assets["red"].href == str(root / "cogs" / "S2A_T002_L2A" / "red.tif")
    assert item.assets["red-jp2"].href == str(root / "cogs" / "S2A_T002_L2A" / "red-jp2.jp2")
    # Items of root/extra.ndjson: "../cogs/..." is relative to the root itself.
    other = catalog.get_item(OTHER_COLLECTION, "L1C_01")
    assert other.assets["nir"].href == os.path.normpath(root / ".." / "cogs" / "L1C_01" / "nir.tif")


def test_items_handed_out_are_independent_copies(catalog: LocalCatalog):
    first = catalog.get_item(COLLECTION, "S2A_T004_L2A")
    first.properties["eo:cloud_cover"] = -1
    first.assets.clear()
    again = catalog.get_item(COLLECTION, "S2A_T004_L2A")
    assert again.properties["eo:cloud_cover"] == ITEMS[4]["properties"]["eo:cloud_cover"]
    assert len(again.assets) == len(ITEMS[4]["assets"])
    # pystac rewrites "datetime" in its own spelling; everything else is as written.
    written = {k: v for k, v in ITEMS[4]["properties"].items() if k != "datetime"}
    served = again.to_dict()["properties"]
    assert {k: v for k, v in served.items() if k != "datetime"} == written
    assert instant(served["datetime"]) == instant(ITEMS[4]["properties"]["datetime"])


def test_not_found_messages(catalog: LocalCatalog):
    with pytest.raises(NotFoundError, match="^collection 'nope' not found$"):
        catalog.get_item("nope", "S2A_T000_L2A")
    with pytest.raises(
        NotFoundError, match="^item 'nope' not found in collection 'sentinel-2-l2a'$"
    ):
        catalog.get_item(COLLECTION, "nope")
    # The id exists, in the other collection only.
    with pytest.raises(NotFoundError, match="item 'S2B_T001_L2A' not found in collection"):
        catalog.get_item(OTHER_COLLECTION, "S2B_T001_L2A")
    with pytest.raises(NotFoundError, match="^collection 'nope' not found$") as caught:
        catalog.get_collection("nope")
    assert caught.value.status_code == 404


def test_same_id_in_two_collections(catalog: LocalCatalog):
    assert catalog.get_item(COLLECTION, "S2A_T000_L2A").collection_id == COLLECTION
    assert catalog.get_item(OTHER_COLLECTION, "S2A_T000_L2A").collection_id == OTHER_COLLECTION
    assert found(catalog, {"ids": ["S2A_T000_L2A"]}) == expected(
        lambda i: i["id"] == "S2A_T000_L2A"
    )


# ----------------------------------------------------------------------------- filters


def test_default_order_is_datetime_desc_then_id(catalog: LocalCatalog):
    result = found(catalog, {})
    assert result == expected(lambda item: True)
    # Items 0 and 1 share an instant spelled two ways: id breaks the tie.
    position = result.index((COLLECTION, "S2A_T000_L2A"))
    assert result[position + 1] == (COLLECTION, "S2B_T001_L2A")
    # An item with only a range sorts by its start_datetime.
    position = result.index((COLLECTION, ITEMS[15]["id"]))
    assert result[position - 1 : position + 2] == keys([ITEMS[16], ITEMS[15], ITEMS[14]])


def test_ids_and_collections(catalog: LocalCatalog):
    wanted = ["S2B_T011_L2A", "S2A_T020_L2A", "L1C_02", "missing"]
    assert found(catalog, {"ids": wanted}) == expected(lambda i: i["id"] in wanted)
    assert found(catalog, {"collections": [OTHER_COLLECTION]}) == expected(
        lambda i: i["collection"] == OTHER_COLLECTION
    )
    assert found(catalog, {"collections": [OTHER_COLLECTION], "ids": wanted}) == [
        (OTHER_COLLECTION, "L1C_02")
    ]
    assert found(catalog, {"collections": ["unknown"]}) == []


def test_bbox_uses_true_geometry_intersection(catalog: LocalCatalog):
    bbox = (-107.2, 38.3, -105.9, 39.0)
    box = shapely.box(*bbox)
    want = expected(lambda i: i["geometry"] is not None and footprint(i).intersects(box))
    assert 4 < len(want) < len(ALL)
    assert found(catalog, {"bbox": list(bbox)}) == want


def test_bbox_touching_an_edge_matches(catalog: LocalCatalog):
    x, y = cell_origin(9)  # item 9's square starts exactly at this corner
    result = found(catalog, {"bbox": [x - 0.05, y - 0.05, x, y], "collections": [COLLECTION]})
    assert (COLLECTION, "S2B_T009_L2A") in result


def test_intersects_polygon_whose_bbox_overlaps_an_item_but_shape_does_not(catalog: LocalCatalog):
    # A frame around item 20's square (a hole 0.02 degree wider than it) whose east side
    # reaches into item 21's square, 0.1 degree away.
    x, y = cell_origin(20)
    outer = [[x - 0.05, y - 0.05], [x + 0.65, y - 0.05], [x + 0.65, y + 0.55], [x - 0.05, y + 0.55]]
    hole = [[x - 0.02, y - 0.02], [x + 0.52, y - 0.02], [x + 0.52, y + 0.52], [x - 0.02, y + 0.52]]
    frame = {"type": "Polygon", "coordinates": [outer + [outer[0]], hole + [hole[0]]]}
    shape = shapely.geometry.shape(frame)
    assert shape.is_valid and not shape.intersects(shapely.geometry.shape(ITEMS[20]["geometry"]))

    result = found(catalog, {"intersects": frame})
    assert result == expected(
        lambda i: i["geometry"] is not None and footprint(i).intersects(shape)
    )
    assert (COLLECTION, "S2A_T020_L2A") not in result
    assert (COLLECTION, "S2B_T021_L2A") in result
    # The frame's bbox does cover item 20: a bbox search finds it.
    assert (COLLECTION, "S2A_T020_L2A") in found(catalog, {"bbox": list(shape.bounds)})


def test_item_without_geometry_never_matches_spatial_search(catalog: LocalCatalog):
    last = ITEMS[-1]
    assert last["geometry"] is None
    everything = found(catalog, {"bbox": [-180, -90, 180, 90]})
    assert (COLLECTION, last["id"]) not in everything
    assert len(everything) == len(ALL) - 1


def overlaps(item: dict[str, Any], start: datetime | None, end: datetime | None) -> bool:
    span = time_range(item)
    if span is None:
        return False
    return (start is None or span[1] >= start) and (end is None or span[0] <= end)


@pytest.mark.parametrize(
    "value",
    [
        "2023-07-01T00:00:00Z/2023-08-15T00:00:00Z",
        "../2023-06-20T00:00:00Z",
        "/2023-06-20T00:00:00Z",
        "2023-09-01T00:00:00Z/..",
        "2023-09-01T00:00:00Z/",
        # inside item 15's 10-day range, between the datetimes of items 14 and 16
        "2023-07-18T00:00:00Z/2023-07-19T00:00:00Z",
        "2023-06-01",
    ],
)
def test_datetime_ranges_and_item_ranges_overlap(catalog: LocalCatalog, value: str):
    start, end = search_from_get({"datetime": value}).datetime
    want = expected(lambda item: overlaps(item, start, end))
    assert found(catalog, {"datetime": value}) == want
    assert 0 < len(want) < len(ALL)


def test_datetime_range_item_matched_by_overlap_only(catalog: LocalCatalog):
    item = ITEMS[15]
    start = instant(item["properties"]["start_datetime"])
    assert item["properties"]["datetime"] is None
    assert found(catalog, {"datetime": "2023-07-18T00:00:00Z/2023-07-19T00:00:00Z"}) == [
        (COLLECTION, item["id"])
    ]
    end = instant(item["properties"]["end_datetime"])
    assert start < instant("2023-07-18T00:00:00Z") < instant("2023-07-19T00:00:00Z") < end


def test_datetime_instant_matches_same_instant_spelled_differently(catalog: LocalCatalog):
    spelled = ITEMS[2]["properties"]["datetime"]
    assert spelled.endswith("+02:00")
    utc_text = instant(spelled).astimezone(UTC).isoformat()
    assert utc_text.endswith("+00:00")
    assert found(catalog, {"datetime": utc_text}) == [(COLLECTION, ITEMS[2]["id"])]


def prop(item: dict[str, Any], name: str) -> Any:
    return item["properties"].get(name)


def below(item: dict[str, Any], name: str, limit: float) -> bool:
    value = prop(item, name)
    return value is not None and value < limit


QUERIES = [
    ({"eo:cloud_cover": {"lt": 20}}, lambda i: below(i, "eo:cloud_cover", 20)),
    (
        {"eo:cloud_cover": {"gte": 30, "lte": 60}, "platform": {"eq": "sentinel-2b"}},
        lambda i: (
            prop(i, "eo:cloud_cover") is not None
            and 30 <= prop(i, "eo:cloud_cover") <= 60
            and prop(i, "platform") == "sentinel-2b"
        ),
    ),
    ({"test:name": {"in": ["alpha", "echo"]}}, lambda i: prop(i, "test:name") in ("alpha", "echo")),
    ({"test:name": {"neq": "alpha"}}, lambda i: prop(i, "test:name") not in (None, "alpha")),
    ({"id": {"startsWith": "S2B_T01"}}, lambda i: i["id"].startswith("S2B_T01")),
    ({"id": {"endsWith": "7_L2A"}}, lambda i: i["id"].endswith("7_L2A")),
    ({"test:name": {"contains": "ar"}}, lambda i: "ar" in (prop(i, "test:name") or "")),
    (
        {"properties.s2:processing_baseline": {"gt": "05"}},
        lambda i: prop(i, "s2:processing_baseline") > "05",
    ),
    # a date-time operand compares as an instant, whatever the item's spelling
    (
        {"datetime": {"gte": "2023-08-01T00:00:00Z"}},
        lambda i: (
            prop(i, "datetime") is not None
            and instant(prop(i, "datetime")) >= instant("2023-08-01T00:00:00Z")
        ),
    ),
    ({"instruments": {"contains": "msi"}}, lambda i: True),
]


@pytest.mark.parametrize(("conditions", "predicate"), QUERIES)
def test_query_extension(catalog: LocalCatalog, conditions, predicate):
    want = expected(predicate)
    assert found(catalog, {"query": conditions}) == want
    assert want


def test_query_missing_property_never_matches(catalog: LocalCatalog):
    missing = {(COLLECTION, i["id"]) for i in ITEMS if "eo:cloud_cover" not in i["properties"]}
    assert missing
    result = set(found(catalog, {"query": {"eo:cloud_cover": {"neq": 5}}}))
    assert not result & missing
    assert len(result) == len(ALL) - len(missing)


FRAME_WKT = "POLYGON((-107.5 38.2, -105.0 38.2, -105.0 39.3, -107.5 39.3, -107.5 38.2))"

FILTERS = [
    (
        "eo:cloud_cover < 30 AND platform = 'sentinel-2a'",
        lambda i: below(i, "eo:cloud_cover", 30) and prop(i, "platform") == "sentinel-2a",
    ),
    (
        "properties.eo:cloud_cover BETWEEN 20 AND 60",
        lambda i: prop(i, "eo:cloud_cover") is not None and 20 <= prop(i, "eo:cloud_cover") <= 60,
    ),
    # NOT over a missing property is still unknown: items without cloud cover stay out
    (
        "NOT (eo:cloud_cover < 50)",
        lambda i: prop(i, "eo:cloud_cover") is not None and prop(i, "eo:cloud_cover") >= 50,
    ),
    ("eo:cloud_cover IS NULL", lambda i: prop(i, "eo:cloud_cover") is None),
    (
        "datetime >= TIMESTAMP('2023-08-01T00:00:00Z')",
        lambda i: (
            prop(i, "datetime") is not None
            and instant(prop(i, "datetime")) >= instant("2023-08-01T00:00:00Z")
        ),
    ),
    (
        "T_INTERSECTS(datetime, INTERVAL('2023-07-01T00:00:00Z', '2023-07-31T23:59:59Z'))",
        lambda i: (
            prop(i, "datetime") is not None
            and instant("2023-07-01T00:00:00Z")
            <= instant(prop(i, "datetime"))
            <= instant("2023-07-31T23:59:59Z")
        ),
    ),
    (
        f"S_INTERSECTS(geometry, {FRAME_WKT})",
        lambda i: (
            i["geometry"] is not None and footprint(i).intersects(shapely.from_wkt(FRAME_WKT))
        ),
    ),
    ("id LIKE 'S2A_T01%'", lambda i: i["id"].startswith("S2A_T01")),
    (
        "test:name IN ('alpha', 'Bravo') OR test:score > 12",
        lambda i: prop(i, "test:name") in ("alpha", "Bravo") or (prop(i, "test:score") or 0) > 12,
    ),
    ("collection = 'sentinel-2-l1c'", lambda i: i["collection"] == OTHER_COLLECTION),
    (
        "CASEI(test:name) = CASEI('BRAVO')",
        lambda i: (prop(i, "test:name") or "").lower() == "bravo",
    ),
]


@pytest.mark.parametrize(("text", "predicate"), FILTERS)
def test_cql2_filter(catalog: LocalCatalog, text: str, predicate):
    want = expected(predicate)
    assert want
    assert found(catalog, {"filter": text, "filter-lang": "cql2-text"}) == want


@pytest.mark.parametrize(("text", "predicate"), FILTERS)
def test_cql2_filter_view_agrees_with_cql2_on_whole_items(catalog: LocalCatalog, text, predicate):
    # The catalog hands cql2 a view with only the properties the filter names; cql2 on
    # the whole item must give the same answer.
    expr = cql2.Expr(text)

    def whole(item: dict[str, Any]) -> bool:
        try:
            return expr.matches(item)
        except Exception:
            return False

    assert found(catalog, {"filter": text, "filter-lang": "cql2-text"}) == expected(whole)


def test_filter_combined_with_other_parameters(catalog: LocalCatalog):
    body = {
        "collections": [COLLECTION],
        "bbox": [-108, 38, -105, 40],
        "datetime": "2023-06-15T00:00:00Z/..",
        "query": {"platform": {"eq": "sentinel-2a"}},
        "filter": "eo:cloud_cover < 70",
    }
    box = shapely.box(-108, 38, -105, 40)
    start = instant("2023-06-15T00:00:00Z")
    want = expected(
        lambda i: (
            i["collection"] == COLLECTION
            and i["geometry"] is not None
            and footprint(i).intersects(box)
            and overlaps(i, start, None)
            and prop(i, "platform") == "sentinel-2a"
            and below(i, "eo:cloud_cover", 70)
        )
    )
    assert want
    assert found(catalog, body) == want


# ----------------------------------------------------------------------------- sortby


def sorted_keys(items, name: str, descending: bool, key=lambda v: v) -> list[tuple[str, str]]:
    """Stable sort over the default order; missing values last in either direction."""
    base = default_order(items)
    present = [i for i in base if prop(i, name) is not None]
    missing = [i for i in base if prop(i, name) is None]
    present.sort(key=lambda i: key(prop(i, name)), reverse=descending)
    return keys(present + missing)


@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_sortby_numeric_is_numeric(catalog: LocalCatalog, direction: str):
    result = found(catalog, {"sortby": [{"field": "test:score", "direction": direction}]})
    want = sorted_keys(ALL, "test:score", direction == "desc")
    assert result == want
    scores = [prop(i, "test:score") for i in ITEMS]
    # 9.x and 1x.x: text order would differ from numeric order
    assert sorted(scores) != sorted(scores, key=str)


@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_sortby_missing_values_last_both_ways(catalog: LocalCatalog, direction: str):
    result = found(
        catalog, {"sortby": [{"field": "properties.eo:cloud_cover", "direction": direction}]}
    )
    assert result == sorted_keys(ALL, "eo:cloud_cover", direction == "desc")
    missing = [i for i in ALL if prop(i, "eo:cloud_cover") is None]
    assert result[-len(missing) :] == keys(default_order(missing))


def test_sortby_text_is_by_code_point(catalog: LocalCatalog):
    result = found(catalog, {"sortby": "test:name"})
    assert result == sorted_keys(ALL, "test:name", False)
    names = [prop(i, "test:name") for i in ALL if (i["collection"], i["id"]) in result[:3]]
    assert set(names) == {"Bravo"}  # capitals sort first


def test_sortby_datetime_is_chronological(catalog: LocalCatalog):
    result = found(catalog, {"sortby": "datetime"})
    assert result == sorted_keys(ALL, "datetime", False, key=instant)
    # Spellings differ (Z, .000000Z, +02:00): plain text order would be another order.
    assert result != sorted_keys(ALL, "datetime", False)


def test_sortby_several_fields_then_default_order(catalog: LocalCatalog):
    result = found(catalog, {"sortby": "platform,-test:name"})
    assert sorted(result) == sorted(keys(ALL))
    by_key = {(i["collection"], i["id"]): i for i in ALL}
    rank = {key: position for position, key in enumerate(expected(lambda i: True))}
    for before, after in zip(result, result[1:], strict=False):
        first, second = by_key[before], by_key[after]
        # platform ascending
        assert prop(first, "platform") <= prop(second, "platform")
        if prop(first, "platform") != prop(second, "platform"):
            continue
        # then test:name descending, missing last
        name_1, name_2 = prop(first, "test:name"), prop(second, "test:name")
        if name_1 is None:
            assert name_2 is None
        elif name_2 is not None and name_1 != name_2:
            assert name_1 > name_2
            continue
        elif name_2 is None:
            continue
        # then the default order
        assert rank[before] < rank[after]


# ----------------------------------------------------------------------------- paging


def all_pages(catalog: LocalCatalog, body: dict[str, Any]) -> tuple[list, list[int]]:
    seen, sizes, token = [], [], None
    matched = set()
    while True:
        page = catalog.search_page(search_from_body({**body, "token": token}))
        matched.add(page.number_matched)
        seen += keys(page.items)
        sizes.append(len(page.items))
        token = page.next_token
        if token is None:
            break
        assert len(sizes) < 100
    assert len(matched) == 1
    return seen, sizes


@pytest.mark.parametrize(
    "body",
    [
        {"limit": 10},
        {"limit": 7, "filter": "eo:cloud_cover < 60", "sortby": "-eo:cloud_cover"},
        {"limit": 1, "collections": [OTHER_COLLECTION]},
        {"limit": 52},
    ],
)
def test_paging_visits_every_match_once(catalog: LocalCatalog, body: dict[str, Any]):
    want = found(catalog, {key: value for key, value in body.items() if key != "limit"})
    seen, sizes = all_pages(catalog, body)
    assert seen == want
    assert len(set(seen)) == len(seen)
    assert sizes == [body["limit"]] * (len(want) // body["limit"]) + (
        [len(want) % body["limit"]] if len(want) % body["limit"] else []
    )
    assert len(sizes) == math.ceil(len(want) / body["limit"])


def test_page_number_matched_and_tokens(catalog: LocalCatalog):
    query = search_from_body({"limit": 5, "query": {"platform": {"eq": "sentinel-2b"}}})
    page = catalog.search_page(query)
    total = len(expected(lambda i: prop(i, "platform") == "sentinel-2b"))
    assert page.number_matched == total
    assert len(page.items) == 5
    assert page.next_token and "=" not in page.next_token
    # The page size may change between pages: the token carries an offset.
    bigger = search_from_body(
        {"limit": 100, "query": {"platform": {"eq": "sentinel-2b"}}, "token": page.next_token}
    )
    assert len(catalog.search_page(bigger).items) == total - 5
    assert catalog.search_page(bigger).next_token is None


def test_token_from_another_search_refused(catalog: LocalCatalog):
    page = catalog.search_page(search_from_body({"limit": 5}))
    other = search_from_body(
        {"limit": 5, "filter": "eo:cloud_cover < 50", "token": page.next_token}
    )
    with pytest.raises(BadRequestError, match="^token: it belongs to a different search") as caught:
        catalog.search_page(other)
    assert caught.value.status_code == 400


@pytest.mark.parametrize(
    "token",
    ["garbage!", "bm9wZQ", base64.urlsafe_b64encode(b"-5:0000").decode(), "é"],
)
def test_malformed_token_refused(catalog: LocalCatalog, token: str):
    with pytest.raises(BadRequestError, match="^token: not a page token of this catalog$"):
        catalog.search_page(SearchQuery(limit=5, token=token))


def test_search_iterates_all_matches_ignoring_limit(catalog: LocalCatalog):
    query = search_from_body({"limit": 2, "filter": "eo:cloud_cover < 50"})
    want = expected(lambda i: below(i, "eo:cloud_cover", 50))
    assert keys(catalog.search(query)) == want
    assert keys(catalog.search(query, max_items=3)) == want[:3]
    assert keys(catalog.search(query, max_items=0)) == []


def test_search_with_bad_filter_raises_when_called(catalog: LocalCatalog):
    with pytest.raises(BadRequestError, match="^filter: "):
        catalog.search(SearchQuery(filter={"op": "<"}))
    with pytest.raises(BadRequestError, match="^filter: "):
        catalog.search(SearchQuery(collections=["none"], filter={"op": "<"}))


def test_search_page_with_invalid_limit(catalog: LocalCatalog):
    with pytest.raises(BadRequestError, match="^limit: "):
        catalog.search_page(SearchQuery(limit=0))


# ----------------------------------------------------------------------------- loading variants


def test_missing_folder(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LocalCatalog(tmp_path / "nowhere")


def test_catalog_is_a_snapshot_of_the_folder(tmp_path: Path):
    write_catalog(tmp_path, ITEMS[:3])
    catalog = LocalCatalog(tmp_path)
    assert len(catalog) == 3
    (tmp_path / "items" / "new.json").write_text(json.dumps({**ITEMS[5], "id": "new"}))
    with pytest.raises(NotFoundError):
        catalog.get_item(COLLECTION, "new")
    reopened = LocalCatalog(tmp_path)
    assert len(reopened) == 4
    assert reopened.get_item(COLLECTION, "new").id == "new"


def test_broken_item_file_names_the_file(tmp_path: Path):
    write_catalog(tmp_path, ITEMS[:2])
    (tmp_path / "items" / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON"):
        LocalCatalog(tmp_path)
    (tmp_path / "items" / "broken.json").write_text(
        json.dumps({**ITEMS[0], "id": "bad-time", "properties": {"datetime": "yesterday"}})
    )
    with pytest.raises(ValueError, match=r"broken\.json: item 'bad-time': bad datetime"):
        LocalCatalog(tmp_path)


def test_feature_collection_geojson_and_items_without_collection(tmp_path: Path):
    write_catalog(tmp_path, [])
    features = []
    for item in ITEMS[:4]:
        stripped = {key: value for key, value in item.items() if key != "collection"}
        features.append(stripped)
    (tmp_path / "items.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": features})
    )
    catalog = LocalCatalog(tmp_path)
    # One collection in the folder: items without "collection" belong to it.
    assert keys(catalog.search(SearchQuery())) == keys(default_order(ITEMS[:4]))
    assert catalog.get_item(COLLECTION, ITEMS[0]["id"]).collection_id == COLLECTION


def test_duplicate_item_first_file_wins(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    write_catalog(tmp_path, ITEMS[:2])
    clone = {**ITEMS[0], "properties": {**ITEMS[0]["properties"], "eo:cloud_cover": 1.0}}
    (tmp_path / "copy.ndjson").write_text(json.dumps(clone) + "\n")
    catalog = LocalCatalog(tmp_path)
    assert len(catalog) == 2
    item = catalog.get_item(COLLECTION, ITEMS[0]["id"])
    assert item.properties["eo:cloud_cover"] == ITEMS[0]["properties"]["eo:cloud_cover"]
    assert "already read" in caplog.text


def test_collections_folder_layouts(tmp_path: Path):
    write_catalog(tmp_path, [])
    (tmp_path / "collection.json").rename(tmp_path / "collection-l2a.json")
    nested = tmp_path / "collections" / "extra"
    nested.mkdir(parents=True)
    other = json.loads((tmp_path / "collection-l2a.json").read_text())
    (nested / "collection.json").write_text(json.dumps({**other, "id": "extra"}))
    catalog = LocalCatalog(tmp_path)
    assert [c.id for c in catalog.collections()] == ["extra", COLLECTION]


def test_empty_search_area_square_helper_is_consistent():
    # guards the test data itself: squares are SIZE wide with CELL spacing
    assert shapely.geometry.shape(square(0, 0)).area == pytest.approx(SIZE * SIZE)
    assert CELL > SIZE


def test_item_without_any_time_refused_at_load(tmp_path: Path):
    write_catalog(tmp_path, ITEMS[:1])
    timeless = {**ITEMS[1], "properties": {**ITEMS[1]["properties"], "datetime": None}}
    (tmp_path / "items" / "timeless.json").write_text(json.dumps(timeless))
    with pytest.raises(ValueError, match="has neither datetime nor start_datetime"):
        LocalCatalog(tmp_path)
