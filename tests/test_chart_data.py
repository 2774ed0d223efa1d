"""Data for charts (issue 18): the README's per-date request is what the service answers.

The viewer's field chart sends the README's "Data for charts" body (`POST /statistics`,
P1D, percentiles and a histogram); this test sends that very body to the demo catalog the
example was taken from (seed 1, 6 scenes, 256 px: the session's) and checks the answer the
README shows, then the per-date shape the chart relies on against the demo's items.
"""

import json
import re
from pathlib import Path

import demo_reads as demo
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


@pytest.fixture(scope="module")
def example() -> tuple[dict, str]:
    """The README's request body and its answer block."""
    section = _section("Data for charts")
    body = re.search(r"-d '(\{.*?\})'\n```", section, re.S)
    answer = re.search(r"```json\n(.*?)```", section, re.S)
    assert body and answer
    return json.loads(body.group(1)), answer.group(1)


def test_readme_chart_request(client, demo_dir, example):
    body, answer = example
    geojson = json.loads((demo_dir / "fields.geojson").read_text())
    # The README's polygon is the demo's first field.
    assert body["input"]["bounds"]["geometry"] == geojson["features"][0]["geometry"]
    r = client.post("/statistics", json=body)
    assert r.status_code == 200, r.text
    response = r.json()
    assert response["status"] == "OK"
    data = response["data"]

    # One entry per scene date covering the field, oldest first, each one day long.
    days = [entry["interval"]["from"][:10] for entry in data]
    scene_days = sorted(item["properties"]["datetime"][:10] for item in demo.items(demo_dir))
    assert days == sorted(days) and set(days) <= set(scene_days) and len(days) >= 4
    for entry in data:
        band = entry["outputs"]["ndvi"]["bands"]["B0"]
        stats, histogram = band["stats"], band["histogram"]
        assert set(stats) >= {"min", "max", "mean", "stDev", "sampleCount", "noDataCount"}
        assert list(stats["percentiles"]) == ["10.0", "50.0", "90.0"]
        assert len(histogram["bins"]) == 10
        counts = sum(b["count"] for b in histogram["bins"])
        valid = stats["sampleCount"] - stats["noDataCount"]
        assert counts + histogram["overflowCount"] + histogram["underflowCount"] == valid
        if valid == 0:
            assert stats["mean"] == stats["stDev"] == "NaN"
        else:
            p10, p50, p90 = stats["percentiles"].values()
            assert stats["min"] <= p10 <= p50 <= p90 <= stats["max"]

    # The first entry is the one the README shows (rounded to 4 decimals there).
    first = data[0]
    shown = json.loads(re.search(r'"interval": (\{.*?\})', answer).group(1))
    assert first["interval"] == shown
    got = first["outputs"]["ndvi"]["bands"]["B0"]["stats"]
    for key in ("min", "max", "mean", "stDev"):
        value = float(re.search(rf'"{key}": ([-0-9.]+)', answer).group(1))
        assert got[key] == pytest.approx(value, abs=1e-4), key
    for k, value in re.findall(r'"(\d+\.0)": ([-0-9.]+)', answer):
        assert got["percentiles"][k] == pytest.approx(float(value), abs=1e-4), k
    assert got["sampleCount"] == int(re.search(r'"sampleCount": (\d+)', answer).group(1))
