"""Batch processing outputs: the Zarr store, the STAC results collection, createCollection.

Zarr groups are opened as their users open them (xarray + rioxarray); collections are
read by pystac and by the service's own LocalCatalog; a registered result collection is
served by a real app (items, search, crops of its COGs); s3:// against moto's server.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import xarray as xr
from affine import Affine
from fastapi.testclient import TestClient

from app.batch.processing.results import COG_MEDIA_TYPE, TileRecord, write_collection
from app.batch.processing.spec import GridTile, OutputRaster, OutputSpec
from app.batch.processing.zarr_store import create_zarr, write_zarr_tile, zarr_layout
from app.batch.storage import Storage
from app.catalog.base import SearchQuery
from app.catalog.layered import (
    LayeredCatalog,
    check_collection_id,
    check_readable_output,
    register_collection,
    unregister_collection,
)
from app.catalog.local import LocalCatalog
from app.db import engine_from_url
from app.errors import BadRequestError, NotFoundError
from app.main import create_app
from app.settings import Settings

pytest.importorskip("rioxarray")

SIZE = (6, 8)  # tile height, width (pixels)
RES = 10.0
DATES = ["2023-06-01", "2023-06-11", "2023-06-21"]
NDVI = OutputSpec("nd", "(nir-red)/(nir+red)", data_type="float32", nodata=-9999.0)
STACK = OutputSpec("red", "red", data_type="uint16", nodata=0, composite="stack")
BYTE = OutputSpec("cls", "scl", data_type="uint8", nodata=255)


def utm_tile(column: int, row: int, crs: str = "EPSG:32633", x0: float = 500_000.0) -> GridTile:
    """A hand-made grid tile: SIZE pixels of 10 m, ``column``/``row`` tiles from (x0, 5e6)."""
    height, width = SIZE
    transform = Affine(RES, 0, x0 + column * width * RES, 0, -RES, 5_000_000 - row * height * RES)
    return GridTile("1", f"{crs[5:]}_{column}_{row}", crs, transform, width, height, RES)


def rasters_for(tile: GridTile, seed: int) -> dict[str, OutputRaster]:
    """Distinct values per tile (and nodata pixels) for every output."""
    rng = np.random.default_rng(seed)
    height, width = tile.height, tile.width
    nd = rng.uniform(-1, 1, (1, height, width)).astype(np.float32)
    nd[0, 0, :3] = -9999.0
    red = rng.integers(1, 10_000, (len(DATES), height, width)).astype(np.uint16)
    red[1, 2, 2] = 0
    cls = rng.integers(0, 12, (1, height, width)).astype(np.uint8)
    return {
        "nd": OutputRaster(nd, -9999.0, ["nd"]),
        "red": OutputRaster(red, 0, list(DATES)),
        "cls": OutputRaster(cls, 255, ["cls"]),
    }


# ---------------------------------------------------------------------------- Zarr


def test_zarr_tiles_open_with_xarray_and_rioxarray(tmp_path):
    tiles = [utm_tile(c, r) for r in range(2) for c in range(3)]
    layout = zarr_layout(tiles, (NDVI, STACK, BYTE), DATES)
    url = str(tmp_path / "job.zarr")
    create_zarr(url, None, layout)
    written = {tile.name: rasters_for(tile, seed) for seed, tile in enumerate(tiles[:-1])}
    for tile in tiles[:-1]:  # the last tile is never written: fill values
        write_zarr_tile(url, None, layout, tile, written[tile.name])
    create_zarr(url, None, layout)  # idempotent: the tiles stay

    ds = xr.open_zarr(url, mask_and_scale=False)
    assert dict(ds.sizes) == {"band": 1, "time": 3, "y": 12, "x": 24}
    assert ds.rio.crs.to_epsg() == 32633
    assert ds.rio.transform() == Affine(10, 0, 500_000, 0, -10, 5_000_000)
    np.testing.assert_array_equal(ds.x[:2], [500_005, 500_015])
    np.testing.assert_array_equal(ds.y[:2], [4_999_995, 4_999_985])
    assert [str(t)[:10] for t in ds.time.values.astype("datetime64[D]")] == DATES
    assert ds.nd.dtype == np.float32 and ds.red.dtype == np.uint16 and ds.cls.dtype == np.uint8
    for name, fill in (("nd", -9999.0), ("red", 0), ("cls", 255)):
        assert ds[name].encoding["chunks"] == (1, 6, 8)
        assert ds[name].encoding["fill_value"] == fill
        assert ds[name].attrs["_FillValue"] == fill
    for tile in tiles:
        row, column = (5_000_000 - tile.transform.f) / 10, (tile.transform.c - 500_000) / 10
        window = {"y": slice(int(row), int(row) + 6), "x": slice(int(column), int(column) + 8)}
        for name in ("nd", "red", "cls"):
            got = ds[name].isel(window).values
            if tile.name in written:
                np.testing.assert_array_equal(got, written[tile.name][name].data)
            else:
                assert (got == ds[name].encoding["fill_value"]).all()
    # Decoded as users read it: nodata becomes NaN, rioxarray sees the nodata.
    decoded = xr.open_zarr(url)
    assert np.isnan(decoded.nd.values[0, 0, :3]).all()
    assert decoded.nd.rio.encoded_nodata == -9999.0
    first = tiles[0]
    np.testing.assert_array_equal(
        decoded.nd.values[0, 1:6, :8], written[first.name]["nd"].data[0, 1:]
    )


def test_zarr_refusals(tmp_path):
    tiles = [utm_tile(0, 0), utm_tile(1, 0)]
    layout = zarr_layout(tiles, (NDVI,), None)
    url = str(tmp_path / "job.zarr")
    create_zarr(url, None, layout)
    with pytest.raises(FileExistsError):
        create_zarr(url, None, zarr_layout([utm_tile(0, 0)], (NDVI,), None))
    create_zarr(url, None, zarr_layout([utm_tile(0, 0)], (NDVI,), None), overwrite=True)
    with pytest.raises(ValueError, match="outside"):
        write_zarr_tile(url, None, layout, utm_tile(5, 0), rasters_for(utm_tile(5, 0), 1))
    layout = zarr_layout(tiles, (NDVI,), None)
    create_zarr(url, None, layout, overwrite=True)
    bad = {"nd": OutputRaster(np.zeros((1, 3, 3), np.float32), -9999.0)}
    with pytest.raises(ValueError, match="shape"):
        write_zarr_tile(url, None, layout, tiles[0], bad)
    with pytest.raises(ValueError, match="no raster"):
        write_zarr_tile(url, None, layout, tiles[0], {})
    off_lattice = GridTile("1", "off", "EPSG:32633", Affine(10, 0, 500_010, 0, -10, 5e6), 8, 6, 10)
    with pytest.raises(ValueError, match="lattice"):
        zarr_layout([tiles[0], off_lattice], (NDVI,), None)
    with pytest.raises(ValueError, match="dates"):
        zarr_layout(tiles, (STACK,), None)


def test_zarr_two_crs_two_subgroups(tmp_path):
    west = [utm_tile(0, 0, "EPSG:32633", 800_000.0), utm_tile(1, 0, "EPSG:32633", 800_000.0)]
    east = [utm_tile(0, 0, "EPSG:32634", 200_000.0)]
    layout = zarr_layout(west + east, (NDVI,), None)
    assert [grid.group for grid in layout.grids] == ["EPSG_32633", "EPSG_32634"]
    url = str(tmp_path / "job.zarr")
    create_zarr(url, None, layout)
    for seed, tile in enumerate(west + east):
        write_zarr_tile(url, None, layout, tile, rasters_for(tile, seed))
    a = xr.open_zarr(url, group="EPSG_32633", mask_and_scale=False)
    b = xr.open_zarr(url, group="EPSG_32634", mask_and_scale=False)
    assert a.rio.crs.to_epsg() == 32633 and b.rio.crs.to_epsg() == 32634
    assert dict(a.sizes) == {"band": 1, "y": 6, "x": 16} and dict(b.sizes) == {
        "band": 1,
        "y": 6,
        "x": 8,
    }
    assert b.rio.transform() == Affine(10, 0, 200_000, 0, -10, 5_000_000)
    np.testing.assert_array_equal(b.nd.values, rasters_for(east[0], 2)["nd"].data)
    np.testing.assert_array_equal(a.nd.values[:, :, 8:], rasters_for(west[1], 1)["nd"].data)


# ---------------------------------------------------------------------------- STAC


def write_cogs(root: Path, tiles: list[GridTile]) -> dict[str, dict[str, str]]:
    """A real COG per tile and output ("val": float32 with nodata), like the engine's."""
    hrefs: dict[str, dict[str, str]] = {}
    for seed, tile in enumerate(tiles):
        path = root / tile.name / "val.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = tile_values(tile, seed)
        profile = {
            "driver": "COG",
            "width": tile.width,
            "height": tile.height,
            "count": 1,
            "dtype": "float32",
            "crs": tile.crs,
            "transform": tile.transform,
            "nodata": -9999.0,
        }
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data, 1)
        hrefs[tile.name] = {"val": str(path)}
    return hrefs


def tile_values(tile: GridTile, seed: int) -> np.ndarray:
    values = np.arange(tile.width * tile.height, dtype=np.float32).reshape(tile.height, tile.width)
    values = values + 1000 * seed
    values[0, 0] = -9999.0
    return values


VAL = OutputSpec("val", "b1", data_type="float32", nodata=-9999.0)


def big_tile(column: int, crs: str = "EPSG:32633") -> GridTile:
    """A 64 px tile at 10 m near 15.6 E 46.9 N (zone 33)."""
    transform = Affine(10, 0, 550_000 + column * 640, 0, -10, 5_200_000)
    return GridTile("1", f"T33_{column}", crs, transform, 64, 64, 10.0)


def test_collection_read_by_pystac_and_local_catalog(tmp_path):
    root = tmp_path / "job"
    tiles = [big_tile(0), big_tile(1)]
    hrefs = write_cogs(root, tiles)
    records = [TileRecord(tile, hrefs[tile.name]) for tile in tiles]
    records.append(TileRecord(big_tile(2), {}, status="failed", error="read failed"))
    url = write_collection(
        Storage.for_url(str(root)),
        str(root),
        "results-1",
        "NDVI summer",
        (VAL,),
        records,
        ("2023-06-01T00:00:00Z", "2023-08-31T23:59:59Z"),
    )
    assert url == str(root / "collection.json")
    assert sorted(p.name for p in (root / "items").iterdir()) == ["T33_0.json", "T33_1.json"]
    document = json.loads((root / "items" / "T33_0.json").read_text())
    asset = document["assets"]["val"]
    assert asset["href"] == "../T33_0/val.tif"  # relative: the folder is relocatable
    assert asset["type"] == COG_MEDIA_TYPE and asset["roles"] == ["data"]
    assert asset["proj:code"] == "EPSG:32633" and asset["proj:epsg"] == 32633
    assert asset["proj:shape"] == [64, 64]
    assert asset["proj:transform"] == [10, 0, 550_000, 0, -10, 5_200_000]
    assert asset["raster:bands"] == [
        {"data_type": "float32", "nodata": -9999, "scale": 1.0, "offset": 0.0}
    ]
    properties = document["properties"]
    assert properties["start_datetime"] == "2023-06-01T00:00:00Z"
    assert properties["end_datetime"] == "2023-08-31T23:59:59Z"
    # The footprint: the tile's corners reprojected (independently, with rasterio).
    from rasterio.warp import transform_bounds

    expected = transform_bounds("EPSG:32633", "EPSG:4326", *tiles[0].bounds, densify_pts=21)
    np.testing.assert_allclose(document["bbox"], expected, atol=1e-7)

    # pystac: both documents parse, the core schemas validate offline.
    collection = pystac.Collection.from_file(url)
    assert collection.id == "results-1" and collection.title == "NDVI summer"
    assert "val" in collection.item_assets
    bbox = collection.extent.spatial.bboxes[0]
    assert bbox[0] == pytest.approx(expected[0], abs=1e-7)
    assert bbox[2] > expected[2]  # the union of both tiles
    item = pystac.Item.from_file(str(root / "items" / "T33_1.json"))
    assert item.assets["val"].get_absolute_href() == hrefs["T33_1"]["val"]
    from pystac.validation import validate_dict

    for doc in (json.loads(Path(url).read_text()), document):
        without = {**doc, "stac_extensions": []}  # extension schemas are on the network
        validate_dict(without)

    # Moved elsewhere, LocalCatalog resolves the relative hrefs in the new place.
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    catalog = LocalCatalog(moved)
    assert [c.id for c in catalog.collections()] == ["results-1"]
    read = catalog.get_item("results-1", "T33_0")
    assert read.assets["val"].href == str(moved / "T33_0" / "val.tif")
    with rasterio.open(read.assets["val"].href) as src:
        np.testing.assert_array_equal(src.read(1), tile_values(tiles[0], 0))


# ---------------------------------------------------------------------------- createCollection


@pytest.fixture(scope="module")
def results_app(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """An app over the demo catalog and a database, a result collection in its data folder."""
    data = tmp_path_factory.mktemp("data")
    settings = Settings(catalog=str(demo_dir), data_dir=data, result_collections_refresh_seconds=0)
    root = data / "batch" / "job-1"
    tiles = [big_tile(0), big_tile(1)]
    hrefs = write_cogs(root, tiles)
    write_collection(
        Storage.for_url(str(root)),
        str(root),
        "results-1",
        "Results",
        (VAL,),
        [TileRecord(tile, hrefs[tile.name]) for tile in tiles],
        ("2023-06-01T00:00:00Z", "2023-08-31T23:59:59Z"),
    )
    with TestClient(create_app(settings)) as client:
        yield client, settings, root, tiles


def test_registered_collection_is_served_by_the_app(results_app):
    client, settings, root, tiles = results_app
    engine = client.app.state.services.db_engine
    assert client.get("/catalog/collections/results-1").status_code == 404
    check_readable_output(str(root), settings)
    check_collection_id(client.app.state.services.catalog, "results-1", engine, str(root))
    register_collection(engine, "results-1", str(root))
    try:
        collection = client.get("/catalog/collections/results-1")
        assert collection.status_code == 200, collection.text
        assert collection.json()["title"] == "Results"
        ids = [c["id"] for c in client.get("/catalog/collections").json()["collections"]]
        assert ids == ["sentinel-2-l2a", "results-1"]
        item = client.get("/catalog/collections/results-1/items/T33_1")
        assert item.status_code == 200, item.text
        assert item.json()["assets"]["val"]["proj:code"] == "EPSG:32633"
        listed = client.get("/catalog/collections/results-1/items").json()
        assert sorted(f["id"] for f in listed["features"]) == ["T33_0", "T33_1"]
        found = client.get("/catalog/search", params={"collections": "results-1"}).json()
        assert sorted(f["id"] for f in found["features"]) == ["T33_0", "T33_1"]
        # The tiler reads the result COG: a native crop gives the written values.
        tile = tiles[1]
        minx, miny, maxx, maxy = tile.bounds
        crop = client.get(
            f"/collections/results-1/items/T33_1/bbox/{minx},{miny},{maxx},{maxy}.npy",
            params={"assets": "val", "coord_crs": "epsg:32633", "dst_crs": "epsg:32633"},
        )
        assert crop.status_code == 200, crop.text
        import io

        data = np.load(io.BytesIO(crop.content))
        expected = tile_values(tile, 1)
        assert data.shape == (2, 64, 64)
        valid = data[-1] > 0
        np.testing.assert_array_equal(valid, expected != -9999.0)
        np.testing.assert_array_equal(data[0][valid], expected[valid])
        # A web map tile of it renders.
        import morecantile

        lon, lat = json.loads(item.text)["bbox"][:2]
        web = morecantile.tms.get("WebMercatorQuad").tile(lon + 0.003, lat + 0.003, 14)
        png = client.get(
            f"/collections/results-1/items/T33_1/tiles/WebMercatorQuad/14/{web.x}/{web.y}.png",
            params={"assets": "val", "rescale": "0,6000"},
        )
        assert png.status_code == 200, png.text
        assert png.headers["content-type"] == "image/png"
        # Unknown items and collections stay 404s; the base catalog is untouched.
        assert client.get("/catalog/collections/results-1/items/nope").status_code == 404
        assert client.get("/catalog/collections/nope/items/T33_1").status_code == 404
        base = client.get("/catalog/search", params={"collections": "sentinel-2-l2a", "limit": 1})
        assert base.json()["features"][0]["collection"] == "sentinel-2-l2a"
    finally:
        unregister_collection(engine, "results-1")
    assert client.get("/catalog/collections/results-1").status_code == 404


def test_create_collection_refusals(results_app, tmp_path):
    client, settings, root, _ = results_app
    catalog = client.app.state.services.catalog
    engine = client.app.state.services.db_engine
    with pytest.raises(BadRequestError, match="createCollection: 'sentinel-2-l2a'"):
        check_collection_id(catalog, "sentinel-2-l2a")
    for bad in ("", "a/b", "../x", "x" * 200):
        with pytest.raises(BadRequestError, match="createCollection"):
            check_collection_id(catalog, bad)
    register_collection(engine, "results-2", str(root))
    try:
        with pytest.raises(BadRequestError, match="already holds"):
            check_collection_id(catalog, "results-2", engine, str(tmp_path))
        check_collection_id(catalog, "results-2", engine, str(root))
    finally:
        unregister_collection(engine, "results-2")
    with pytest.raises(BadRequestError, match="createCollection.*allowed_sources"):
        check_readable_output(str(tmp_path / "elsewhere"), settings)
    with pytest.raises(BadRequestError, match="createCollection"):
        check_readable_output("s3://other-bucket/out", settings)


def test_layered_search_spans_layers(demo_dir, tmp_path):
    root = tmp_path / "job"
    tiles = [big_tile(i) for i in range(3)]
    hrefs = write_cogs(root, tiles)
    write_collection(
        Storage.for_url(str(root)),
        str(root),
        "res",
        None,
        (VAL,),
        [TileRecord(tile, hrefs[tile.name]) for tile in tiles],
        ("2023-06-01", "2023-06-30"),
    )
    engine = engine_from_url(f"sqlite:///{tmp_path / 'db.sqlite'}")
    base = LocalCatalog(demo_dir)
    catalog = LayeredCatalog(base, engine, refresh_seconds=3600)
    everything = len(list(base.search(SearchQuery())))
    assert [c.id for c in catalog.collections()] == ["sentinel-2-l2a"]
    register_collection(engine, "res", str(root / "collection.json"))
    # Read again after refresh_seconds only (or when told to).
    assert [c.id for c in catalog.collections()] == ["sentinel-2-l2a"]
    catalog.refresh()
    assert [c.id for c in catalog.collections()] == ["sentinel-2-l2a", "res"]
    assert len(list(catalog.search(SearchQuery()))) == everything + 3
    assert len(list(catalog.search(SearchQuery(), max_items=everything + 1))) == everything + 1
    only = list(catalog.search(SearchQuery(collections=["res"])))
    assert sorted(item.id for item in only) == ["T33_0", "T33_1", "T33_2"]
    mixed = list(catalog.search(SearchQuery(collections=["res", "sentinel-2-l2a"])))
    assert len(mixed) == everything + 3
    # Paging across the layers: every item once, the count of both.
    seen, token = [], None
    while True:
        page = catalog.search_page(SearchQuery(limit=4, token=token))
        assert page.number_matched == everything + 3
        seen += [(item.collection_id, item.id) for item in page.items]
        token = page.next_token
        if token is None:
            break
    assert len(seen) == len(set(seen)) == everything + 3
    with pytest.raises(NotFoundError):
        catalog.get_item("res", "nope")
    unregister_collection(engine, "res")
    catalog.refresh()
    with pytest.raises(NotFoundError):
        catalog.get_collection("res")
    engine.dispose()


# ---------------------------------------------------------------------------- s3


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[str]:
    """moto's S3 server on loopback (credentials in the environment), its endpoint URL."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.delenv("AWS_PROFILE", raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()


def test_zarr_and_collection_on_s3(moto_s3, tmp_path):
    import s3fs

    options = {"client_kwargs": {"endpoint_url": moto_s3}}
    fs = s3fs.S3FileSystem(**options, use_listings_cache=False)
    fs.mkdir("results")
    tiles = [utm_tile(0, 0), utm_tile(1, 0)]
    layout = zarr_layout(tiles, (NDVI, STACK), DATES)
    url = "s3://results/job-1/out.zarr"
    create_zarr(url, options, layout)
    for seed, tile in enumerate(tiles):
        write_zarr_tile(url, options, layout, tile, rasters_for(tile, seed))
    create_zarr(url, options, layout)
    ds = xr.open_zarr(url, storage_options=options, mask_and_scale=False)
    assert ds.rio.crs.to_epsg() == 32633
    np.testing.assert_array_equal(ds.red.values[:, :, 8:], rasters_for(tiles[1], 1)["red"].data)
    np.testing.assert_array_equal(ds.nd.values[:, :, :8], rasters_for(tiles[0], 0)["nd"].data)

    # The collection on s3: relative hrefs; the layered catalog reads it back with
    # absolute s3:// asset hrefs.
    root = "s3://results/job-1"
    hrefs = {tile.name: {"nd": f"{root}/{tile.name}/nd.tif"} for tile in tiles}
    storage = Storage.for_url(root, options)
    write_collection(
        storage,
        root,
        "s3-results",
        "On S3",
        (NDVI,),
        [TileRecord(tile, hrefs[tile.name]) for tile in tiles],
        ("2023-06-01", "2023-06-30"),
    )
    names = fs.ls("results/job-1/items", detail=False)
    assert sorted(n.rsplit("/", 1)[1] for n in names) == ["32633_0_0.json", "32633_1_0.json"]
    item = json.loads(fs.cat("results/job-1/items/32633_0_0.json"))
    assert item["assets"]["nd"]["href"] == "../32633_0_0/nd.tif"
    engine = engine_from_url(f"sqlite:///{tmp_path / 'db.sqlite'}")
    catalog = LayeredCatalog(LocalCatalog(tmp_path), engine, storage_options=options)
    register_collection(engine, "s3-results", root)
    catalog.refresh()
    read = catalog.get_item("s3-results", "32633_1_0")
    assert read.assets["nd"].href == f"{root}/32633_1_0/nd.tif"
    assert catalog.get_collection("s3-results").title == "On S3"
    engine.dispose()


def test_workers_catalog_factory_sees_result_collections(demo_dir, tmp_path):
    """What a Dask worker builds from the pickled factory reads the same registry."""
    import pickle

    from app.db import engine_from_settings
    from app.services import catalog_factory

    settings = Settings(
        catalog=str(demo_dir), data_dir=tmp_path / "data", result_collections_refresh_seconds=0
    )
    root = tmp_path / "data" / "batch" / "job"
    tiles = [big_tile(0)]
    hrefs = write_cogs(root, tiles)
    write_collection(
        Storage.for_url(str(root)),
        str(root),
        "worker-results",
        None,
        (VAL,),
        [TileRecord(tiles[0], hrefs[tiles[0].name])],
        ("2023-06-01", "2023-06-30"),
    )
    engine = engine_from_settings(settings)
    register_collection(engine, "worker-results", str(root))
    catalog = pickle.loads(pickle.dumps(catalog_factory(settings)))()
    assert isinstance(catalog, LayeredCatalog)
    found = list(catalog.search(SearchQuery(collections=["worker-results"])))
    assert [item.id for item in found] == ["T33_0"]
    assert catalog.get_item("sentinel-2-l2a", next(catalog.base.search(SearchQuery())).id)
    catalog.engine.dispose()
    engine.dispose()
