"""Rendering: data a format cannot hold is rescaled to 8 bits, each pixel under its own mask."""

import io

import demo_reads as demo
import morecantile
import numpy as np
from PIL import Image
from rio_tiler.models import ImageData
from titiler.core.resources.enums import ImageType

from app.rendering import render

ITEMS = "/collections/sentinel-2-l2a/items"


def _uint16_image(bands: int, rows: int, cols: int) -> tuple[ImageData, np.ndarray]:
    data = (np.arange(bands * rows * cols, dtype="uint16").reshape(bands, rows, cols) + 1) * 997
    masked = np.zeros((rows, cols), dtype=bool)
    masked[1, 2] = True  # one pixel, masked in every band
    array = np.ma.MaskedArray(data, mask=np.broadcast_to(masked, data.shape))
    return ImageData(array), masked


def _eight_bits(data: np.ndarray) -> np.ndarray:
    """The uint16 range onto 0..255, as titiler's linear rescale (truncated)."""
    return (data.astype("float64") / 65535 * 255).astype("uint8")


def _decode(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)))


def test_a_masked_pixel_masks_only_itself():
    # 3 bands over 2 rows: titiler indexed the 2-D mask per band (band b took row b), an
    # IndexError here; with more rows than bands, whole columns were zeroed.
    image, masked = _uint16_image(bands=3, rows=2, cols=4)
    content, media_type = render(image)  # no format: an 8-bit PNG, since a pixel is masked
    assert media_type == "image/png"
    rgba = _decode(content)
    assert rgba.shape == (2, 4, 4)
    np.testing.assert_array_equal(rgba[..., 3], np.where(masked, 0, 255))
    expected = _eight_bits(image.data)
    for band in range(3):
        np.testing.assert_array_equal(rgba[..., band][~masked], expected[band][~masked])
        assert (rgba[..., band][masked] == 0).all()


def test_a_jpeg_of_uint16_data_has_no_zeroed_columns():
    flat = np.ma.MaskedArray(np.full((3, 16, 16), 30000, dtype="uint16"))
    flat[:, 1, 2] = np.ma.masked  # in the first 8x8 JPEG block
    content, media_type = render(ImageData(flat), output_format=ImageType.jpeg)
    assert media_type == "image/jpeg"
    rgb = _decode(content).astype(int)
    expected = int(_eight_bits(np.array([30000]))[0])
    # The lower blocks: no ringing from the masked pixel reaches them, a zeroed column would.
    assert np.abs(rgb[8:] - expected).max() <= 3


def test_a_tile_without_a_format_matches_its_data(client, demo_dir):
    """A uint16 tile asked without a format: an 8-bit PNG whose alpha is the mask and whose
    values are the data rescaled from the uint16 range, pixel by pixel (the swath-edge
    scene has masked pixels in this tile)."""
    item = demo.swath_edge_item(demo_dir)
    minx, miny, maxx, maxy = item["bbox"]
    tile = morecantile.tms.get("WebMercatorQuad").tile((minx + maxx) / 2, (miny + maxy) / 2, 13)
    path = f"{ITEMS}/{item['id']}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}"
    npy = client.get(f"{path}.npy", params={"assets": "red"})
    assert npy.status_code == 200, npy.text
    data = np.load(io.BytesIO(npy.content))
    valid = demo.valid(data[-1])
    assert valid.any() and (~valid).any()
    png = client.get(path, params={"assets": "red"})
    assert png.status_code == 200, png.text
    assert png.headers["content-type"] == "image/png"
    gray_alpha = _decode(png.content)
    np.testing.assert_array_equal(gray_alpha[..., -1], np.where(valid, 255, 0))
    np.testing.assert_array_equal(gray_alpha[..., 0][valid], _eight_bits(data[0])[valid])
