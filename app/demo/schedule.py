"""Which dates the demo has, and what each date is like (sky, processing, swath edge).

The plan depends only on the number of scenes, never on the seed, so other modules and
tests can rely on it: ``plan_scenes(6)`` tells which item has which property.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

# Sentinel-2A and -2B each pass every 10 days on relative orbit 79, 5 days apart.
_FIRST_PASS = datetime(2023, 4, 2, 9, 57, 21, tzinfo=UTC)
_SEASON_PASSES = 36  # 2023-04-02 + 36 x 5 days = 2023-09-28
_ABSOLUTE_ORBIT = {"sentinel-2a": (40610, 143), "sentinel-2b": (31805, 143)}

#: Sky over each scene: ``clear`` no cloud, ``few`` small cumulus (a few %),
#: ``partly`` 20-40 % cloud with thin cirrus, ``mostly`` 70-85 % cloud with cirrus.
Sky = Literal["clear", "few", "partly", "mostly"]
_SKY_CYCLE: tuple[Sky, ...] = ("clear", "partly", "clear", "few", "clear", "partly", "few", "clear")


@dataclass(frozen=True)
class SceneSpec:
    """What one demo date is like.

    Attributes:
        index: position in the time series (0-based).
        datetime: sensing time (UTC).
        platform: ``sentinel-2a`` or ``sentinel-2b`` (alternating).
        sky: one of ``Sky``.
        cirrus: whether a band of thin cirrus crosses the scene.
        nodata_edge: whether the swath edge cuts the scene (west of a diagonal line is 0).
        boa_offset_applied: the ``earthsearch:boa_offset_applied`` flag, with Element84's
            meaning: ESA's BOA_ADD_OFFSET has already been taken out of the COG's DN. True:
            baseline 05.09, DN = reflectance * 10000. False: baseline 04.00, DN =
            reflectance * 10000 + 1000 (as ESA ships it). Both record ``raster:bands``
            offset -0.1, exactly as real Earth-Search v1 items do (the recorded fixture
            item is true with -0.1): the flag, not raster:bands, says which DN these are
            (Element84/earth-search#9), so the demo exercises that trap.

    """

    index: int
    datetime: datetime
    platform: str
    sky: Sky
    cirrus: bool
    nodata_edge: bool
    boa_offset_applied: bool

    @property
    def processing_baseline(self) -> str:
        """``s2:processing_baseline``: 05.09, or 04.00 for the items still carrying +1000."""
        return "05.09" if self.boa_offset_applied else "04.00"

    @property
    def offset(self) -> float:
        """The ``raster:bands`` offset of the reflectance assets, as Earth-Search records it."""
        return -0.1

    @property
    def dn_offset(self) -> int:
        """What was added to reflectance x 10000 to make the stored DN."""
        return 0 if self.boa_offset_applied else 1000

    @property
    def doy(self) -> int:
        """Day of the year of the sensing date."""
        return self.datetime.timetuple().tm_yday

    @property
    def absolute_orbit(self) -> int:
        """The platform's absolute orbit number at sensing time."""
        first, per_10_days = _ABSOLUTE_ORBIT[self.platform]
        days = (self.datetime - _FIRST_PASS).days
        return first + round(days * per_10_days / 10)

    def item_id(self, tile: str) -> str:
        """Return the Earth-Search item id, e.g. ``S2A_33TWM_20230415_0_L2A``."""
        return f"S2{self.platform[-1].upper()}_{tile}_{self.datetime:%Y%m%d}_0_L2A"


def plan_scenes(scenes: int) -> list[SceneSpec]:
    """Plan the demo's dates over the 2023 growing season (April to September).

    Rules, for ``scenes >= 3``: scene 2 is clear and cut by the swath edge; every third
    scene from scene 1 (1, 4, 7 ...) has ``boa_offset_applied`` false (its DN still carry
    ESA's +1000); with 4 or more
    scenes one late scene (the last not in that group) is mostly cloudy. The others
    cycle through clear, partly cloudy and a few clouds.

    Args:
        scenes: number of dates (>= 1).

    Returns:
        One spec per date, in time order.

    """
    if scenes < 1:
        raise ValueError("scenes must be >= 1")
    # An odd number of 5-day steps makes the two satellites alternate.
    step = max(1, _SEASON_PASSES // max(scenes - 1, 1))
    if step % 2 == 0:
        step -= 1
    start = max(0, (_SEASON_PASSES - step * (scenes - 1)) // 2) if scenes > 1 else 18
    mostly = None
    if scenes >= 4:
        mostly = scenes - 1 if (scenes - 1) % 3 != 1 else scenes - 2
    specs = []
    for i in range(scenes):
        slot = start + i * step
        sky = _SKY_CYCLE[i % len(_SKY_CYCLE)]
        if i == 2:
            sky = "clear"
        if i == mostly:
            sky = "mostly"
        specs.append(
            SceneSpec(
                index=i,
                # A few seconds' drift between passes, as in real sensing times.
                datetime=_FIRST_PASS + timedelta(days=5 * slot, seconds=(7 * slot) % 23),
                platform="sentinel-2a" if slot % 2 == 0 else "sentinel-2b",
                sky=sky,
                cirrus=sky in ("partly", "mostly"),
                nodata_edge=i == 2,
                boa_offset_applied=i % 3 != 1,
            )
        )
    return specs
