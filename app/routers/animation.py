"""What the animation endpoints share: their parameters, limits and response.

- ``GET /searches/{search_id}/bbox/{minx},{miny},{maxx},{maxy}/{width}x{height}.{gif|webp}``
  (``SearchTilerFactory.animation``): one frame per scene date of the search (or per
  ``interval``), the search's layer (its defaults, a preset) and pixel selection;
- ``POST /collections/{collection_id}/animation.{gif|webp}``
  (``app.routers.item_animation``): the same for a list of item ids.

The reading is the engine's (``app.mosaic.animation.read_animation``), the drawing and
encoding ``app.animation``'s; this module parses and shapes the response.
"""

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import Response
from rasterio.crs import CRS
from rio_tiler.constants import WGS84_CRS
from titiler.core.dependencies import DefaultDependency

from app.animation import (
    MAX_FRAME_MS,
    MIN_FPS,
    AnimationFormat,
    FrameStyle,
    encode_animation,
    render_frame,
)
from app.dependencies import SettingsDep
from app.errors import BadRequestError, BusyError, NotFoundError
from app.mosaic import SearchBackend
from app.mosaic.animation import AnimationLimits, read_animation

__all__ = [
    "ANIMATION_PATHS",
    "AnimationConfig",
    "AnimationParams",
    "animation_config",
    "animation_format",
    "animation_response",
    "animation_responses",
]


#: The path suffix of each format: one literal path per format (``animation_format``).
ANIMATION_PATHS = {member: f".{member.value}" for member in AnimationFormat}


async def animation_format(request: Request) -> AnimationFormat:
    """The format of an animation route: its path's extension (``.gif``, ``.webp``)."""
    return AnimationFormat(request.url.path.rsplit(".", 1)[-1])


animation_responses: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"image/gif": {}, "image/webp": {}},
        "description": "An endlessly looping animation, oldest frame first, each frame's "
        "date (or interval) drawn in its top-left corner. Headers: `X-Animation-Frames: "
        "<kept>/<read>` (frames after `min_clear` / frames read), `X-Animation-Labels` "
        "(the kept frames' labels, comma-separated), `X-Mosaic-Partial` when some frame's "
        "mosaic is partial.",
    },
    400: {
        "description": "Bad parameters; more frames than `animation_max_frames`; `fps` over "
        "`animation_max_fps` or under 0.0016 (a frame of at most 655.35 s); `width` or "
        "`height` over the format's (WebP 16383, GIF 65535); an `interval` past year 9999."
    },
    404: {
        "description": "Unknown search or item; the bbox outside every item; no frame "
        "passes `min_clear`."
    },
    503: {"description": "`animation_max_concurrent` animations are being made: retry."},
    413: {
        "description": "width x height x frames over `animation_max_pixels` (or a frame over "
        "`max_output_pixels`)."
    },
    504: {"description": "No item could be read within `animation_time_limit`."},
}


@dataclass
class AnimationParams(DefaultDependency):
    """The parameters of an animation: frames per second, frame interval, clear fraction."""

    fps: Annotated[
        float | None,
        Query(
            gt=0,
            description="Frames per second (default `animation_default_fps`, at most "
            "`animation_max_fps`, at least 0.0016: a frame lasts at most 655.35 s). GIF "
            "stores delays in 10 ms steps.",
        ),
    ] = None
    interval: Annotated[
        str | None,
        Query(
            description="One frame per ISO 8601 interval (`P10D`, `P1M`, at least `P1D`) "
            "from the first scene's day, the items inside combined by `pixel_selection`; "
            "default: one frame per scene date (UTC day).",
        ),
    ] = None
    min_clear: Annotated[
        float,
        Query(
            ge=0,
            le=1,
            description="Drop frames whose fraction of clear pixels (a valid value: not "
            "masked by `mask`, inside the items) is under this (0..1).",
        ),
    ] = 0.0
    label: Annotated[
        bool, Query(description="Draw each frame's date (or interval) in its top-left corner.")
    ] = True


class AnimationSlots:
    """At most ``size`` animations made at once (``animation_max_concurrent``), per app.

    Not a queue: one more is refused at once (503, ``Retry-After``), so that waiting
    animations never hold request threads either.
    """

    def __init__(self, size: int):
        self.size = max(1, size)
        self._free = threading.BoundedSemaphore(self.size)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a slot while making one animation; ``BusyError`` when none is free."""
        if not self._free.acquire(blocking=False):
            raise BusyError(
                f"busy: {self.size} animations are being made, the limit "
                f"animation_max_concurrent={self.size}; retry in a moment"
            )
        try:
            yield
        finally:
            self._free.release()


_SLOTS_LOCK = threading.Lock()


def _slots(request: Request, size: int) -> AnimationSlots:
    """The app's ``AnimationSlots`` (made on its first animation)."""
    state = request.app.state
    with _SLOTS_LOCK:
        slots = getattr(state, "animation_slots", None)
        if slots is None or slots.size != max(1, size):
            slots = state.animation_slots = AnimationSlots(size)
    return slots


@dataclass(frozen=True)
class AnimationConfig:
    """The animation settings: limits, frame rates and the animations in flight."""

    limits: AnimationLimits
    max_fps: float
    default_fps: float
    slots: AnimationSlots

    def fps(self, fps: float | None) -> float:
        """``fps``, or the default; 400 over ``animation_max_fps`` or under ``MIN_FPS``."""
        if fps is None:
            return self.default_fps
        if fps > self.max_fps:
            raise BadRequestError(
                f"fps: {fps:g} is over the limit animation_max_fps={self.max_fps:g}"
            )
        if not fps >= MIN_FPS:
            raise BadRequestError(
                f"fps: {fps:g} is too slow: at least {MIN_FPS:.6f} frames per second (a "
                f"frame lasts at most {MAX_FRAME_MS / 1000:g} s)"
            )
        return fps


def check_frame_size(size: tuple[int, int], output_format: AnimationFormat) -> None:
    """400 naming ``width`` or ``height`` when a frame is larger than the format stores."""
    limit = output_format.max_side
    for name, value in zip(("width", "height"), size, strict=True):
        if value > limit:
            raise BadRequestError(
                f"{name}: {value} is over the limit of {limit} pixels of a "
                f"{output_format.value.upper()} frame"
            )


def animation_config(request: Request, settings: SettingsDep) -> AnimationConfig:
    """The ``animation_*`` settings (and the app's animations in flight)."""
    return AnimationConfig(
        limits=AnimationLimits.from_settings(settings),
        max_fps=settings.animation_max_fps,
        default_fps=settings.animation_default_fps,
        slots=_slots(request, settings.animation_max_concurrent),
    )


def animation_response(
    backend: SearchBackend,
    bbox: Sequence[float],
    size: tuple[int, int],
    output_format: AnimationFormat,
    params: AnimationParams,
    config: AnimationConfig,
    *,
    reads: dict[str, Any],
    mosaic: dict[str, Any],
    post_process: Callable[..., Any] | None,
    colormap: Any,
    render: dict[str, Any],
    coord_crs: CRS | None = None,
    dst_crs: CRS | None = None,
) -> Response:
    """Read, draw and encode the animation of ``backend`` over ``bbox``.

    Args:
        backend: a search's mosaic, or one over a list of items.
        bbox: the bbox, in ``coord_crs`` (default WGS84).
        size: ``(width, height)`` of every frame.
        output_format: GIF or WebP.
        params: fps, interval, min_clear, label.
        config: the animation settings.
        reads: the layer and dataset options of each item read.
        mosaic: ``pixel_selection`` and ``order``.
        post_process: the request's algorithm, if any.
        colormap: the request's colormap.
        render: rescale, color formula, return_mask.
        coord_crs: the bbox's CRS.
        dst_crs: the frames' CRS (default ``coord_crs``).

    """
    fps = config.fps(params.fps)
    check_frame_size(size, output_format)
    with config.slots.slot():
        return _animation(
            backend,
            bbox,
            size,
            output_format,
            params,
            fps,
            config.limits,
            reads=reads,
            mosaic=mosaic,
            style=FrameStyle(post_process, colormap, render),
            coord_crs=coord_crs,
            dst_crs=dst_crs,
        )


def _animation(
    backend: SearchBackend,
    bbox: Sequence[float],
    size: tuple[int, int],
    output_format: AnimationFormat,
    params: AnimationParams,
    fps: float,
    limits: AnimationLimits,
    *,
    reads: dict[str, Any],
    mosaic: dict[str, Any],
    style: FrameStyle,
    coord_crs: CRS | None,
    dst_crs: CRS | None,
) -> Response:
    """``animation_response`` once its parameters are checked and a slot is held."""
    width, height = size
    frames, read = read_animation(
        backend,
        bbox,
        width,
        height,
        limits=limits,
        interval=params.interval,
        min_clear=params.min_clear,
        bounds_crs=coord_crs or WGS84_CRS,
        dst_crs=dst_crs,
        **reads,
        **mosaic,
    )
    if not frames:
        raise NotFoundError(
            f"min_clear: none of the {read} frames has a clear fraction of at least "
            f"{params.min_clear:g}"
        )
    images = [
        render_frame(frame.image, style, frame.span.label if params.label else None)
        for frame in frames
    ]
    content = encode_animation(images, output_format, fps)
    headers = {
        "X-Animation-Frames": f"{len(frames)}/{read}",
        "X-Animation-Labels": ",".join(frame.span.label for frame in frames),
    }
    partial = sorted({reason for frame in frames for reason in frame.partial})
    if partial:
        headers["X-Mosaic-Partial"] = ",".join(partial)
        headers["Cache-Control"] = "no-store"
    return Response(content, media_type=output_format.media_type, headers=headers)
