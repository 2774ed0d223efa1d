"""``/vectors``: the GeoJSON layers beside a local catalog, and ``/colorMaps`` for legends."""

import json
from io import BytesIO
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image
from rio_tiler.colormap import cmap

from app.routers.vectors import vector_files
from app.settings import Settings


def test_the_demo_fields_are_served_as_written(client: TestClient, demo_dir: Path):
    listing = client.get("/vectors")
    assert listing.status_code == 200
    layers = listing.json()["vectors"]
    assert [layer["name"] for layer in layers] == ["fields"]
    assert layers[0]["href"].endswith("/vectors/fields.geojson")
    r = client.get("/vectors/fields.geojson")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/geo+json"
    assert r.json() == json.loads((demo_dir / "fields.geojson").read_text())


def test_only_geojson_files_at_the_top_of_the_folder(tmp_path: Path):
    (tmp_path / "parcels.geojson").write_text("{}")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "has.dot.geojson").write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.geojson").write_text("{}")
    assert list(vector_files(Settings(catalog=str(tmp_path)))) == ["parcels"]
    assert vector_files(Settings(catalog="https://earth-search.aws.element84.com/v1")) == {}
    assert vector_files(Settings(catalog=str(tmp_path / "missing"))) == {}


def test_unknown_names_are_404s(client: TestClient):
    for path in ("/vectors/nope.geojson", "/vectors/..%2Ffields.geojson", "/vectors/fields.json"):
        r = client.get(path)
        assert r.status_code == 404, (path, r.text)
    assert "nope" in client.get("/vectors/nope.geojson").json()["detail"]


def test_colormaps_are_served_for_legends(client: TestClient):
    names = [c["id"] for c in client.get("/colorMaps").json()["colormaps"]]
    assert "rdylgn" in names and "viridis" in names
    r = client.get(
        "/colorMaps/rdylgn",
        params={"f": "png", "orientation": "horizontal", "width": 256, "height": 4},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    ramp = np.asarray(Image.open(BytesIO(r.content)).convert("RGBA"))[0]
    expected = cmap.get("rdylgn")
    assert [tuple(p) for p in ramp[[0, 128, 255]]] == [tuple(expected[i]) for i in (0, 128, 255)]
