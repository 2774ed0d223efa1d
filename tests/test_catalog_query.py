"""STAC search parameters (GET and POST) to SearchQuery, and back."""

import json
from datetime import UTC, datetime

import pytest

from app.catalog.base import SearchQuery, SortField
from app.catalog.query import (
    parse_datetime_interval,
    parse_rfc3339,
    search_from_body,
    search_from_get,
    search_to_body,
    search_to_get_params,
)
from app.errors import BadRequestError

POLYGON = {
    "type": "Polygon",
    "coordinates": [
        [[-106.0, 39.5], [-105.0, 39.5], [-105.0, 40.5], [-106.0, 40.5], [-106.0, 39.5]]
    ],
}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def bad_get(params: dict[str, str]) -> str:
    with pytest.raises(BadRequestError) as caught:
        search_from_get(params)
    assert caught.value.status_code == 400
    return caught.value.message


def bad_body(body: dict) -> str:
    with pytest.raises(BadRequestError) as caught:
        search_from_body(body)
    return caught.value.message


# ----------------------------------------------------------------------------- GET


def test_get_reads_every_parameter():
    query = search_from_get(
        {
            "ids": "a, b,,c",
            "collections": "sentinel-2-l2a",
            "bbox": "-106,39.5,-105,40.5",
            "datetime": "2023-06-01T00:00:00Z/2023-06-30T23:59:59Z",
            "query": '{"eo:cloud_cover": {"lt": 20}}',
            "filter": "platform = 'sentinel-2a'",
            "sortby": "-eo:cloud_cover,+datetime,id",
            "limit": "25",
            "token": "abc",
            "f": "json",  # not ours: ignored
        }
    )
    assert query.ids == ["a", "b", "c"]
    assert query.collections == ["sentinel-2-l2a"]
    assert query.bbox == (-106.0, 39.5, -105.0, 40.5)
    assert query.datetime == (utc(2023, 6, 1), utc(2023, 6, 30, 23, 59, 59))
    assert query.query == {"eo:cloud_cover": {"lt": 20}}
    assert query.filter == {"op": "=", "args": [{"property": "platform"}, "sentinel-2a"]}
    assert query.sortby == [
        SortField("eo:cloud_cover", "desc"),
        SortField("datetime", "asc"),
        SortField("id", "asc"),
    ]
    assert query.limit == 25
    assert query.token == "abc"


def test_get_defaults_and_empty_values():
    query = search_from_get({"ids": "", "bbox": " ", "limit": ""}, default_limit=7)
    assert query == SearchQuery(limit=7)


def test_get_sortby_plus_decoded_as_space_and_properties_prefix():
    # An unencoded "+" in a URL reaches us as a space.
    query = search_from_get({"sortby": " properties.eo:cloud_cover,-properties.datetime"})
    assert query.sortby == [
        SortField("properties.eo:cloud_cover", "asc"),
        SortField("properties.datetime", "desc"),
    ]


def test_get_filter_cql2_json_and_next_alias():
    cql = {"op": "<", "args": [{"property": "eo:cloud_cover"}, 10]}
    query = search_from_get({"filter": json.dumps(cql), "filter-lang": "cql2-json", "next": "t"})
    assert query.filter == {"op": "<", "args": [{"property": "eo:cloud_cover"}, 10.0]}
    assert query.token == "t"


def test_get_intersects_json():
    query = search_from_get({"intersects": json.dumps(POLYGON)})
    assert query.intersects == POLYGON


# ----------------------------------------------------------------------------- bbox


def test_bbox_six_numbers_reduced_to_2d():
    assert search_from_get({"bbox": "1,2,-10,3,4,100"}).bbox == (1.0, 2.0, 3.0, 4.0)
    assert search_from_body({"bbox": [1, 2, -10, 3, 4, 100]}).bbox == (1.0, 2.0, 3.0, 4.0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1,2,3", "bbox: expected 4 or 6 numbers, got 3"),
        ("1,2,3,4,5", "bbox: expected 4 or 6 numbers, got 5"),
        ("1,x,3,4", "bbox: 'x' is not a number"),
        ("1,nan,3,4", "bbox: 'nan' is not a finite number"),
        ("1,4,3,2", "bbox: miny 4.0 is greater than maxy 2.0"),
        ("-190,0,3,4", "bbox: longitudes must be within [-180, 180]"),
        ("0,-95,3,4", "bbox: latitudes must be within [-90, 90]"),
    ],
)
def test_bbox_errors(value, message):
    assert bad_get({"bbox": value}) == message


def test_bbox_across_antimeridian_refused_saying_so():
    message = bad_get({"bbox": "170,-10,-170,10"})
    assert message.startswith("bbox: minx 170.0 is greater than maxx -170.0")
    assert "antimeridian" in message


def test_bbox_body_must_be_numbers():
    assert bad_body({"bbox": [1, 2, True, 4]}) == "bbox: True is not a number"
    assert bad_body({"bbox": "1,2,3"}) == "bbox: expected 4 or 6 numbers, got 3"


# ----------------------------------------------------------------------------- datetime


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2023-10-08T18:02:55.276Z", (utc(2023, 10, 8, 18, 2, 55, 276000),) * 2),
        ("2023-10-08T20:02:55+02:00", (utc(2023, 10, 8, 18, 2, 55),) * 2),
        # timezone-naive: taken as UTC
        ("2023-10-08T18:02:55", (utc(2023, 10, 8, 18, 2, 55),) * 2),
        # nanoseconds are cut to microseconds
        ("2023-10-08T18:02:55.123456789Z", (utc(2023, 10, 8, 18, 2, 55, 123456),) * 2),
        ("2023-01-01T00:00:00Z/2023-02-01T00:00:00Z", (utc(2023, 1, 1), utc(2023, 2, 1))),
        ("../2023-02-01T00:00:00Z", (None, utc(2023, 2, 1))),
        ("/2023-02-01T00:00:00Z", (None, utc(2023, 2, 1))),
        ("2023-01-01T00:00:00Z/..", (utc(2023, 1, 1), None)),
        ("2023-01-01T00:00:00Z/", (utc(2023, 1, 1), None)),
        # a bare date as an instant is that day; as an end it is the end of that day
        ("2023-10-08", (utc(2023, 10, 8), utc(2023, 10, 8, 23, 59, 59, 999999))),
        ("2023-10-01/2023-10-31", (utc(2023, 10, 1), utc(2023, 10, 31, 23, 59, 59, 999999))),
        ("2023-01-01T00:00:00z/2023-01-01T00:00:00Z", (utc(2023, 1, 1), utc(2023, 1, 1))),
    ],
)
def test_datetime_forms(value, expected):
    assert search_from_get({"datetime": value}).datetime == expected
    assert search_from_body({"datetime": value}).datetime == expected
    start, end = parse_datetime_interval(value)
    assert all(part is None or part.utcoffset().total_seconds() == 0 for part in (start, end))


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("2023-02-01T00:00:00Z/2023-01-01T00:00:00Z", "is after end"),
        ("../..", "both ends of the range are open"),
        ("/", "both ends of the range are open"),
        ("yesterday", "not an RFC 3339 date-time"),
        ("2023-W40", "not an RFC 3339 date-time"),
        ("2023-13-01T00:00:00Z", "not a valid date-time"),
        ("2023-10-08T18:02:60Z", "not a valid date-time"),
        ("2023-01-01T00:00:00Z/2023-02-01T00:00:00Z/2023-03-01T00:00:00Z", "expected an instant"),
    ],
)
def test_datetime_errors(value, fragment):
    message = bad_get({"datetime": value})
    assert message.startswith("datetime: ")
    assert fragment in message


def test_datetime_body_must_be_string():
    assert bad_body({"datetime": 2023}).startswith("datetime: expected a string")


def test_parse_rfc3339_end_of_day():
    assert parse_rfc3339("2023-10-08", end_of_day=True) == utc(2023, 10, 8, 23, 59, 59, 999999)
    assert parse_rfc3339("2023-10-08T01:00:00Z", end_of_day=True) == utc(2023, 10, 8, 1)


# ----------------------------------------------------------------------------- filter


def test_filter_text_converted_to_cql2_json():
    query = search_from_get(
        {"filter": "eo:cloud_cover < 10 AND datetime > TIMESTAMP('2023-01-01T00:00:00Z')"}
    )
    assert query.filter == {
        "op": "and",
        "args": [
            {"op": "<", "args": [{"property": "eo:cloud_cover"}, 10.0]},
            {"op": ">", "args": [{"property": "datetime"}, {"timestamp": "2023-01-01T00:00:00Z"}]},
        ],
    }


def test_filter_body_json_object_and_text_string():
    cql = {"op": "=", "args": [{"property": "platform"}, "sentinel-2b"]}
    assert search_from_body({"filter": cql}).filter == cql
    assert search_from_body({"filter": cql, "filter-lang": "cql2-json"}).filter == cql
    text = {"filter": "platform = 'sentinel-2b'", "filter-lang": "cql2-text"}
    assert search_from_body(text).filter == cql
    json_text = {"filter": json.dumps(cql), "filter-lang": "cql2-json"}
    assert search_from_body(json_text).filter == cql


def test_filter_literal_true_kept_as_object():
    assert search_from_get({"filter": "true"}).filter == {"op": "=", "args": [True, True]}


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"filter": "eo:cloud_cover <"}, "filter: not valid cql2-text at line 1 column 17"),
        ({"filter": "foo bar"}, "filter: not valid cql2-text at line 1 column 5"),
        ({"filter": "eo:cloud_cover"}, "filter: not a valid CQL2 boolean expression"),
        ({"filter": "5"}, "filter: not a valid CQL2 boolean expression"),
        ({"filter": "frobnicate(eo:cloud_cover) = 1"}, "filter: unknown operator or function"),
        ({"filter": "{nope", "filter-lang": "cql2-json"}, "filter: not valid cql2-json"),
        ({"filter": "a = 1", "filter-lang": "sql"}, "filter-lang: must be one of"),
        ({"filter": "a = 1", "filter-crs": "EPSG:3857"}, "filter-crs: only"),
    ],
)
def test_filter_errors(params, fragment):
    assert fragment in bad_get(params)


def test_filter_body_errors():
    assert bad_body({"filter": {"op": "<"}}).startswith("filter: not valid cql2-json")
    assert bad_body({"filter": {"op": "<", "args": [{"property": "a"}]}}).startswith(
        "filter: not a valid CQL2 boolean expression"
    )
    assert bad_body({"filter": 5}).startswith("filter: ")


# ----------------------------------------------------------------------------- query


def test_query_extension_operators_accepted():
    conditions = {
        "eo:cloud_cover": {"gte": 0, "lt": 20},
        "platform": {"in": ["sentinel-2a", "sentinel-2b"], "neq": "landsat-8"},
        "s2:processing_baseline": {"startsWith": "05", "endsWith": "9"},
        "instruments": {"contains": "msi"},
        "datetime": {"gt": "2023-01-01T00:00:00Z"},
        "earthsearch:boa_offset_applied": {"eq": True},
    }
    assert search_from_body({"query": conditions}).query == conditions
    assert search_from_get({"query": json.dumps(conditions)}).query == conditions


@pytest.mark.parametrize(
    ("conditions", "fragment"),
    [
        ({"eo:cloud_cover": {"like": 5}}, "query: unknown operator 'like' for 'eo:cloud_cover'"),
        ({"eo:cloud_cover": 5}, "query: 'eo:cloud_cover' needs an object of operators"),
        ({"eo:cloud_cover": {}}, "query: 'eo:cloud_cover' needs an object of operators"),
        ({"platform": {"in": "sentinel-2a"}}, "query: 'platform' 'in' needs a non-empty list"),
        ({"platform": {"startsWith": 5}}, "query: 'platform' 'startsWith' needs a string"),
        ({"eo:cloud_cover": {"lt": [1]}}, "query: 'eo:cloud_cover' 'lt' needs a number"),
        ([1, 2], "query: expected an object"),
    ],
)
def test_query_extension_errors(conditions, fragment):
    assert fragment in bad_body({"query": conditions})


def test_query_get_bad_json():
    assert bad_get({"query": "{eo:cloud_cover"}).startswith("query: not valid JSON")


# ----------------------------------------------------------------------------- intersects


def test_intersects_normalised_to_plain_geojson():
    point = {"type": "Point", "coordinates": (-105, 40)}
    assert search_from_body({"intersects": point}).intersects == {
        "type": "Point",
        "coordinates": [-105.0, 40.0],
    }
    collection = {"type": "GeometryCollection", "geometries": [POLYGON], "bbox": [0, 0, 1, 1]}
    assert search_from_body({"intersects": collection}).intersects == {
        "type": "GeometryCollection",
        "geometries": [POLYGON],
    }


@pytest.mark.parametrize(
    ("geometry", "fragment"),
    [
        ({"type": "Feature", "geometry": POLYGON}, "intersects: expected a GeoJSON geometry"),
        ({"type": "Polygon"}, "intersects: invalid Polygon coordinates"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}, "invalid Polygon coordinates"),
        ({"type": "Point", "coordinates": ["a", "b"]}, "intersects: invalid Point coordinates"),
        ({"type": "Polygon", "coordinates": []}, "intersects: empty Polygon"),
        ({"type": "Point", "coordinates": [500000, 4400000]}, "must be longitude/latitude"),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]},
            "intersects: invalid Polygon: Self-intersection",
        ),
        ("not a geometry", "intersects: expected a GeoJSON geometry object"),
    ],
)
def test_intersects_errors(geometry, fragment):
    assert fragment in bad_body({"intersects": geometry})


def test_intersects_get_bad_json():
    assert bad_get({"intersects": "{"}).startswith("intersects: not valid JSON")


def test_bbox_and_intersects_together_refused():
    message = bad_body({"bbox": [-106, 39, -105, 40], "intersects": POLYGON})
    assert message.startswith("intersects: cannot be combined with bbox")


# ----------------------------------------------------------------------------- sortby


def test_sortby_body_forms():
    expected = [SortField("eo:cloud_cover", "desc"), SortField("datetime", "asc")]
    listed = [{"field": "eo:cloud_cover", "direction": "DESC"}, {"field": "datetime"}]
    assert search_from_body({"sortby": listed}).sortby == expected
    assert search_from_body({"sortby": "-eo:cloud_cover,datetime"}).sortby == expected
    assert search_from_body({"sortby": ["-eo:cloud_cover", "+datetime"]}).sortby == expected


@pytest.mark.parametrize(
    ("sortby", "message"),
    [
        ([{"field": "datetime", "direction": "up"}], "sortby: direction must be 'asc' or 'desc'"),
        ([{"direction": "asc"}], "sortby: each entry needs a string 'field'"),
        ("datetime,-properties.datetime", "sortby: field 'datetime' given twice"),
        ("date time", "sortby: invalid field name 'date time'"),
        (5, "sortby: expected a list"),
    ],
)
def test_sortby_errors(sortby, message):
    assert bad_body({"sortby": sortby}).startswith(message)


# ----------------------------------------------------------------------------- limit, token, ids


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "limit: must be between 1 and 1000 (got 0)"),
        ("-3", "limit: must be between 1 and 1000 (got -3)"),
        ("ten", "limit: must be an integer between 1 and 1000, got 'ten'"),
        ("2.5", "limit: must be an integer between 1 and 1000, got '2.5'"),
    ],
)
def test_limit_errors(value, message):
    assert bad_get({"limit": value}) == message


def test_limit_bounds_are_parameters():
    assert search_from_get({}, default_limit=3).limit == 3
    assert search_from_get({"limit": "50"}, max_limit=50).limit == 50
    # OGC API - Features: above the maximum is served as the maximum, not refused.
    assert search_from_get({"limit": "51"}, max_limit=50).limit == 50
    assert search_from_body({"limit": 10**9}, max_limit=50).limit == 50
    assert search_from_body({"limit": 10.0}).limit == 10
    assert bad_body({"limit": True}).startswith("limit: must be an integer")


def test_body_token_and_next():
    assert search_from_body({"token": "a"}).token == "a"
    assert search_from_body({"next": "b"}).token == "b"
    assert bad_body({"token": 5}) == "token: expected a string"


def test_body_ids_collections_types():
    assert search_from_body({"ids": [], "collections": ["x"]}) == SearchQuery(collections=["x"])
    assert search_from_body({"ids": "a,b"}).ids == ["a", "b"]
    assert bad_body({"ids": [1, 2]}) == "ids: expected a list of strings"
    assert bad_body({"collections": {"a": 1}}) == "collections: expected a list of strings"


def test_body_must_be_object():
    with pytest.raises(BadRequestError, match="body: expected a JSON object"):
        search_from_body([1, 2])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- round trips

ROUND_TRIP_BODIES = [
    {},
    {"ids": ["a", "b"], "collections": ["sentinel-2-l2a", "x"], "limit": 3},
    {"bbox": [-106.5, 39.25, -105, 40.125], "datetime": "2023-01-01T00:00:00Z/.."},
    {"intersects": POLYGON, "datetime": "../2023-06-30T12:00:00.5Z", "token": "tok"},
    {"datetime": "2023-10-08", "query": {"eo:cloud_cover": {"lt": 20, "gte": 0.5}}},
    {
        "filter": (
            "eo:cloud_cover < 10 AND platform IN ('sentinel-2a', 'sentinel-2b') AND "
            "S_INTERSECTS(geometry, POLYGON((-106 39, -105 39, -105 40, -106 40, -106 39))) "
            "AND datetime >= TIMESTAMP('2023-10-08T18:02:55.276Z') AND "
            "NOT (s2:processing_baseline LIKE '04%') AND eo:cloud_cover IS NOT NULL"
        ),
        "filter-lang": "cql2-text",
        "sortby": [{"field": "properties.eo:cloud_cover", "direction": "desc"}, {"field": "id"}],
    },
    {"filter": "T_INTERSECTS(datetime, INTERVAL('2023-01-01T00:00:00Z', '..'))"},
]


@pytest.mark.parametrize("body", ROUND_TRIP_BODIES)
def test_round_trip_body_and_get(body):
    query = search_from_body(body)
    assert search_from_body(search_to_body(query)) == query
    params = search_to_get_params(query)
    assert all(isinstance(value, str) for value in params.values())
    assert search_from_get(params) == query
    # and the body is plain JSON
    assert json.loads(json.dumps(search_to_body(query))) == search_to_body(query)


def test_to_body_shape():
    query = search_from_get(
        {
            "datetime": "2023-01-01T00:00:00+01:00/..",
            "sortby": "-eo:cloud_cover",
            "filter": "platform = 'sentinel-2a'",
            "limit": "5",
            "token": "t",
        }
    )
    assert search_to_body(query) == {
        "datetime": "2022-12-31T23:00:00Z/..",
        "filter": {"op": "=", "args": [{"property": "platform"}, "sentinel-2a"]},
        "filter-lang": "cql2-json",
        "sortby": [{"field": "eo:cloud_cover", "direction": "desc"}],
        "limit": 5,
        "token": "t",
    }
    assert search_to_get_params(query) == {
        "datetime": "2022-12-31T23:00:00Z/..",
        "filter": "platform = 'sentinel-2a'",
        "filter-lang": "cql2-text",
        "sortby": "-eo:cloud_cover",
        "limit": "5",
        "token": "t",
    }


def test_to_get_params_formats_numbers_and_instant():
    query = SearchQuery(
        bbox=(-106.0, 39.5, -105.0, 40.0),
        datetime=(utc(2023, 10, 8, 18, 2, 55, 276000), utc(2023, 10, 8, 18, 2, 55, 276000)),
    )
    params = search_to_get_params(query)
    assert params["bbox"] == "-106,39.5,-105,40"
    assert params["datetime"] == "2023-10-08T18:02:55.276000Z"
