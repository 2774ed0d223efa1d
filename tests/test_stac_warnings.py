"""rio-tiler's "Some statistics data in STAC are invalid" warning stays quiet (issue 15)."""

import json
import warnings

import demo_reads as demo
import pystac
from rio_tiler.io import STACReader

from app.readers.stac import ignore_absent_statistics_warning

ITEMS = "/collections/sentinel-2-l2a/items"
MESSAGE = "Some statistics data in STAC are invalid"


def test_demo_item_tile_emits_no_statistics_warning(client, demo_dir):
    item = demo.items(demo_dir)[0]
    # The demo items are Earth-Search-shaped: raster:bands without statistics, which is
    # what makes rio-tiler warn (checked here with every filter open, so this is no no-op).
    with warnings.catch_warnings(record=True) as raw:
        warnings.simplefilter("always")
        reader = STACReader(None, item=pystac.Item.from_dict(json.loads(json.dumps(item))))
        reader._get_asset_info("red")
    assert any(MESSAGE in str(w.message) for w in raw)

    lon = (item["bbox"][0] + item["bbox"][2]) / 2
    lat = (item["bbox"][1] + item["bbox"][3]) / 2
    with warnings.catch_warnings(record=True) as caught:
        # As the service has it from the import on (pytest drops filters that a module adds
        # while a test collects or runs, so it is set again here).
        ignore_absent_statistics_warning()
        for _ in range(2):
            response = client.get(
                f"{ITEMS}/{item['id']}/point/{lon},{lat}", params={"assets": "B04"}
            )
            assert response.status_code == 200, response.text
            tile = client.get(
                f"{ITEMS}/{item['id']}/tiles/WebMercatorQuad/12/"
                + "/".join(map(str, _tile(lon, lat, 12))),
                params={"preset": "true-color"},
            )
            assert tile.status_code == 200, tile.text
    assert not [w for w in caught if MESSAGE in str(w.message)]


def _tile(lon: float, lat: float, z: int) -> tuple[int, int]:
    import morecantile

    tile = morecantile.tms.get("WebMercatorQuad").tile(lon, lat, z)
    return tile.x, tile.y
