"""STAC documents of the demo, shaped exactly like Earth-Search v1 ``sentinel-2-l2a``.

Items keep every asset of a real Earth-Search item that a file backs here (the ``-jp2``
twins and the ``granule_metadata`` / ``tileinfo_metadata`` documents are left out), with
the same fields, titles and ``raster:bands``. Asset hrefs are relative to the item file,
so the catalog folder can be moved.
"""

import hashlib
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry import Polygon, mapping
from shapely.geometry.polygon import orient

from app.demo.grid import EPSG, DemoGrid, earth_sun_factor
from app.demo.scene import RESOLUTION, Scene

COLLECTION_ID = "sentinel-2-l2a"
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
STAC_EXTENSIONS = [
    "https://stac-extensions.github.io/processing/v1.1.0/schema.json",
    "https://stac-extensions.github.io/grid/v1.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
]
LICENSE_URL = "https://sentinel.esa.int/documents/247904/690755/Sentinel_Data_Legal_Notice"

# asset key: (file, band number, description, centre wavelength, full width half max)
_SPECTRAL = {
    "coastal": ("B01.tif", "1", "Coastal aerosol", 0.443, 0.027),
    "blue": ("B02.tif", "2", "Blue", 0.49, 0.098),
    "green": ("B03.tif", "3", "Green", 0.56, 0.045),
    "red": ("B04.tif", "4", "Red", 0.665, 0.038),
    "rededge1": ("B05.tif", "5", "Red edge 1", 0.704, 0.019),
    "rededge2": ("B06.tif", "6", "Red edge 2", 0.74, 0.018),
    "rededge3": ("B07.tif", "7", "Red edge 3", 0.783, 0.028),
    "nir": ("B08.tif", "8", "NIR 1", 0.842, 0.145),
    "nir08": ("B8A.tif", "8A", "NIR 2", 0.865, 0.033),
    "nir09": ("B09.tif", "9", "NIR 3", 0.945, 0.026),
    "swir16": ("B11.tif", "11", "SWIR 1", 1.61, 0.143),
    "swir22": ("B12.tif", "12", "SWIR 2", 2.19, 0.242),
}
#: File name of every asset in an item's folder.
ASSET_FILES: dict[str, str] = {
    **{key: spec[0] for key, spec in _SPECTRAL.items()},
    "aot": "AOT.tif",
    "wvp": "WVP.tif",
    "scl": "SCL.tif",
    "visual": "TCI.tif",
    "thumbnail": "thumbnail.jpg",
}


def _eo_band(key: str) -> dict[str, Any]:
    _, number, name, wavelength, fwhm = _SPECTRAL[key]
    common = "rededge" if key.startswith("rededge") else key
    return {
        "name": key,
        "common_name": common,
        "description": f"{name} (band {number})",
        "center_wavelength": wavelength,
        "full_width_half_max": fwhm,
    }


def _grid_fields(grid: DemoGrid, resolution: int) -> dict[str, Any]:
    t = grid.transform(resolution)
    # Integers where exact, as Earth-Search writes them.
    coefficients = [int(v) if float(v).is_integer() else v for v in (t.a, t.b, t.c, t.d, t.e, t.f)]
    return {"proj:shape": list(grid.shape(resolution)), "proj:transform": coefficients}


def asset_definitions(grid: DemoGrid, offset: float | None) -> dict[str, dict[str, Any]]:
    """Build every asset's fields except ``href``, in Earth-Search's key order.

    Args:
        grid: the demo grid.
        offset: the reflectance bands' ``raster:bands`` offset; None leaves it out (for
            the collection's ``item_assets``, where it differs between items).

    Returns:
        Asset key to asset fields.

    """
    assets: dict[str, dict[str, Any]] = {}
    for key in sorted(ASSET_FILES):
        if key == "thumbnail":
            assets[key] = {"type": "image/jpeg", "title": "Thumbnail image", "roles": ["thumbnail"]}
            continue
        res = RESOLUTION[key]
        asset: dict[str, Any] = {"type": COG_TYPE}
        if key in _SPECTRAL:
            _, number, name, _, _ = _SPECTRAL[key]
            band = {
                "nodata": 0,
                "data_type": "uint16",
                "bits_per_sample": 15,
                "spatial_resolution": res,
                "scale": 0.0001,
            }
            if offset is not None:
                band["offset"] = offset
            asset |= {
                "title": f"{name} (band {number}) - {res}m",
                "eo:bands": [_eo_band(key)],
                "gsd": res,
                **_grid_fields(grid, res),
                "raster:bands": [band],
                "roles": ["data", "reflectance"],
            }
        elif key in ("aot", "wvp"):
            band = {"nodata": 0, "data_type": "uint16", "bits_per_sample": 15}
            band["spatial_resolution"] = res
            if key == "wvp":
                band["unit"] = "cm"
            band |= {"scale": 0.001, "offset": 0}
            title = "Aerosol optical thickness (AOT)" if key == "aot" else "Water vapour (WVP)"
            asset |= {
                "title": title,
                **_grid_fields(grid, res),
                "raster:bands": [band],
                "roles": ["data", "reflectance"],
            }
        elif key == "scl":
            asset |= {
                "title": "Scene classification map (SCL)",
                **_grid_fields(grid, res),
                "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": res}],
                "roles": ["data", "reflectance"],
            }
        else:  # visual
            asset |= {
                "title": "True color image",
                "eo:bands": [_eo_band(b) for b in ("red", "green", "blue")],
                **_grid_fields(grid, res),
                "roles": ["visual"],
            }
        assets[key] = asset
    return assets


def to_lonlat(polygon: Polygon, epsg: int = EPSG) -> Polygon:
    """Reproject a polygon from ``epsg`` to EPSG:4326, counter-clockwise (RFC 7946).

    ``epsg`` is the demo's EPSG:32633 but for the cross-zone scenes.
    """
    transformer = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)

    def project(xy: np.ndarray) -> np.ndarray:
        return np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))

    return orient(shapely.transform(polygon, project), sign=1.0)


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def build_item(scene: Scene, grid: DemoGrid) -> dict[str, Any]:
    """Build the STAC item of a rendered scene.

    Args:
        scene: the rendered date.
        grid: the demo grid.

    Returns:
        The item as a JSON-ready dict, hrefs relative to ``items/<id>.json``.

    """
    spec = scene.spec
    zone, band, square = grid.mgrs
    tile = f"{zone}{band}{square}"
    item_id = spec.item_id(tile)
    sat = spec.platform[-1].upper()
    baseline = spec.processing_baseline
    n_baseline = "N" + baseline.replace(".", "")
    start = spec.datetime
    sensed = start + timedelta(minutes=3, seconds=34, microseconds=276_000)
    generated = start + timedelta(hours=4, minutes=12, seconds=44)
    created = generated + timedelta(hours=1, minutes=53, seconds=27, microseconds=658_000)
    stamp = f"{start:%Y%m%dT%H%M%S}"
    gen_stamp = f"{generated:%Y%m%dT%H%M%S}"
    orbit = f"{spec.absolute_orbit:06d}"
    footprint = to_lonlat(scene.footprint, grid.epsg)
    properties: dict[str, Any] = {
        "created": _iso(created),
        "platform": spec.platform,
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "eo:cloud_cover": scene.properties["eo:cloud_cover"],
        "proj:epsg": grid.epsg,
        "proj:code": f"EPSG:{grid.epsg}",
        "mgrs:utm_zone": zone,
        "mgrs:latitude_band": band,
        "mgrs:grid_square": square,
        "grid:code": f"MGRS-{tile}",
        "view:sun_azimuth": round(scene.sun_azimuth, 6),
        "view:sun_elevation": round(scene.sun_elevation, 6),
        **{k: v for k, v in scene.properties.items() if k.startswith("s2:")},
        "s2:product_type": "S2MSI2A",
        "s2:processing_baseline": baseline,
        "s2:product_uri": f"S2{sat}_MSIL2A_{stamp}_{n_baseline}_R079_T{tile}_{gen_stamp}.SAFE",
        "s2:generation_time": generated.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
        "s2:datatake_id": f"GS2{sat}_{stamp}_{orbit}_N{baseline}",
        "s2:datatake_type": "INS-NOBS",
        "s2:datastrip_id": (
            f"S2{sat}_OPER_MSI_L2A_DS_2APS_{gen_stamp}_S{sensed:%Y%m%dT%H%M%S}_N{baseline}"
        ),
        "s2:granule_id": (f"S2{sat}_OPER_MSI_L2A_TL_2APS_{gen_stamp}_A{orbit}_T{tile}_N{baseline}"),
        "s2:reflectance_conversion_factor": round(earth_sun_factor(spec.doy), 12),
        "datetime": sensed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "s2:sequence": "0",
        "earthsearch:s3_path": (
            f"s3://sentinel-cogs/sentinel-s2-l2a-cogs/{zone}/{band}/{square}/"
            f"{start.year}/{start.month}/{item_id}"
        ),
        "earthsearch:payload_id": (
            "roda-sentinel2/workflow-sentinel2-to-stac/"
            + hashlib.md5(item_id.encode(), usedforsecurity=False).hexdigest()
        ),
        "earthsearch:boa_offset_applied": spec.boa_offset_applied,
        # Honest provenance: these scenes are synthetic.
        "processing:software": {"sentinel2-to-stac": "0.1.1", "terratiler-demo": "1"},
        "updated": _iso(created),
    }
    assets = {}
    for key, fields in asset_definitions(grid, spec.offset).items():
        assets[key] = {"href": f"../cogs/{item_id}/{ASSET_FILES[key]}", **fields}
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "properties": properties,
        "geometry": mapping(footprint),
        "links": [
            {"rel": "self", "type": "application/geo+json", "href": f"./{item_id}.json"},
            {"rel": "license", "href": LICENSE_URL},
            {"rel": "parent", "type": "application/json", "href": "../collection.json"},
            {"rel": "collection", "type": "application/json", "href": "../collection.json"},
            {"rel": "root", "type": "application/json", "href": "../collection.json"},
            {"rel": "thumbnail", "href": f"../cogs/{item_id}/thumbnail.jpg"},
        ],
        "assets": assets,
        "bbox": list(footprint.bounds),
        "stac_extensions": STAC_EXTENSIONS,
        "collection": COLLECTION_ID,
    }


def build_collection(grid: DemoGrid, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Build the ``sentinel-2-l2a`` collection of the demo items.

    Args:
        grid: the demo grid.
        items: the items, in time order.

    Returns:
        The collection as a JSON-ready dict, with ``item_assets`` and the demo's extent.

    """
    bbox = shapely.union_all([shapely.box(*item["bbox"]) for item in items]).bounds
    times = sorted(item["properties"]["datetime"] for item in items)
    return {
        "type": "Collection",
        "id": COLLECTION_ID,
        "stac_version": "1.0.0",
        "title": "Sentinel-2 Level-2A (terratiler synthetic demo)",
        "description": (
            "Synthetic Sentinel-2 L2A scenes over Prekmurje farmland (north-east Slovenia), "
            "generated offline by `terratiler demo`, in the shape of Earth-Search v1's "
            "sentinel-2-l2a collection."
        ),
        "links": [
            {"rel": "self", "type": "application/json", "href": "./collection.json"},
            {"rel": "root", "type": "application/json", "href": "./collection.json"},
            {"rel": "license", "href": LICENSE_URL, "title": "proprietary"},
            *(
                {"rel": "item", "type": "application/geo+json", "href": f"./items/{i['id']}.json"}
                for i in items
            ),
        ],
        "stac_extensions": [
            "https://stac-extensions.github.io/item-assets/v1.0.0/schema.json",
            "https://stac-extensions.github.io/view/v1.0.0/schema.json",
            "https://stac-extensions.github.io/scientific/v1.0.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
            "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
        ],
        "extent": {
            "spatial": {"bbox": [list(bbox)]},
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
        "license": "proprietary",
        "keywords": ["sentinel", "earth observation", "esa", "synthetic"],
        "providers": [
            {"name": "ESA", "roles": ["producer"], "url": "https://earth.esa.int/web/guest/home"},
            {"name": "terratiler", "roles": ["processor"]},
        ],
        "summaries": {
            "platform": ["sentinel-2a", "sentinel-2b"],
            "constellation": ["sentinel-2"],
            "instruments": ["msi"],
            "gsd": [10, 20, 60],
            "view:off_nadir": [0],
            "sci:doi": ["10.5270/s2_-znk9xsj"],
            "eo:bands": [_eo_band(key) for key in _SPECTRAL],
        },
        "item_assets": asset_definitions(grid, None),
    }
