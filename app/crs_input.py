"""CRS names: WGS 84's two names, and which CRS texts from users may reach GDAL or PROJ.

``EPSG_4326`` and ``OGC_CRS84`` are the same datum with the axes in another order; every
transformer here is ``always_xy``, so both give (lon, lat) as GeoJSON does. rasterio's CRS
object for WGS 84 is rio-tiler's ``rio_tiler.constants.WGS84_CRS`` (``EPSG:4326``).

GDAL's ``OSRSetFromUserInput`` (rasterio's ``CRS.from_user_input``, titiler's
``dst_crs`` / ``coord_crs`` / ``crs``) fetches an ``http(s)://`` URL and reads a file path
it is given; PROJ opens the grid and init files a PROJ string or WKT names
(``+nadgrids=``, ``+init=``, ``PARAMETERFILE``). ``dst_crs=http://10.0.0.1/x`` made the
service send requests to any host, past ``allowed_sources``. Accepted from users (names
and definitions, never places): an ``AUTHORITY:CODE`` (``EPSG:32633``, ``OGC:CRS84``), an
OGC CRS URN or URL (``http://www.opengis.net/def/crs/EPSG/0/4326``: parsed, not
fetched), WKT or PROJJSON, none of them naming a file.
"""

import re

#: WGS 84 as EPSG names it (pyproj / GDAL input): the CRS of footprints and GeoJSON outputs.
EPSG_4326 = "EPSG:4326"
#: WGS 84 with (lon, lat) axes as OGC names it: the default CRS of Statistical API bounds and
#: the only ``filter-crs`` of STAC searches.
OGC_CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"

AUTHORITY_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*:{1,2}[A-Za-z0-9_.]+$")
WKT = re.compile(r"^\s*[A-Z_]+(CS|CRS)\s*[\[(]", re.IGNORECASE)
FILE_REFERENCES = re.compile(r"nadgrids|geoidgrids|parameterfile|init\s*=", re.IGNORECASE)
_OGC_NAME = re.compile(
    r"^(urn:ogc:def:crs:|https?://(www\.)?opengis\.net/def/crs/)[A-Za-z0-9_.:/-]+$",
    re.IGNORECASE,
)
_PROJJSON = re.compile(r"^\s*\{")


def crs_text_error(text: str) -> str | None:
    """Why ``text`` may not be handed to GDAL or PROJ as a CRS, or None if it may."""
    if FILE_REFERENCES.search(text):
        return "names a grid, init or parameter file"
    if (
        AUTHORITY_CODE.match(text)
        or _OGC_NAME.match(text)
        or WKT.match(text)
        or _PROJJSON.match(text)
    ):
        return None
    return "not an AUTHORITY:CODE, OGC CRS URN or URL, WKT or PROJJSON (no other URLs or files)"
