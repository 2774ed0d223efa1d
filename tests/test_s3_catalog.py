"""A catalog folder on s3:// (``TERRATILER_CATALOG=s3://bucket/prefix``), on moto's server.

The demo is uploaded as it is on disk; the service built on the bucket lists the same items,
with asset hrefs made absolute ``s3://`` URLs (the default allow-list admits them), and reads
pixels through GDAL's ``/vsis3/`` at ``s3_endpoint_url``: the values equal rasterio's read
of the local COG.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import rasterio
from fastapi.testclient import TestClient
from pyproj import Transformer

from app.gdal_env import gdal_options
from app.main import create_app
from app.settings import Settings

BUCKET = "catalogs"


@pytest.fixture(scope="module")
def endpoint(aws_env: None, demo_dir: Path) -> Iterator[str]:
    """moto's S3 server on loopback with the demo under s3://catalogs/demo."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        s3 = boto3.client("s3", endpoint_url=url)
        s3.create_bucket(Bucket=BUCKET)
        for path in demo_dir.rglob("*"):
            if path.is_file():
                s3.upload_file(str(path), BUCKET, f"demo/{path.relative_to(demo_dir)}")
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3_client(endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        catalog=f"s3://{BUCKET}/demo/",
        s3_endpoint_url=endpoint,
        aws_no_sign_request=False,  # moto wants signed requests
        data_dir=tmp_path_factory.mktemp("s3-catalog-data"),
    )
    saved = dict(os.environ)
    try:
        with TestClient(create_app(settings)) as client:
            yield client
    finally:
        # create_app put the endpoint into GDAL's environment: not for the next modules.
        os.environ.clear()
        os.environ.update(saved)


def test_settings_of_an_s3_catalog():
    settings = Settings(catalog="s3://bucket/demo", s3_endpoint_url="http://10.0.0.5:9000")
    assert settings.catalog_is_s3 and not settings.catalog_is_remote
    assert settings.allowed_prefixes[0] == "s3://bucket/demo/"
    options = gdal_options(settings)
    assert options["AWS_S3_ENDPOINT"] == "10.0.0.5:9000"
    assert options["AWS_HTTPS"] == "NO" and options["AWS_VIRTUAL_HOSTING"] == "FALSE"
    assert "AWS_S3_ENDPOINT" not in gdal_options(Settings())


def test_items_from_the_bucket(s3_client, client):
    local = client.get("/catalog/search", params={"limit": 100}).json()["features"]
    remote = s3_client.get("/catalog/search", params={"limit": 100}).json()["features"]
    assert sorted(i["id"] for i in remote) == sorted(i["id"] for i in local)
    item = remote[0]
    assert item["assets"]["red"]["href"] == (f"s3://{BUCKET}/demo/cogs/{item['id']}/B04.tif")


def test_pixels_from_the_bucket_equal_the_local_cogs(s3_client, demo_dir):
    items = s3_client.get("/catalog/search", params={"limit": 100}).json()["features"]
    item = items[0]
    local = demo_dir / "cogs" / item["id"] / "B04.tif"
    with rasterio.open(local) as src:
        row, col = src.height // 3, src.width // 2
        x, y = src.xy(row, col)
        expected = src.read(1)[row, col]
        lon, lat = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True).transform(x, y)
    response = s3_client.get(
        f"/collections/sentinel-2-l2a/items/{item['id']}/point/{lon},{lat}",
        params={"assets": "red"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["values"] == [float(expected)]
