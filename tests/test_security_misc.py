"""Issue 12 items 8, 9, 11, 12: 500s on /stac?url=, access control, info leaks, OpenAPI.

- ``/stac?url=`` an allowed file that is not a STAC item is a 4xx naming the problem, and
  the keep-alive connection survives it;
- writes need an API key when keys are configured; keys that parse to nothing are a
  start-up error;
- 403s and "read failed" 502s name the setting / asset, never this machine's folders;
  links come from ``public_url`` when set, else responses holding them are not publicly
  cached and every response varies on Host;
- the OpenAPI document declares the statuses the service answers (schemathesis checks).
"""

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from live_server import live_server
from pydantic import ValidationError
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from app.main import create_app
from app.settings import EARTH_SEARCH_COGS, Settings

COLLECTION = "sentinel-2-l2a"
EVIL = "evil.example"


@pytest.fixture(scope="module")
def junk(demo_settings: Settings) -> Path:
    """Files under an allowed folder (the data folder) that are no STAC item."""
    folder = demo_settings.data_dir / "junk"
    folder.mkdir(exist_ok=True)
    (folder / "folder").mkdir(exist_ok=True)
    (folder / "array.json").write_text("[1, 2]")
    (folder / "null.json").write_text("null")
    (folder / "collection.json").write_text(
        json.dumps({"type": "FeatureCollection", "features": []})
    )
    (folder / "feature.json").write_text(json.dumps({"type": "Feature"}))
    (folder / "text.json").write_text("not json")
    (folder / "binary.json").write_bytes(b"\xff\xfe\x00\x01binary")
    return folder


@pytest.fixture(scope="module")
def item(demo_dir: Path) -> dict[str, Any]:
    """A demo item's JSON, its asset hrefs made absolute (copies live in another folder)."""
    path = sorted((demo_dir / "items").glob("*.json"))[0]
    document = json.loads(path.read_text())
    for asset in document["assets"].values():
        asset["href"] = str((path.parent / asset["href"]).resolve())
    return document


def write_item(folder: Path, name: str, item: dict[str, Any], change) -> Path:
    changed = copy.deepcopy(item)
    change(changed)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(changed))
    return path


# ---------------------------------------------------------------- item 8: /stac?url=

NOT_AN_ITEM = [
    ("folder", 400, "url: '{url}' is not a STAC item (a folder)"),
    ("array.json", 400, "url: '{url}' is not a STAC item (JSON list, not an object)"),
    ("null.json", 400, "url: '{url}' is not a STAC item (JSON NoneType, not an object)"),
    (
        "collection.json",
        400,
        "url: '{url}' is not a STAC item (its type is 'FeatureCollection', a STAC Item's "
        "is 'Feature')",
    ),
    ("text.json", 400, "url: '{url}' is not a STAC item (not JSON: Expecting value: "),
    ("binary.json", 400, "url: '{url}' is not a STAC item (not UTF-8 text)"),
    ("missing.json", 404, "url: no file at '{url}'"),
]


@pytest.mark.parametrize(("name", "code", "message"), NOT_AN_ITEM)
@pytest.mark.parametrize("endpoint", ["WebMercatorQuad/tilejson.json", "assets", "info"])
def test_stac_url_that_is_no_item_is_a_4xx_naming_it(
    client: TestClient, junk: Path, name: str, code: int, message: str, endpoint: str
) -> None:
    url = str(junk / name)
    response = client.get(f"/stac/{endpoint}", params={"url": url, "assets": "red"})
    assert response.status_code == code, response.text
    assert response.json()["detail"].startswith(message.format(url=url))


def test_stac_url_to_a_cog_is_a_400(client: TestClient, demo_dir: Path, item: dict) -> None:
    cog = item["assets"]["red"]["href"]
    response = client.get("/stac/assets", params={"url": cog})
    assert response.status_code == 400
    assert response.json()["detail"] == f"url: '{cog}' is not a STAC item (not UTF-8 text)"


def test_feature_that_pystac_refuses_is_a_400(client: TestClient, junk: Path) -> None:
    url = str(junk / "feature.json")
    detail = client.get("/stac/assets", params={"url": url}).json()["detail"]
    assert detail.startswith(f"url: '{url}' is not a STAC item (STACTypeError: ")


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        (
            "transform",
            lambda it: [a.__setitem__("proj:transform", "x") for a in it["assets"].values()],
            "its proj:* fields cannot be used (TypeError: ",
        ),
        (
            "shape",
            lambda it: [a.__setitem__("proj:shape", [0, -1]) for a in it["assets"].values()],
            "its proj:* fields cannot be used (ZeroDivisionError: ",
        ),
        (
            "bands",
            lambda it: it["assets"]["red"].__setitem__("raster:bands", "x"),
            "asset 'red' has fields that cannot be used (AttributeError: ",
        ),
    ],
)
def test_item_with_unusable_fields_is_a_400(
    client: TestClient, junk: Path, item: dict, name: str, change, message: str
) -> None:
    url = str(write_item(junk, f"bad-{name}", item, change))
    response = client.get(
        "/stac/WebMercatorQuad/tilejson.json", params={"url": url, "assets": "red"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith(f"item '{item['id']}': {message}")


def test_keep_alive_connection_survives_a_refused_item(demo_settings: Settings, junk: Path) -> None:
    # An unhandled error made uvicorn close the connection after the 500.
    with live_server(create_app(demo_settings)) as base, httpx.Client(base_url=base) as http:
        refused = http.get("/stac/assets", params={"url": str(junk / "array.json")})
        assert refused.status_code == 400
        assert http.get("/healthz").status_code == 200
        assert refused.extensions["network_stream"] is not None
        # One connection served both: the pool opened no second one.
        pool = http._transport._pool  # type: ignore[attr-defined]
        assert len(pool.connections) == 1 and pool.connections[0].is_idle()


def test_keep_alive_connection_survives_an_unexpected_error(demo_settings: Settings) -> None:
    app = create_app(demo_settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    with live_server(app) as base, httpx.Client(base_url=base) as http:
        failed = http.get("/boom")
        assert failed.status_code == 500
        assert failed.json() == {"detail": "internal error: RuntimeError"}
        assert http.get("/healthz").status_code == 200
        pool = http._transport._pool  # type: ignore[attr-defined]
        assert len(pool.connections) == 1 and pool.connections[0].is_idle()


# ---------------------------------------------------------------- item 9: API keys


@pytest.mark.parametrize("value", [" , ", ",", " ,, , "])
def test_api_keys_that_parse_to_nothing_are_a_startup_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("TERRATILER_API_KEYS", value)
    with pytest.raises(ValidationError, match=r"api_keys: .* holds no key"):
        Settings()


@pytest.mark.parametrize(("value", "keys"), [("", []), ("  ", []), (" a , b,", ["a", "b"])])
def test_api_keys_unset_or_empty_mean_no_authentication(
    monkeypatch: pytest.MonkeyPatch, value: str, keys: list[str]
) -> None:
    monkeypatch.setenv("TERRATILER_API_KEYS", value)
    assert Settings().api_keys == keys


def test_api_keys_list_of_blanks_is_an_error() -> None:
    with pytest.raises(ValidationError, match="api_keys"):
        Settings(api_keys=[" "])


@pytest.fixture(scope="module")
def keyed_client(
    demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    # Its own data folder: its search store starts empty.
    data_dir = tmp_path_factory.mktemp("keyed")
    settings = demo_settings.model_copy(update={"api_keys": ["k-1"], "data_dir": data_dir})
    with TestClient(create_app(settings)) as test_client:
        yield test_client


SEARCH = {"collections": [COLLECTION], "limit": 5}


def test_register_needs_a_key_when_keys_are_set(keyed_client: TestClient) -> None:
    missing = keyed_client.post("/searches/register", json=SEARCH)
    assert missing.status_code == 401
    assert missing.json()["detail"] == (
        "an API key is required: send it as X-API-Key or Authorization: Bearer"
    )
    wrong = keyed_client.post("/searches/register", json=SEARCH, headers={"X-API-Key": "k-2"})
    assert wrong.status_code == 403 and wrong.json()["detail"] == "the API key is not valid"
    assert keyed_client.get("/searches").json()["numberMatched"] == 0  # nothing written
    ok = keyed_client.post(
        "/searches/register", json=SEARCH, headers={"Authorization": "Bearer k-1"}
    )
    assert ok.status_code == 200, ok.text
    # Reads stay open; computing POSTs (no state written) too.
    assert keyed_client.get("/searches").json()["numberMatched"] == 1
    assert keyed_client.get(f"/searches/{ok.json()['id']}").status_code == 200


def test_every_write_endpoint_requires_the_key(keyed_client: TestClient) -> None:
    # Writes: POST/PUT/PATCH/DELETE routes that persist state. Computing POSTs are listed.
    computing = {
        "/statistics",
        "/catalog/search",
        "/searches/{search_id}/statistics",
        "/cog/statistics",
        "/stac/statistics",
        "/collections/{collection_id}/items/{item_id}/statistics",
        "/collections/{collection_id}/animation.gif",
        "/collections/{collection_id}/animation.webp",
    }
    writes = set()
    for route, operations in keyed_client.get("/openapi.json").json()["paths"].items():
        for method in operations.keys() & {"post", "put", "patch", "delete"}:
            if route in computing or "/feature" in route:  # crops / statistics of a feature
                continue
            writes.add(route)
            path = route.replace("{job_id}", "x").replace("{search_id}", "x")
            response = keyed_client.request(method.upper(), path, json={})
            assert response.status_code == 401, (route, response.text)
    assert sorted(writes) == [
        "/batch/process",
        "/batch/process/{job_id}",
        "/batch/process/{job_id}/analyse",
        "/batch/process/{job_id}/retry-failed",
        "/batch/process/{job_id}/start",
        "/batch/process/{job_id}/stop",
        "/batch/statistics",
        "/batch/statistics/{job_id}",
        "/batch/statistics/{job_id}/analyse",
        "/batch/statistics/{job_id}/retry-failed",
        "/batch/statistics/{job_id}/start",
        "/batch/statistics/{job_id}/stop",
        "/searches/register",
    ]


# ---------------------------------------------------------------- item 11: leaks, links


def test_403_names_the_setting_not_the_server_folders(
    client: TestClient, demo_settings: Settings, demo_dir: Path
) -> None:
    response = client.get("/cog/info", params={"url": "/etc/passwd"})
    assert response.status_code == 403
    assert response.json()["detail"] == (
        f"url: not in the allowed sources ({EARTH_SEARCH_COGS}, 2 local folders), "
        "setting allowed_sources"
    )
    assert str(demo_dir) not in response.text
    assert str(demo_settings.data_dir) not in response.text


def test_read_failed_names_the_asset_not_the_server_path(
    client: TestClient, junk: Path, item: dict, demo_settings: Settings
) -> None:
    missing = junk / "gone.tif"
    url = str(
        write_item(
            junk, "gone", item, lambda it: it["assets"]["red"].__setitem__("href", str(missing))
        )
    )
    response = client.get("/stac/info", params={"url": url, "assets": "red"})
    assert response.status_code == 502
    assert response.json()["detail"] == (
        "read failed: asset 'red' (junk/gone.tif): junk/gone.tif: No such file or directory"
    )
    cog = client.get("/cog/info", params={"url": str(missing)})
    assert cog.status_code == 502
    assert cog.json()["detail"] == (
        "read failed: 'junk/gone.tif': junk/gone.tif: No such file or directory"
    )
    assert str(demo_settings.data_dir) not in response.text + cog.text


def tilejson_path(item: dict) -> str:
    return f"/collections/{COLLECTION}/items/{item['id']}/WebMercatorQuad/tilejson.json"


def test_links_from_the_host_header_are_not_publicly_cached(client: TestClient, item: dict) -> None:
    forged = client.get(tilejson_path(item), params={"assets": "red"}, headers={"Host": EVIL})
    assert forged.status_code == 200
    assert forged.json()["tiles"][0].startswith(f"http://{EVIL}/collections/")
    assert forged.headers["cache-control"] == "private"
    assert forged.headers["vary"] == "Host"
    for path in [
        "/tileMatrixSets",
        f"/collections/{COLLECTION}/items/{item['id']}/WebMercatorQuad/map.html",
    ]:
        response = client.get(path, params={"assets": "red"}, headers={"Host": EVIL})
        assert response.status_code == 200 and EVIL in response.text
        assert response.headers["cache-control"] == "private", path
    # No links in the body: still cached publicly, but per Host.
    info = client.get(
        f"/collections/{COLLECTION}/items/{item['id']}/info", params={"assets": "red"}
    )
    assert info.headers["cache-control"] == "public, max-age=3600"
    assert info.headers["vary"] == "Host"


def test_bodies_not_inspected_are_kept_private() -> None:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    from app.public_links import HostLinksMiddleware

    async def streamed(request):
        return StreamingResponse(iter([b'{"a": 1}']), media_type="application/json")

    async def small(request):
        return JSONResponse({"a": 1}, headers={"Cache-Control": "public, max-age=60"})

    routes = [Route("/streamed", streamed), Route("/small", small, methods=["GET", "HEAD"])]
    with TestClient(HostLinksMiddleware(Starlette(routes=routes))) as app_client:
        # Streamed (no length) and HEAD (no body): assumed to hold links.
        assert app_client.get("/streamed").headers["cache-control"] == "private"
        assert app_client.head("/small").headers["cache-control"] == "private"
        # A body seen to hold no link keeps its caching.
        small_get = app_client.get("/small")
        assert small_get.headers["cache-control"] == "public, max-age=60"
        assert small_get.headers["vary"] == "Host"


@pytest.fixture(scope="module")
def public_client(
    demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    update = {
        "public_url": "https://tiles.example.com/tt",
        "data_dir": tmp_path_factory.mktemp("pub"),
    }
    settings = demo_settings.model_copy(update=update)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_public_url_builds_every_link(public_client: TestClient, item: dict) -> None:
    base = "https://tiles.example.com/tt"
    tilejson = public_client.get(
        tilejson_path(item), params={"assets": "red"}, headers={"Host": EVIL}
    )
    assert tilejson.json()["tiles"][0].startswith(f"{base}/collections/{COLLECTION}/items/")
    assert tilejson.headers["cache-control"] == "public, max-age=3600"
    assert "vary" not in tilejson.headers
    registered = public_client.post("/searches/register", json=SEARCH, headers={"Host": EVIL})
    assert {link["href"].split("/searches/")[0] for link in registered.json()["links"]} == {base}
    for path in ["/catalog/collections", "/tileMatrixSets"]:
        response = public_client.get(path, headers={"Host": EVIL})
        assert response.status_code == 200 and f"{base}/" in response.text
        assert EVIL not in response.text, path


@pytest.mark.parametrize(
    "value", ["ftp://x.example", "tiles.example.com", "https://x.example/?a=1", "https://u@x.ex"]
)
def test_public_url_must_be_an_http_base_url(value: str) -> None:
    with pytest.raises(ValidationError, match="public_url"):
        Settings(public_url=value)


def test_public_url_is_normalized() -> None:
    assert Settings(public_url="https://x.example/tt/").public_url == "https://x.example/tt"
    assert Settings(public_url="").public_url is None


# ---------------------------------------------------------------- item 12: OpenAPI statuses

# A bounded subset of the API, every kind of source and id: schemathesis in-process.
# `make fuzz` (tests/harness/fuzz.py) runs the whole document against a real server.
FUZZED = (
    r"^/(cog|stac)/(info|point/.*|bbox/.*\.\{format\}|tiles/WebMercatorQuad/.*)$"
    r"|^/collections/\{collection_id\}/items/\{item_id\}/(info|point/.*)$"
    r"|^/searches(/register|/\{search_id\}|/\{search_id\}/point/.*)?$"
    r"|^/catalog/(collections|search)$|^/tileMatrixSets/.*"
)


@pytest.fixture(scope="module")
def fuzz_ids(demo_settings: Settings, item: dict, tmp_path_factory: pytest.TempPathFactory):
    settings = demo_settings.model_copy(update={"data_dir": tmp_path_factory.mktemp("fuzz")})
    app = create_app(settings)
    with TestClient(app) as client:
        search = client.post("/searches/register", json=SEARCH).json()["id"]
    item_url = str(settings.data_dir / "item.json")
    Path(item_url).write_text(json.dumps(item))
    ids = {
        "collection_id": COLLECTION,
        "item_id": item["id"],
        "search_id": search,
        "/cog/": item["assets"]["red"]["href"],
        "/stac/": item_url,
    }
    return app, ids


@pytest.fixture(scope="module")
def api_schema(fuzz_ids):
    import schemathesis

    app, _ = fuzz_ids
    return schemathesis.openapi.from_asgi("/openapi.json", app).include(path_regex=FUZZED)


def test_openapi_declares_every_status_the_service_answers(api_schema, fuzz_ids) -> None:
    # schemathesis' pytest integration (from_fixture) fails on pytest 9 (`_nodeid`): its
    # case strategies are driven by hypothesis directly, a few examples per operation.
    _, ids = fuzz_ids
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == 18

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=4,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: report, move on
            suppress_health_check=list(HealthCheck),
        )
        def check(case) -> None:
            for name in case.path_parameters or {}:
                if name in ids:
                    case.path_parameters[name] = ids[name]
            for prefix in ("/cog/", "/stac/"):
                if case.path.startswith(prefix):
                    case.query = {**(case.query or {}), "url": ids[prefix]}
            case.call_and_validate(checks=[not_a_server_error, status_code_conformance])

        try:
            check()
        except Exception as error:  # a FailureGroup naming the check and the response
            failures.append(f"{operation.label}: {str(error)[:300]}")
    assert failures == []


def test_openapi_lists_the_error_statuses(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    errors = {"400", "403", "404", "413", "422", "502", "504"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert errors <= operation["responses"].keys(), (method, path)
    register = document["paths"]["/searches/register"]["post"]["responses"]
    assert {"200", "401"} <= register.keys()
    assert "201" in document["paths"]["/batch/statistics"]["post"]["responses"]
    assert "409" in document["paths"]["/batch/statistics/{job_id}/start"]["post"]["responses"]
    detail = document["components"]["schemas"]["ErrorDetail"]
    assert detail["required"] == ["detail"]


def test_statistical_api_read_failure_names_the_asset_not_the_server_path(
    demo_dir: Path, demo_settings: Settings, tmp_path: Path
) -> None:
    from app.stats import compute_statistics

    paths = sorted((demo_dir / "items").glob("*.json"))
    items = [json.loads(path.read_text()) for path in paths]
    for document in items:
        for asset in document["assets"].values():
            asset["href"] = str((demo_dir / "items" / asset["href"]).resolve())
    items[0]["assets"]["red"]["href"] = str(tmp_path / "cogs" / "gone.tif")
    settings = demo_settings.model_copy(
        update={"allowed_sources": [str(demo_dir), str(tmp_path)], "data_dir": tmp_path}
    )
    day = items[0]["properties"]["datetime"][:10]
    minx, miny, maxx, maxy = items[0]["bbox"]
    x, y = (minx + maxx) / 2, (miny + maxy) / 2
    request = {
        "input": {
            "data": [{"type": COLLECTION}],
            "bounds": {"bbox": [x - 0.002, y - 0.002, x + 0.002, y + 0.002]},  # CRS84
        },
        "aggregation": {
            "timeRange": {"from": "2023-01-01T00:00:00Z", "to": "2024-01-01T00:00:00Z"},
            "aggregationInterval": {"of": "P1D"},
            "outputs": {"ndvi": {"expression": "(nir-red)/(nir+red)"}},
        },
    }
    response = compute_statistics(request, items, settings)
    [entry] = [e for e in response["data"] if e["interval"]["from"][:10] == day]
    assert entry["error"]["message"] == (
        f"item '{items[0]['id']}' asset 'red': read failed: "
        "cogs/gone.tif: No such file or directory"
    )
