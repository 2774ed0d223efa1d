"""The viewer's analysis tools in a real browser (Debian's Chromium, headless) against uvicorn.

Point and field charts, the legend, a search's defaults, animations and permalinks, checked
against the service's own endpoints called directly (item points, ``POST /statistics``,
rio-tiler's colormaps). Screenshots of each step go to ``data/artifacts/viewer/`` (git-ignored).
"""

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import shapely
from live_server import live_server
from PIL import Image
from rio_tiler.colormap import cmap
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from app.main import create_app
from app.settings import Settings

ARTIFACTS = Path(__file__).resolve().parent.parent / "data" / "artifacts" / "viewer"
COLLECTION = "sentinel-2-l2a"
NDVI = "(nir-red)/(nir+red)"
WAIT = 60


@pytest.fixture(scope="module")
def site(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(catalog=str(demo_dir), data_dir=tmp_path_factory.mktemp("viewer"))
    with live_server(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def http(site: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site, timeout=60, trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
def items(demo_dir: Path) -> list[dict[str, Any]]:
    """The demo's scenes, oldest first."""
    found = [json.loads(p.read_text()) for p in (demo_dir / "items").glob("*.json")]
    return sorted(found, key=lambda item: item["properties"]["datetime"])


def screenshot(browser: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def js(browser: Any, script: str, *args: Any) -> Any:
    return browser.execute_script(script, *args)


def open_viewer(browser: Any, url: str) -> None:
    browser.get("about:blank")  # a new document even when only the hash differs
    browser.get(url)
    WebDriverWait(browser, WAIT).until(lambda d: js(d, "return document.body.dataset.ready"))


def wait_for(browser: Any, script: str, *args: Any) -> Any:
    return WebDriverWait(browser, WAIT).until(lambda d: js(d, script, *args))


def loaded_tiles(browser: Any, fragment: str) -> list[str]:
    return wait_for(
        browser,
        "const t = Array.from(document.querySelectorAll('img.leaflet-tile-loaded'))"
        "  .map(i => i.src).filter(s => s.includes(arguments[0]));"
        "return t.length ? t : null;",
        fragment,
    )


def click_map_at(browser: Any, lon: float, lat: float) -> None:
    """A real mouse click on the map at lon/lat (where the page's map draws it)."""
    x, y = js(
        browser,
        "const p = map.latLngToContainerPoint([arguments[1], arguments[0]]); return [p.x, p.y];",
        lon,
        lat,
    )
    element = browser.find_element(By.ID, "map")
    size = element.size
    ActionChains(browser).move_to_element_with_offset(
        element, round(x - size["width"] / 2), round(y - size["height"] / 2)
    ).click().perform()


def item_point(http: httpx.Client, item_id: str, lon: float, lat: float) -> float | None | str:
    """The item's masked NDVI at the point by its own point endpoint; "outside" off its bounds."""
    r = http.get(
        f"/collections/{COLLECTION}/items/{item_id}/point/{lon},{lat}",
        params={"preset": "ndvi", "mask": "scl-clear"},
    )
    if r.status_code == 400 and "outside" in r.text:
        return "outside"
    assert r.status_code == 200, r.text
    return r.json()["values"][0]


@pytest.fixture(scope="module")
def field(demo_dir: Path, items: list[dict[str, Any]], http: httpx.Client) -> dict[str, Any]:
    """A demo field whose inner point is cloudy on some dates and clear on others, with its
    point's values per scene by the item point endpoint."""
    features = json.loads((demo_dir / "fields.geojson").read_text())["features"]
    for feature in features:
        inner = shapely.geometry.shape(feature["geometry"]).representative_point()
        values = {item["id"]: item_point(http, item["id"], inner.x, inner.y) for item in items}
        clear = [v for v in values.values() if isinstance(v, float)]
        if len(clear) >= 2 and None in values.values():
            return {"feature": feature, "lon": inner.x, "lat": inner.y, "values": values}
    raise AssertionError("no demo field with both clear and cloudy dates")


def field_statistics(http: httpx.Client, geometry: dict, items: list[dict]) -> list[dict]:
    """Per-date NDVI statistics of a polygon by ``POST /statistics`` (one day per interval)."""
    last = items[-1]["properties"]["datetime"][:10]
    end = np.datetime64(last) + np.timedelta64(1, "D")
    body = {
        "input": {"bounds": {"geometry": geometry}, "data": [{"type": COLLECTION}]},
        "aggregation": {
            "timeRange": {
                "from": items[0]["properties"]["datetime"][:10] + "T00:00:00Z",
                "to": f"{end}T00:00:00Z",
            },
            "aggregationInterval": {"of": "P1D"},
            "outputs": {"ndvi": {"expression": NDVI}},
            "mask": "scl-clear",
        },
    }
    r = http.post("/statistics", json=body)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_a_scene_a_point_and_a_field(site, browser, http, items, field):
    clearest = http.get("/catalog/search", params={"limit": 1, "sortby": "eo:cloud_cover"})
    clearest_id = clearest.json()["features"][0]["id"]
    open_viewer(browser, f"{site}/")
    # The map opens on the catalog's extent (the collection's bbox), not the world.
    west, south, east, north = http.get(f"/catalog/collections/{COLLECTION}").json()["extent"][
        "spatial"
    ]["bbox"][0]
    view = js(
        browser,
        "const b = map.getBounds(); return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()];",
    )
    assert view[0] <= west and view[1] <= south and view[2] >= east and view[3] >= north
    assert view[2] - view[0] < 4 * (east - west)
    # Every scene's footprint is drawn; the slider walks the scenes' dates.
    assert js(browser, "return footprints.getLayers().length") == len(items)
    assert int(browser.find_element(By.ID, "time").get_attribute("max")) == len(items) - 1

    # Pick the clearest scene, NDVI, clouds masked.
    browser.find_element(By.CSS_SELECTOR, f'#items button[title="{clearest_id}"]').click()
    loaded_tiles(browser, f"/items/{clearest_id}/tiles/")
    Select(browser.find_element(By.ID, "preset")).select_by_value("ndvi")
    browser.find_element(By.ID, "mask").click()
    loaded_tiles(browser, "scl-clear")
    date = browser.find_element(By.ID, "date").text
    assert date.startswith(
        next(i for i in items if i["id"] == clearest_id)["properties"]["datetime"][:10]
    )

    # The legend: the preset's colormap and rescale, its ramp rio-tiler's rdylgn.
    legend = browser.find_element(By.ID, "legend")
    assert legend.get_attribute("data-colormap") == "rdylgn"
    assert json.loads(legend.get_attribute("data-rescale")) == [-0.2, 0.9]
    ramp = legend.find_element(By.TAG_NAME, "img")
    wait_for(browser, "return arguments[0].complete && arguments[0].naturalWidth > 0", ramp)
    png = http.get(ramp.get_attribute("src"))
    assert png.headers["content-type"] == "image/png"
    pixels = np.asarray(Image.open(io.BytesIO(png.content)).convert("RGBA"))
    colours = cmap.get("rdylgn")
    assert tuple(pixels[pixels.shape[0] // 2, 0]) == tuple(colours[0])
    assert tuple(pixels[pixels.shape[0] // 2, -1]) == tuple(colours[255])
    assert "-0.2" in legend.text and "0.9" in legend.text

    # Click a field (zoomed in on it): the point chart and the field chart.
    lon, lat, name = field["lon"], field["lat"], field["feature"]["properties"]["identifier"]
    js(browser, "map.setView([arguments[1], arguments[0]], 17, {animate: false});", lon, lat)
    click_map_at(browser, lon, lat)
    point = wait_for(browser, "return window.terratiler.lastPoint")
    fielded = wait_for(
        browser,
        "const f = window.terratiler.lastField; return f && f.name === arguments[0] ? f : null;",
        name,
    )
    loaded_tiles(browser, "scl-clear")
    screenshot(browser, "1-field-and-point")

    # One point per clear date: the scenes whose own point endpoint has a value there, with
    # that value; the cloud-masked dates are gaps (null) in the chart's data.
    assert abs(point["coordinates"][0] - lon) < 1e-5 and abs(point["coordinates"][1] - lat) < 1e-5
    by_date = dict(zip(point["dates"], point["values"][0], strict=True))
    clear = {
        i["properties"]["datetime"][:10]: field["values"][i["id"]]
        for i in items
        if isinstance(field["values"][i["id"]], float)
    }
    charted = {d[:10]: v for d, v in by_date.items() if v is not None}
    assert charted.keys() == clear.keys()
    for day, value in clear.items():
        assert charted[day] == pytest.approx(value, abs=1e-6)
    assert None in by_date.values()  # a cloudy date is a gap, not a point
    section = browser.find_element(By.ID, "point-section")
    assert int(section.get_attribute("data-points")) == len(clear)
    # ... and it is the search point endpoint's answer the page asked for.
    series = http.get(point["url"] if "://" in point["url"] else f"/{point['url']}").json()
    assert [s["values"][0] for s in series["series"]] == point["values"][0]

    # The field chart's means are POST /statistics's for that field.
    expected = field_statistics(http, field["feature"]["geometry"], items)
    means = {
        d["interval"]["from"][:10]: d["outputs"]["ndvi"]["bands"]["B0"]["stats"]["mean"]
        for d in expected
    }
    assert fielded["dates"] == list(means)
    for day, mean in zip(fielded["dates"], fielded["mean"], strict=True):
        if means[day] == "NaN":
            assert mean is None
        else:
            assert mean == pytest.approx(means[day], rel=1e-9)
    # The histogram is the selected date's (the clearest scene's) when the field has data there.
    histogram = js(browser, "return window.terratiler.lastField.histogramDate")
    assert histogram in fielded["dates"]

    # The CSV: one row per date, the means as charted.
    browser.find_element(By.ID, "field-csv").click()
    csv = wait_for(browser, "return window.terratiler.lastCsv").strip().splitlines()
    assert csv[0].startswith("date,mean,stDev")
    assert [row.split(",")[0] for row in csv[1:]] == fielded["dates"]

    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []

    # The permalink restores the view: scene, layer, mask, map, field and point.
    permalink = browser.find_element(By.ID, "permalink").get_attribute("href")
    center = js(browser, "const c = map.getCenter(); return [c.lat, c.lng, map.getZoom()];")
    open_viewer(browser, permalink)
    wait_for(
        browser,
        "const f = window.terratiler.lastField; return f && f.name === arguments[0] ? f : null;",
        name,
    )
    restored_point = wait_for(browser, "return window.terratiler.lastPoint")
    assert restored_point["values"] == point["values"]
    assert (
        Select(browser.find_element(By.ID, "preset")).first_selected_option.get_attribute("value")
        == "ndvi"
    )
    assert browser.find_element(By.ID, "mask").is_selected()
    active = browser.find_element(By.CSS_SELECTOR, "#items button.active")
    assert active.get_attribute("title") == clearest_id
    restored = js(browser, "const c = map.getCenter(); return [c.lat, c.lng, map.getZoom()];")
    assert restored[2] == center[2]
    assert restored[0] == pytest.approx(center[0], abs=1e-4)
    assert restored[1] == pytest.approx(center[1], abs=1e-4)
    loaded_tiles(browser, f"/items/{clearest_id}/tiles/")
    screenshot(browser, "2-permalink")


def test_a_search_opens_with_its_defaults_and_its_permalink_restores_the_date(
    site, browser, http, items
):
    r = http.post(
        "/searches/register",
        json={
            "collections": [COLLECTION],
            "metadata": {"name": "clear NDVI", "defaults": {"preset": "ndvi", "mask": "scl-clear"}},
        },
    )
    assert r.status_code == 200, r.text
    search_id = r.json()["id"]
    open_viewer(browser, f"{site}/")
    # The page opens on a scene in true colour, unmasked; the search opens as registered.
    assert not browser.find_element(By.ID, "mask").is_selected()
    button = wait_for(
        browser, f"return document.querySelector('#searches button[title=\"{search_id}\"]')"
    )
    button.click()
    mosaic = loaded_tiles(browser, f"/searches/{search_id}/tiles/")
    assert all("scl-clear" in src and "colormap_name=rdylgn" in src for src in mosaic)
    assert (
        Select(browser.find_element(By.ID, "preset")).first_selected_option.get_attribute("value")
        == "ndvi"
    )
    assert browser.find_element(By.ID, "mask").is_selected()
    assert browser.find_element(By.ID, "date").text == "all dates (mosaic)"
    assert browser.find_element(By.ID, "legend").get_attribute("data-colormap") == "rdylgn"

    # A click beside the scenes: the point chart says why it has nothing (the service's 404).
    west, _, _, north = wait_for(browser, "return window.terratiler.state.extent")
    view_west = js(browser, "return map.getBounds().getWest()")
    click_map_at(browser, (view_west + west) / 2, north - 0.001)
    message = wait_for(
        browser, "const c = document.getElementById('point-chart'); return c.textContent;"
    )
    assert message.startswith("404") and "outside search" in message

    # The slider: position 0 is the mosaic, then one position per date of the search.
    slider = browser.find_element(By.ID, "time")
    assert int(slider.get_attribute("max")) == len(items)
    # Dragged across every date and back to the third at once: the third is what stays.
    js(
        browser,
        "for (const v of [1, 2, 3, 4, 5, 6, 5, 4, 3]) {"
        "  arguments[0].value = v; arguments[0].dispatchEvent(new Event('input')); }",
        slider,
    )
    third = items[2]
    loaded_tiles(browser, f"/items/{third['id']}/tiles/")
    wait_for(
        browser, "return !document.querySelector('img.leaflet-tile:not(.leaflet-tile-loaded)')"
    )
    shown = js(
        browser, "return Array.from(document.querySelectorAll('img.leaflet-tile'), i => i.src)"
    )
    assert shown and all(f"/items/{third['id']}/tiles/" in src for src in shown)
    assert browser.find_element(By.ID, "date").text.startswith(third["properties"]["datetime"][:10])
    screenshot(browser, "3-search-date")

    permalink = browser.find_element(By.ID, "permalink").get_attribute("href")
    assert f"search={search_id}" in permalink
    open_viewer(browser, permalink)
    active = browser.find_element(By.CSS_SELECTOR, "#searches button.active")
    assert active.get_attribute("title") == search_id
    assert browser.find_element(By.ID, "time").get_attribute("value") == "3"
    loaded_tiles(browser, f"/items/{third['id']}/tiles/")
    assert browser.find_element(By.ID, "mask").is_selected()


def gif_route(http: httpx.Client) -> bool:
    paths = http.get("/openapi.json").json()["paths"]
    return any(p.startswith("/searches/{search_id}/bbox/") and ".gif" in p for p in paths)


def clear_fraction(http: httpx.Client, item_id: str, bbox: str, size: str) -> float:
    """The fraction of valid (clear, inside the scene) pixels of the item's masked NDVI crop."""
    r = http.get(
        f"/collections/{COLLECTION}/items/{item_id}/bbox/{bbox}/{size}.npy",
        params={"preset": "ndvi", "mask": "scl-clear"},
    )
    assert r.status_code == 200, r.text
    array = np.load(io.BytesIO(r.content))
    return float((array[-1] > 0).mean())


def test_animate_a_search(site, browser, http, items):
    if not gif_route(http):
        pytest.skip("no GET /searches/{id}/bbox/...gif in this branch (the anim branch builds it)")
    r = http.post(
        "/searches/register",
        json={
            "collections": [COLLECTION],
            "metadata": {"name": "animate me", "defaults": {"preset": "ndvi", "mask": "scl-clear"}},
        },
    )
    search_id = r.json()["id"]
    # A view inside the scenes (the default view also shows the grey around them).
    lon, lat = shapely.geometry.shape(items[0]["geometry"]).centroid.coords[0]
    open_viewer(browser, f"{site}/#map=16/{lat}/{lon}&search={search_id}&date=mosaic")
    min_clear = browser.find_element(By.ID, "min-clear")
    min_clear.clear()
    min_clear.send_keys("0.5")
    browser.find_element(By.ID, "animate").click()
    animation = wait_for(browser, "return window.terratiler.lastAnimation")
    image = browser.find_element(By.ID, "animation")
    wait_for(browser, "return arguments[0].complete && arguments[0].naturalWidth > 0", image)
    screenshot(browser, "4-animation")

    # The GIF the page shows: as many frames as dates with half their view clear, each
    # date's clear fraction from its own item's masked crop of the same bbox and size.
    url = animation["url"]
    assert "min_clear=0.5" in url and "mask=scl-clear" in url and "preset=ndvi" in url
    bbox, size = url.split("/bbox/")[1].split(".gif")[0].split("/")
    fractions = {
        i["properties"]["datetime"][:10]: clear_fraction(http, i["id"], bbox, size) for i in items
    }
    expected = sorted(day for day, fraction in fractions.items() if fraction >= 0.5)
    assert 0 < len(expected) < len(items), fractions  # some dates are left out, some kept
    gif = http.get(url)
    assert gif.status_code == 200 and gif.headers["content-type"] == "image/gif"
    assert animation["bytes"] == len(gif.content)
    assert Image.open(io.BytesIO(gif.content)).n_frames == len(expected)
    assert animation["labels"] == expected
    assert f"{len(expected)} frames" in browser.find_element(By.ID, "animation-caption").text


def field_means(data: list[dict]) -> dict[str, float | None]:
    means = {}
    for entry in data:
        mean = entry["outputs"]["ndvi"]["bands"]["B0"]["stats"]["mean"]
        means[entry["interval"]["from"][:10]] = None if mean == "NaN" else mean
    return means


def assert_field_chart(browser: Any, http: httpx.Client, items: list[dict], name: str) -> dict:
    """The page's field chart for ``name`` has POST /statistics's means for its geometry."""
    chart = wait_for(
        browser,
        "const f = window.terratiler.lastField; return f && f.name === arguments[0] ? f : null;",
        name,
    )
    geometry = js(browser, "return window.terratiler.state.field.geometry")
    expected = field_means(field_statistics(http, geometry, items))
    assert chart["dates"] == list(expected)
    for mean, want in zip(chart["mean"], expected.values(), strict=True):
        assert (mean is None) if want is None else mean == pytest.approx(want, rel=1e-9)
    return geometry


def test_a_drawn_polygon_and_a_dropped_geojson(site, browser, http, items, demo_dir):
    lon, lat = shapely.geometry.shape(items[0]["geometry"]).centroid.coords[0]
    open_viewer(browser, f"{site}/#map=16/{lat}/{lon}&layer=ndvi&mask=1")
    # Draw a polygon with Leaflet-Geoman: its button, four corners, the first again.
    browser.find_element(By.CSS_SELECTOR, ".leaflet-pm-icon-polygon").click()
    d = 0.002
    corners = [(lon - d, lat - d), (lon + d, lat - d), (lon + d, lat + d), (lon - d, lat + d)]
    for corner in [*corners, corners[0]]:
        click_map_at(browser, *corner)
    geometry = assert_field_chart(browser, http, items, "drawn polygon")
    drawn = shapely.geometry.shape(geometry)
    assert drawn.area == pytest.approx(shapely.geometry.Polygon(corners).area, rel=0.05)
    # Drawing is not a point click: no point chart.
    assert js(browser, "return window.terratiler.lastPoint") is None
    screenshot(browser, "5-drawn-polygon")
    # Its permalink draws it again, with its chart.
    permalink = browser.find_element(By.ID, "permalink").get_attribute("href")
    assert "polygon=" in permalink
    open_viewer(browser, permalink)
    restored = assert_field_chart(browser, http, items, "drawn polygon")
    assert shapely.geometry.shape(restored).equals_exact(drawn, tolerance=1e-6)

    # Drop a GeoJSON file on the map: its first polygon is picked.
    feature = json.loads((demo_dir / "fields.geojson").read_text())["features"][5]
    dropped = {"type": "FeatureCollection", "features": [feature]}
    js(
        browser,
        "const data = new DataTransfer();"
        "data.items.add(new File([arguments[0]], 'mine.geojson', {type: 'application/geo+json'}));"
        "document.getElementById('map').dispatchEvent("
        "  new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true}));",
        json.dumps(dropped),
    )
    assert_field_chart(browser, http, items, feature["properties"]["identifier"])
    screenshot(browser, "6-dropped-geojson")
