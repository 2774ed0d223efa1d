"""Animations as images: frames rendered like a crop, a date label burned in, GIF or WebP.

Each frame is rendered exactly as the bbox crop endpoint renders an image (post-process,
then ``app.rendering.render`` to PNG with the request's rescale and colormap), so a frame
equals the crop of its date rendered alone; then the label (the frame's date, or its
interval) is drawn in its top-left corner, white on an opaque black box, with Pillow's
default font. Frames are encoded by Pillow: WebP lossless (exact RGBA, the alpha of masked
pixels kept) or GIF (at most 256 colours per frame, 1-bit transparency; GIF stores frame
durations in hundredths of a second, so ``1000 / fps`` ms is rounded to 10 ms).

Not MP4: an H.264 encoder from PyPI (``imageio-ffmpeg``) is a 68 MB ffmpeg binary run as a
subprocess per request; H.264 has no alpha (masked pixels) and subsamples colour (yuv420p),
so frames would not equal the crops. Animated WebP plays in every current browser.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from io import BytesIO
from typing import Any

from PIL import Image, ImageDraw, ImageFont
from rio_tiler.models import ImageData
from titiler.core.resources.enums import ImageType

from app import rendering

__all__ = [
    "AnimationFormat",
    "LABEL_MARGIN",
    "MAX_FRAME_MS",
    "MIN_FPS",
    "encode_animation",
    "frame_duration",
    "label_box",
    "render_frame",
]

#: Pixels between the label's text and the edge of its box.
LABEL_MARGIN = 2

#: The longest frame (ms) either format stores: GIF's delay is 16 bits of hundredths of a
#: second (WebP's 24 bits of ms, but libwebp adds the frames' timestamps up in an int).
MAX_FRAME_MS = 655_350
#: The slowest frame rate: one frame per ``MAX_FRAME_MS``.
MIN_FPS = 1000 / MAX_FRAME_MS


class AnimationFormat(StrEnum):
    """The formats of an animation."""

    gif = "gif"
    webp = "webp"

    @property
    def media_type(self) -> str:
        """The format's media type."""
        return f"image/{self.value}"

    @property
    def max_side(self) -> int:
        """The widest (and tallest) frame the format stores: WebP 16383, GIF 65535 pixels."""
        return 16383 if self is AnimationFormat.webp else 65535


@dataclass(frozen=True)
class FrameStyle:
    """How a frame is rendered: post-process, colormap, render options (rescale ...)."""

    post_process: Callable[[ImageData], ImageData] | None
    colormap: Any
    render: dict[str, Any]


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def label_box(text: str) -> tuple[int, int, int, int]:
    """The pixels ``[left, right) x [top, bottom)`` a label covers in the top-left corner."""
    _, _, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox(
        (LABEL_MARGIN, LABEL_MARGIN), text, font=_font()
    )
    return 0, 0, int(right) + LABEL_MARGIN, int(bottom) + LABEL_MARGIN


def render_frame(image: ImageData, style: FrameStyle, label: str | None) -> Image.Image:
    """One frame as an RGBA image: rendered like a crop, then ``label`` drawn on it.

    Args:
        image: the frame's mosaic.
        style: post-process, colormap and render options of the request.
        label: the text drawn in the top-left corner; None: no label.

    Returns:
        The frame, RGBA.

    """
    if style.post_process:
        image = style.post_process(image)
    content, _ = rendering.render(
        image, output_format=ImageType.png, colormap=style.colormap, **style.render
    )
    frame = Image.open(BytesIO(content)).convert("RGBA")
    if label:
        draw = ImageDraw.Draw(frame)
        left, top, right, bottom = label_box(label)
        draw.rectangle((left, top, right - 1, bottom - 1), fill=(0, 0, 0, 255))  # inclusive
        draw.text((LABEL_MARGIN, LABEL_MARGIN), label, fill=(255, 255, 255, 255), font=_font())
    return frame


def frame_duration(fps: float, output_format: AnimationFormat) -> int:
    """Milliseconds per frame at ``fps`` (GIF: rounded to 10 ms, at least 20 ms)."""
    duration = round(1000 / fps)
    if output_format is AnimationFormat.gif:
        # Browsers play GIF delays under 20 ms at 100 ms: never write one.
        duration = max(20, round(duration / 10) * 10)
    return duration


def encode_animation(
    frames: Sequence[Image.Image], output_format: AnimationFormat, fps: float
) -> bytes:
    """Encode ``frames`` (RGBA, one size) as an endlessly looping animation.

    Args:
        frames: the frames, at least one.
        output_format: GIF or WebP.
        fps: frames per second.

    Returns:
        The file's bytes.

    """
    duration = frame_duration(fps, output_format)
    buffer = BytesIO()
    first, rest = frames[0], list(frames[1:])
    if output_format is AnimationFormat.webp:
        first.save(
            buffer,
            format="WEBP",
            save_all=True,
            append_images=rest,
            duration=duration,
            loop=0,
            lossless=True,
            method=0,  # fastest lossless: the frames are small, the CPU is the service's
        )
    else:
        first.save(
            buffer,
            format="GIF",
            save_all=True,
            append_images=rest,
            duration=duration,
            loop=0,
            disposal=2,  # each frame replaces the last (masked pixels stay transparent)
        )
    return buffer.getvalue()
