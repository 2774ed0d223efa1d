"""Where the demo lies: its UTM grid, its MGRS tile name and the sun over it."""

import math
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from affine import Affine
from pyproj import Transformer

#: Prekmurje farmland near Murska Sobota, north-east Slovenia.
CENTER_LON = 16.1
CENTER_LAT = 46.65
UTM_ZONE = 33
EPSG = 32633

_LATITUDE_BANDS = "CDEFGHJKLMNPQRSTUVWX"
_COLUMN_SETS = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"

# Sentinel-2 grids are aligned to 60 m so that the 10, 20 and 60 m pixels nest.
_ALIGN = 60


def latitude_band(lat: float) -> str:
    """Return the MGRS latitude band letter (8 degrees tall; X spans 72-84N) of a latitude."""
    index = int(math.floor((lat + 80.0) / 8.0))
    return _LATITUDE_BANDS[min(max(index, 0), len(_LATITUDE_BANDS) - 1)]


def grid_square(zone: int, easting: float, northing: float) -> str:
    """Return the two-letter MGRS 100 km square of a UTM coordinate (AA lettering scheme).

    Args:
        zone: UTM zone number (1-60).
        easting: UTM easting in metres.
        northing: UTM northing in metres (northern hemisphere).

    Returns:
        Column letter then row letter, e.g. ``"WM"``.

    """
    columns = _COLUMN_SETS[(zone - 1) % 3]
    column = columns[int(easting // 100_000) - 1]
    # Even zones start their row lettering five letters later.
    row_shift = 0 if zone % 2 else 5
    row = _ROW_LETTERS[(int(northing // 100_000) + row_shift) % len(_ROW_LETTERS)]
    return column + row


@dataclass(frozen=True)
class DemoGrid:
    """The demo scene's 10 m UTM grid and the 20 m / 60 m grids nested in it.

    Attributes:
        size: width and height of the 10 m grid in pixels.
        left: easting of the upper-left corner (a multiple of 60 m).
        top: northing of the upper-left corner (a multiple of 60 m).
        epsg: the grid's UTM CRS (EPSG:32633 for the demo; another zone for the
            cross-zone scenes).

    """

    size: int
    left: float
    top: float
    epsg: int = EPSG

    @property
    def padded(self) -> int:
        """Side of the 10 m working grid: ``size`` rounded up to whole 60 m pixels."""
        return self.shape(60)[0] * 6

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of the 10 m grid in its CRS."""
        side = self.size * 10.0
        return (self.left, self.top - side, self.left + side, self.top)

    def shape(self, resolution: int) -> tuple[int, int]:
        """(rows, cols) of the grid at ``resolution`` metres covering the 10 m extent."""
        n = math.ceil(self.size * 10 / resolution)
        return (n, n)

    def transform(self, resolution: int) -> Affine:
        """Return the affine transform of the grid at ``resolution`` metres."""
        return Affine(resolution, 0.0, self.left, 0.0, -resolution, self.top)

    def to_lonlat(self, x: float, y: float) -> tuple[float, float]:
        """Convert a UTM coordinate to (lon, lat)."""
        return _transformer(self.epsg, 4326).transform(x, y)

    @property
    def center_lonlat(self) -> tuple[float, float]:
        """(lon, lat) of the grid's centre."""
        minx, miny, maxx, maxy = self.extent
        return self.to_lonlat((minx + maxx) / 2, (miny + maxy) / 2)

    @property
    def mgrs(self) -> tuple[int, str, str]:
        """(utm zone, latitude band, 100 km square) of the grid's centre."""
        minx, miny, maxx, maxy = self.extent
        _, lat = self.center_lonlat
        zone = self.epsg % 100
        return (
            zone,
            latitude_band(lat),
            grid_square(zone, (minx + maxx) / 2, (miny + maxy) / 2),
        )


@lru_cache(maxsize=8)
def _transformer(source: int, target: int) -> Transformer:
    return Transformer.from_crs(f"EPSG:{source}", f"EPSG:{target}", always_xy=True)


def demo_grid(
    size: int, lon: float = CENTER_LON, lat: float = CENTER_LAT, epsg: int = EPSG
) -> DemoGrid:
    """Return a grid of ``size`` x ``size`` 10 m pixels centred near (lon, lat) in ``epsg``.

    The defaults are the demo's own grid near Murska Sobota; the corners are multiples
    of 60 m in the grid's CRS, as Sentinel-2 tile corners are.
    """
    cx, cy = _transformer(4326, epsg).transform(lon, lat)
    half = size * 10 / 2
    left = math.floor((cx - half) / _ALIGN) * _ALIGN
    top = math.ceil((cy + half) / _ALIGN) * _ALIGN
    return DemoGrid(size=size, left=float(left), top=float(top), epsg=epsg)


def sun_position(when: datetime, lon: float, lat: float) -> tuple[float, float]:
    """Solar azimuth and elevation in degrees (NOAA approximation, good to ~0.1 degree).

    Args:
        when: a timezone-aware UTC datetime.
        lon: longitude in degrees east.
        lat: latitude in degrees north.

    Returns:
        (azimuth clockwise from north, elevation above the horizon).

    """
    doy = when.timetuple().tm_yday
    hours = when.hour + when.minute / 60 + when.second / 3600
    gamma = 2 * math.pi / 365 * (doy - 1 + (hours - 12) / 24)
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * math.cos(gamma)
        - 0.032077 * math.sin(gamma)
        - 0.014615 * math.cos(2 * gamma)
        - 0.040849 * math.sin(2 * gamma)
    )
    decl = (
        0.006918
        - 0.399912 * math.cos(gamma)
        + 0.070257 * math.sin(gamma)
        - 0.006758 * math.cos(2 * gamma)
        + 0.000907 * math.sin(2 * gamma)
        - 0.002697 * math.cos(3 * gamma)
        + 0.00148 * math.sin(3 * gamma)
    )
    solar_minutes = hours * 60 + eqtime + 4 * lon
    hour_angle = math.radians(solar_minutes / 4 - 180)
    phi = math.radians(lat)
    cos_zenith = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(
        hour_angle
    )
    elevation = 90 - math.degrees(math.acos(max(-1.0, min(1.0, cos_zenith))))
    azimuth = math.degrees(
        math.atan2(
            math.sin(hour_angle),
            math.cos(hour_angle) * math.sin(phi) - math.tan(decl) * math.cos(phi),
        )
    )
    return (azimuth + 180) % 360, elevation


def earth_sun_factor(doy: int) -> float:
    """Return the reflectance conversion factor (1/d^2, d in AU) of a day of the year."""
    return 1 / (1 - 0.01673 * math.cos(0.0172 * (doy - 2))) ** 2
