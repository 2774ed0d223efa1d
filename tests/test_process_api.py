"""Batch processing over HTTP and from the command line, on real parts.

The REST API under ``/batch/process`` through TestClient (a real Dask LocalCluster of worker
processes, real COGs of a small demo catalog), the ``terratiler batch process`` command's
request building (a pure function of its arguments), the command run here (its own
LocalCluster) and against the service under a real uvicorn, and ``batch monitor``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.cli import build_parser
from app.cli_batch import build_process_request

pytestmark = pytest.mark.timeout(300)

TIME = "2023-06-01/2023-08-31"


def _process_args(*extra: str, aoi: str = "16.08,46.62,16.14,46.66") -> Any:
    return build_parser().parse_args(
        ["batch", "process", aoi, "--grid", "1", "--resolution", "10", "--time", TIME, *extra]
    )


# ------------------------------------------------------------------- CLI: the request


def test_cli_request_from_the_issue_example(tmp_path: Path) -> None:
    args = _process_args("--output", "ndvi=ndvi", "--composite", "median", "--out", "out")
    assert build_process_request(args) == {
        "processRequest": {
            "input": {
                "bounds": {"bbox": [16.08, 46.62, 16.14, 46.66]},
                "data": [
                    {
                        "type": "sentinel-2-l2a",
                        "dataFilter": {"timeRange": {"from": "2023-06-01", "to": "2023-08-31"}},
                    }
                ],
            },
            "outputs": {"ndvi": {"preset": "ndvi"}},
            "composite": "median",
        },
        "input": {"type": "tiling-grid", "id": 1, "resolution": 10},
        "output": {"type": "raster", "delivery": {"path": str(Path("out").resolve())}},
    }


def test_cli_request_every_option(tmp_path: Path) -> None:
    aoi = tmp_path / "aoi.geojson"
    squares = [
        [[[16.0, 46.6], [16.1, 46.6], [16.1, 46.7], [16.0, 46.7], [16.0, 46.6]]],
        [[[16.1, 46.6], [16.2, 46.6], [16.2, 46.7], [16.1, 46.7], [16.1, 46.6]]],
    ]
    aoi.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {"type": "Polygon", "coordinates": c},
                    }
                    for c in squares
                ],
            }
        )
    )
    args = build_parser().parse_args(
        [
            "batch",
            "process",
            str(aoi),
            "--grid",
            "3",
            "--resolution",
            "0.0001",
            "--time",
            "2023-06-01T00:00:00Z/2023-08-31T23:59:59Z",
            "-o",
            "ndvi",
            "-o",
            "nir_red=nir/red",
            "-o",
            "(B08-B04)",
            "--mask",
            "scl-clear",
            "--max-cloud",
            "40",
            "--order",
            "leastCC",
            "--data-type",
            "float32",
            "--format",
            "zarr",
            "--create-collection",
            "--out",
            "s3://bucket/prefix",
            "--description",
            "summer",
        ]
    )
    body = build_process_request(args)
    process = body["processRequest"]
    bounds = process["input"]["bounds"]
    # The two squares are merged into one rectangle.
    import shapely.geometry

    merged = shapely.geometry.shape(bounds["geometry"])
    assert merged.area == pytest.approx(0.2 * 0.1) and merged.bounds == (16.0, 46.6, 16.2, 46.7)
    assert bounds["properties"] == {"crs": "urn:ogc:def:crs:OGC:1.3:CRS84"}
    assert process["input"]["data"][0]["dataFilter"] == {
        "timeRange": {"from": "2023-06-01T00:00:00Z", "to": "2023-08-31T23:59:59Z"},
        "maxCloudCoverage": 40.0,
        "mosaickingOrder": "leastCC",
    }
    assert process["outputs"] == {
        "ndvi": {"preset": "ndvi", "dataType": "float32"},
        "nir_red": {"expression": "nir/red", "dataType": "float32"},
        "value2": {"expression": "(B08-B04)", "dataType": "float32"},
    }
    assert process["mask"] == "scl-clear" and "composite" not in process
    assert body["input"] == {"type": "tiling-grid", "id": 3, "resolution": 0.0001}
    assert body["output"] == {"type": "zarr", "delivery": {"s3": {"url": "s3://bucket/prefix"}}}
    assert body["createCollection"] is True and body["description"] == "summer"


def test_cli_request_refuses_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--time"):
        build_process_request(build_parser().parse_args(
            ["batch", "process", "1,2,3,4", "--grid", "1", "--resolution", "10",
             "--time", "2023-06-01", "-o", "ndvi"]
        ))  # fmt: skip
    with pytest.raises(SystemExit, match="given twice"):
        build_process_request(_process_args("-o", "a=ndvi", "-o", "a=ndwi"))
    with pytest.raises(SystemExit, match="aoi: cannot read"):
        build_process_request(_process_args("-o", "ndvi", aoi=str(tmp_path / "missing.json")))
    empty = tmp_path / "empty.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(SystemExit, match="no geometry"):
        build_process_request(_process_args("-o", "ndvi", aoi=str(empty)))
    with pytest.raises(SystemExit):  # argparse: a composite it does not know
        _process_args("-o", "ndvi", "--composite", "mode")
