"""Animations (issue 18): ``GET /searches/{id}/bbox/.../{w}x{h}.gif|webp`` and
``POST /collections/{id}/animation.gif|webp``.

Every frame is checked against the bbox crop of its date rendered alone by the item crop
endpoint (``/collections/{c}/items/{id}/bbox/...png``; the demo has one scene per date):
the frames kept are the dates whose crop's clear fraction (its PNG alpha) reaches
``min_clear``, each frame's pixels are that crop's, the label changes only its box, and
Pillow decodes GIF and WebP to the asked size and frame durations.
"""

import io
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import demo_reads as demo
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageSequence

from app.animation import AnimationFormat, frame_duration, label_box
from app.main import create_app
from app.settings import Settings

BBOX = (16.085, 46.645, 16.10, 46.655)
PATH_BBOX = ",".join(map(str, BBOX))
WIDTH, HEIGHT = 96, 64
NDVI = {"preset": "ndvi", "mask": "scl-clear"}
MAX_FRAMES = 5
MAX_PIXELS = 200_000


@pytest.fixture(scope="module")
def settings(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The demo catalog (6 dates), at most 5 frames and 200 000 pixels per animation."""
    return Settings(
        catalog=str(demo_dir),
        data_dir=tmp_path_factory.mktemp("data"),
        animation_max_frames=MAX_FRAMES,
        animation_max_pixels=MAX_PIXELS,
    )


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def items(demo_dir: Path) -> list[dict]:
    """The demo's items, oldest first (one per date)."""
    found = sorted(demo.items(demo_dir), key=lambda item: item["properties"]["datetime"])
    days = [item["properties"]["datetime"][:10] for item in found]
    assert len(set(days)) == len(days) == 6
    return found


@pytest.fixture(scope="module")
def search_id(client: TestClient, items: list[dict]) -> str:
    r = client.post("/searches/register", json={"ids": [item["id"] for item in items]})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def _frames(content: bytes) -> list[Image.Image]:
    image = Image.open(io.BytesIO(content))
    frames = []
    for frame in ImageSequence.Iterator(image):
        frame.load()
        copy = frame.convert("RGBA")
        copy.info["duration"] = frame.info.get("duration")
        frames.append(copy)
    return frames


def _rgba(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGBA"))


def _same_pixels(got: np.ndarray, expected: np.ndarray) -> bool:
    """Equal alpha everywhere, equal colour where opaque (WebP drops hidden colours)."""
    alpha = expected[..., 3]
    return bool(
        np.array_equal(got[..., 3], alpha)
        and np.array_equal(got[..., :3][alpha > 0], expected[..., :3][alpha > 0])
    )


def _crop(client: TestClient, item: dict, params: dict) -> np.ndarray:
    """The bbox crop of one item, rendered alone by the item crop endpoint (RGBA)."""
    r = client.get(
        f"/collections/{item['collection']}/items/{item['id']}/bbox/{PATH_BBOX}/"
        f"{WIDTH}x{HEIGHT}.png",
        params=params,
    )
    assert r.status_code == 200, r.text
    return _rgba(Image.open(io.BytesIO(r.content)))


def _animation(client: TestClient, search_id: str, fmt: str, params: dict, size=(WIDTH, HEIGHT)):
    return client.get(
        f"/searches/{search_id}/bbox/{PATH_BBOX}/{size[0]}x{size[1]}.{fmt}", params=params
    )


@pytest.fixture(scope="module")
def crops(client: TestClient, items: list[dict]) -> dict[str, np.ndarray]:
    """Each date's NDVI crop (SCL-masked), by date."""
    return {item["properties"]["datetime"][:10]: _crop(client, item, NDVI) for item in items}


def _clear(crop: np.ndarray) -> float:
    return float(np.count_nonzero(crop[..., 3])) / crop[..., 3].size


# ---------------------------------------------------------------------- frames


def test_frames_are_the_dates_passing_min_clear_and_equal_their_crops(client, search_id, crops):
    min_clear = 0.6
    clear = {day: _clear(crop) for day, crop in crops.items()}
    expected = [day for day in sorted(clear) if clear[day] >= min_clear]
    # The threshold separates the demo's dates (else this test could not fail).
    assert 2 <= len(expected) < len(crops) - 1, clear
    # At most 5 frames read: the last five dates (the limit counts frames read).
    r = _animation(client, search_id, "webp", {**NDVI, "min_clear": min_clear, "label": "false"})
    assert r.status_code == 400, r.text
    assert "animation_max_frames=5" in r.json()["detail"]

    search = client.post(
        "/searches/register",
        json={
            "collections": ["sentinel-2-l2a"],
            "datetime": "2023-04-15T00:00:00Z/2024-01-01T00:00:00Z",
        },
    ).json()["id"]
    later = [day for day in expected if day >= "2023-04-15"]
    r = _animation(client, search, "webp", {**NDVI, "min_clear": min_clear, "label": "false"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/webp"
    assert r.headers["x-animation-labels"].split(",") == later
    assert r.headers["x-animation-frames"] == f"{len(later)}/5"
    frames = _frames(r.content)
    assert len(frames) == len(later)
    for day, frame in zip(later, frames, strict=True):
        assert frame.size == (WIDTH, HEIGHT)
        assert _same_pixels(_rgba(frame), crops[day]), day


def test_items_animation_equals_the_crops(client, items, crops):
    """POST with ids: the same frames, per date, as the crops; min_clear drops the cloudy."""
    chosen = items[:4]
    days = [item["properties"]["datetime"][:10] for item in chosen]
    min_clear = 0.6
    expected = [day for day in days if _clear(crops[day]) >= min_clear]
    assert 0 < len(expected) < len(days)
    r = client.post(
        "/collections/sentinel-2-l2a/animation.webp",
        params={**NDVI, "min_clear": min_clear, "label": "false"},
        json={
            "ids": [item["id"] for item in reversed(chosen)],
            "bbox": list(BBOX),
            "width": WIDTH,
            "height": HEIGHT,
        },
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-animation-labels"].split(",") == expected
    assert r.headers["x-animation-frames"] == f"{len(expected)}/{len(days)}"
    frames = _frames(r.content)
    assert len(frames) == len(expected)
    for day, frame in zip(expected, frames, strict=True):
        assert _same_pixels(_rgba(frame), crops[day]), day


def test_items_animation_errors(client, items):
    body = {"ids": [items[0]["id"], "no-such-item"], "bbox": list(BBOX), "width": 8, "height": 8}
    r = client.post("/collections/sentinel-2-l2a/animation.gif", params=NDVI, json=body)
    assert r.status_code == 404
    assert "no-such-item" in r.json()["detail"]
    r = client.post(
        "/collections/sentinel-2-l2a/animation.gif", params=NDVI, json={**body, "ids": []}
    )
    assert r.status_code == 422


def test_no_frame_passes_min_clear(client, items, crops):
    """404 naming min_clear when every date is under it (the swath edge and the cloudiest)."""
    days = [item["properties"]["datetime"][:10] for item in items]
    clearest = max(_clear(crops[day]) for day in days)
    if clearest == 1.0:
        cloudy = [item for item in items if _clear(crops[item["properties"]["datetime"][:10]]) < 1]
        assert len(cloudy) >= 2
        items, clearest = (
            cloudy,
            max(_clear(crops[i["properties"]["datetime"][:10]]) for i in cloudy),
        )
    body = {
        "ids": [item["id"] for item in items[:5]],
        "bbox": list(BBOX),
        "width": WIDTH,
        "height": HEIGHT,
    }
    url = "/collections/sentinel-2-l2a/animation.gif"
    r = client.post(url, params={**NDVI, "min_clear": min(clearest + 1e-6, 1)}, json=body)
    assert r.status_code == 404, r.text
    assert "min_clear" in r.json()["detail"]
    r = client.post(url, params={**NDVI, "min_clear": clearest}, json=body)
    assert r.status_code == 200, r.text


def test_labels_are_burned_into_their_box_only(client, items):
    """label=true changes the label's box (white text on black) and nothing else."""
    chosen = items[-3:]
    body = {
        "ids": [item["id"] for item in chosen],
        "bbox": list(BBOX),
        "width": 160,
        "height": 64,
    }
    params = {"preset": "true-color"}
    plain = client.post(
        "/collections/sentinel-2-l2a/animation.webp", params={**params, "label": "false"}, json=body
    )
    labelled = client.post("/collections/sentinel-2-l2a/animation.webp", params=params, json=body)
    assert plain.status_code == labelled.status_code == 200
    labels = labelled.headers["x-animation-labels"].split(",")
    assert labels == [item["properties"]["datetime"][:10] for item in chosen]
    for label, a, b in zip(labels, _frames(plain.content), _frames(labelled.content), strict=True):
        a, b = _rgba(a), _rgba(b)
        left, top, right, bottom = label_box(label)
        inside = np.zeros(a.shape[:2], bool)
        inside[top:bottom, left:right] = True
        assert np.array_equal(a[~inside], b[~inside])
        box = b[inside]
        assert (box[:, 3] == 255).all()
        # A black box and light (anti-aliased white) glyph pixels.
        assert (box[:, :3] >= 200).all(axis=1).sum() > 20
        assert (box[:, :3] == 0).all(axis=1).sum() > 20
        assert not np.array_equal(a[inside], box)


# ---------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt,fps", [("gif", 3), ("webp", 5), ("gif", 4)])
def test_formats_size_and_durations(client, items, fmt, fps):
    body = {
        "ids": [item["id"] for item in items[:3]],
        "bbox": list(BBOX),
        "width": 50,
        "height": 30,
    }
    r = client.post(
        f"/collections/sentinel-2-l2a/animation.{fmt}", params={**NDVI, "fps": fps}, json=body
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == f"image/{fmt}"
    image = Image.open(io.BytesIO(r.content))
    assert image.format == fmt.upper()
    assert image.size == (50, 30)
    assert image.n_frames == 3
    expected = frame_duration(fps, AnimationFormat(fmt))
    assert expected == (330 if (fmt, fps) == ("gif", 3) else round(1000 / fps))
    assert [frame.info["duration"] for frame in _frames(r.content)] == [expected] * 3
    assert image.info.get("loop") == 0


def test_png_crops_keep_their_route(client, search_id):
    """The animation's path is a bbox path: `.png` is still a crop, `.mp4` a 422."""
    r = _animation(client, search_id, "png", NDVI)
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    assert _animation(client, search_id, "mp4", NDVI).status_code == 422
    # Each is documented: one path per animation format, beside the crops' `.{format}`.
    paths = client.get("/openapi.json").json()["paths"]
    crop = "/searches/{search_id}/bbox/{minx},{miny},{maxx},{maxy}/{width}x{height}"
    assert {f"{crop}.{{format}}", f"{crop}.gif", f"{crop}.webp"} <= set(paths)
    assert "image/gif" in str(paths[f"{crop}.gif"]["get"]["responses"]["200"])
    assert "post" in paths["/collections/{collection_id}/animation.webp"]


# ---------------------------------------------------------------------- intervals, defaults


def test_interval_frames(client, search_id, items):
    """interval=P60D: one frame per 60 days from the first scene's day, items inside mosaicked."""
    days = [date.fromisoformat(item["properties"]["datetime"][:10]) for item in items]
    bins = sorted({(day - days[0]).days // 60 for day in days})
    r = _animation(client, search_id, "gif", {**NDVI, "interval": "P60D"})
    assert r.status_code == 200, r.text
    labels = r.headers["x-animation-labels"].split(",")
    assert len(labels) == len(bins) == len(_frames(r.content))
    from datetime import timedelta

    assert labels == [
        f"{days[0] + timedelta(days=60 * k)}..{days[0] + timedelta(days=60 * k + 59)}" for k in bins
    ]


def test_search_defaults_are_the_layer(client, items, search_id):
    """A search registered with preset=ndvi, mask=scl-clear animates as that."""
    r = client.post(
        "/searches/register",
        json={
            "ids": [item["id"] for item in items],
            "datetime": "2000-01-01T00:00:00Z/2100-01-01T00:00:00Z",
            "metadata": {"defaults": NDVI},
        },
    )
    defaults_id = r.json()["id"]
    params = {"interval": "P60D", "label": "false"}
    with_defaults = _animation(client, defaults_id, "webp", params)
    explicit = _animation(client, search_id, "webp", {**params, **NDVI})
    other = _animation(client, search_id, "webp", {**params, "preset": "true-color"})
    assert with_defaults.status_code == explicit.status_code == other.status_code == 200
    a, b, c = (list(map(_rgba, _frames(x.content))) for x in (with_defaults, explicit, other))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


# ---------------------------------------------------------------------- limits


@pytest.mark.parametrize(
    "size,params,status,message",
    [
        ((WIDTH, HEIGHT), {**NDVI, "interval": "P60D", "fps": 31}, 400, "animation_max_fps=30"),
        ((300, 300), {**NDVI, "interval": "P60D"}, 413, "animation_max_pixels=200000"),
        ((WIDTH, HEIGHT), {**NDVI}, 400, "animation_max_frames=5"),
        ((WIDTH, HEIGHT), {**NDVI, "interval": "PT12H"}, 400, "interval"),
        ((WIDTH, HEIGHT), {**NDVI, "interval": "10 days"}, 400, "interval"),
        ((WIDTH, HEIGHT), {**NDVI, "interval": "P60D", "min_clear": 1.5}, 422, "min_clear"),
        ((WIDTH, HEIGHT), {**NDVI, "interval": "P60D", "fps": 0}, 422, "fps"),
        ((5000, 5000), {**NDVI, "interval": "P60D"}, 413, "max_output_pixels"),
    ],
)
def test_limits(client, search_id, size, params, status, message):
    r = _animation(client, search_id, "gif", params, size=size)
    assert r.status_code == status, r.text
    assert message in r.text


def test_unknown_search_and_outside(client, search_id):
    assert _animation(client, "0" * 32, "gif", NDVI).status_code == 404
    r = client.get(f"/searches/{search_id}/bbox/10,10,10.1,10.1/32x32.gif", params=NDVI)
    assert r.status_code == 404
