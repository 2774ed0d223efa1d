"""The viewer at GET /, driven in a real browser (Debian's Chromium, headless)."""

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from live_server import live_server
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from app.main import create_app
from app.settings import Settings

LOADED_TILES = """
return Array.from(document.querySelectorAll('img.leaflet-tile-loaded'))
  .map(img => [img.src, img.naturalWidth, img.naturalHeight]);
"""


@pytest.fixture(scope="module")
def site(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(catalog=str(demo_dir), data_dir=tmp_path_factory.mktemp("viewer"))
    with live_server(create_app(settings)) as url:
        yield url


def loaded_tiles(driver: webdriver.Chrome, fragment: str) -> list[list]:
    return [tile for tile in driver.execute_script(LOADED_TILES) if fragment in tile[0]]


def wait_for_tiles(driver: webdriver.Chrome, fragment: str) -> list[list]:
    WebDriverWait(driver, 30).until(lambda d: loaded_tiles(d, fragment))
    return loaded_tiles(driver, fragment)


def test_the_viewer_lists_scenes_and_shows_their_tiles(site, browser, demo_dir):
    items = [json.loads(p.read_text()) for p in (demo_dir / "items").glob("*.json")]
    newest = max(items, key=lambda item: item["properties"]["datetime"])
    browser.get(f"{site}/")
    assert browser.title == "terratiler"

    # Every scene of the catalog, newest first.
    buttons = WebDriverWait(browser, 30).until(
        lambda d: (
            (found := d.find_elements(By.CSS_SELECTOR, "#items button"))
            and len(found) == len(items)
            and found
        )
    )
    assert buttons[0].get_attribute("title") == newest["id"]

    buttons[0].click()
    item_tiles = f"/collections/sentinel-2-l2a/items/{newest['id']}/tiles/WebMercatorQuad/"
    tiles = wait_for_tiles(browser, item_tiles)
    # The preset as the service expands it (TileJSON's tile URLs carry its parameters).
    assert all("assets=red" in src and "assets=blue" in src for src, _, _ in tiles)
    assert all((w, h) == (256, 256) for _, w, h in tiles), tiles

    # Another layer and the cloud mask: the map asks for new tiles.
    Select(browser.find_element(By.ID, "preset")).select_by_value("ndvi")
    browser.find_element(By.ID, "mask").click()
    tiles = WebDriverWait(browser, 30).until(
        lambda d: [
            t for t in loaded_tiles(d, item_tiles) if "expression=" in t[0] and "scl-clear" in t[0]
        ]
    )
    assert all((w, h) == (256, 256) for _, w, h in tiles)
    assert browser.find_element(By.ID, "status").text == ""

    # The tiles the browser loaded are the service's: same bytes by plain HTTP.
    src = tiles[0][0]
    r = httpx.get(src)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"

    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []


def test_the_viewer_shows_a_registered_search(site, browser, demo_dir):
    items = [json.loads(p.read_text()) for p in (demo_dir / "items").glob("*.json")]
    r = httpx.post(
        f"{site}/searches/register",
        json={"ids": [i["id"] for i in items], "metadata": {"name": "all dates"}},
    )
    assert r.status_code == 200, r.text
    search_id = r.json()["id"]

    browser.get(f"{site}/")
    button = WebDriverWait(browser, 30).until(
        lambda d: next(
            (b for b in d.find_elements(By.CSS_SELECTOR, "#searches button") if b.text),
            None,
        )
    )
    assert button.text == "all dates"
    assert button.get_attribute("title") == search_id
    button.click()
    tiles = wait_for_tiles(browser, f"/searches/{search_id}/tiles/WebMercatorQuad/")
    assert all((w, h) == (256, 256) for _, w, h in tiles)


def test_a_failing_layer_is_reported_on_the_page(site, browser):
    browser.get(f"{site}/")
    # Ready: the scene it opens with is shown (its answer cannot clear the message below).
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return document.body.dataset.ready")
    )
    # A scene whose TileJSON the service refuses (unknown item): the page says why.
    browser.execute_script("showLayer('collections/sentinel-2-l2a/items/no-such-item', true);")
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "status").text)
    assert browser.find_element(By.ID, "status").text.startswith("404")
