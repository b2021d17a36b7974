"""Turn a still image into a short H.264 MP4 with a gentle Ken Burns zoom.

The provider simulators use it to hand back a real, playable video whose aspect ratio
follows the input image, as HappyHorse does. Only Pillow and PyAV are needed.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
from av.video.frame import VideoFrame
from PIL import Image, ImageOps

Resolution = Literal["720P", "1080P"]

SHORT_SIDE_PIXELS: dict[str, int] = {"720P": 720, "1080P": 1080}
# The zoom ends 8 % closer than it starts: visible motion, no sense of a jump.
ZOOM_END = 1.08
X264_OPTIONS = {"preset": "veryfast", "crf": "23"}
# Frames are scaled in worker threads (Pillow releases the GIL) while x264 encodes;
# a short queue keeps memory flat (a 1080P frame is about 6 MB as RGB).
_SCALER_THREADS = 2
_FRAMES_AHEAD = 4


def output_size(
    width: int, height: int, resolution: Resolution, max_long_side: int | None = None
) -> tuple[int, int]:
    """The video's (width, height): short side 720 or 1080, aspect of the image, even sides.

    `max_long_side` caps the long side (the aspect is kept) for faster, smaller renders.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    short_side = SHORT_SIDE_PIXELS[resolution]
    if width <= height:
        size = (float(short_side), short_side * height / width)
    else:
        size = (short_side * width / height, float(short_side))
    long_side = max(size)
    if max_long_side is not None:
        if max_long_side < 2:
            raise ValueError(f"max_long_side must be at least 2, got {max_long_side}")
        if long_side > max_long_side:
            scale = max_long_side / long_side
            # Round down so the capped side never exceeds the cap.
            return _even_floor(size[0] * scale), _even_floor(size[1] * scale)
    return _even_round(size[0]), _even_round(size[1])


def render_video(
    image: bytes,
    *,
    duration: int,
    resolution: Resolution,
    fps: int = 24,
    max_long_side: int | None = None,
) -> bytes:
    """Render `image` (JPEG/PNG/BMP/WEBP bytes) as an MP4 of `duration * fps` frames."""
    with tempfile.TemporaryDirectory(prefix="render-") as work_dir:
        # The faststart pass re-reads the file by name, so the muxer needs a real path.
        path = Path(work_dir) / "video.mp4"
        render_video_file(
            image,
            path,
            duration=duration,
            resolution=resolution,
            fps=fps,
            max_long_side=max_long_side,
        )
        return path.read_bytes()


def render_video_file(
    image: bytes,
    path: str | os.PathLike[str],
    *,
    duration: int,
    resolution: Resolution,
    fps: int = 24,
    max_long_side: int | None = None,
) -> None:
    """Like `render_video`, but writes the MP4 to `path`."""
    if duration < 1:
        raise ValueError(f"duration must be at least 1 second, got {duration}")
    if fps < 1:
        raise ValueError(f"fps must be at least 1, got {fps}")
    source = decode_image(image)
    width, height = output_size(source.width, source.height, resolution, max_long_side)
    frame_count = duration * fps
    with av.open(os.fspath(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps, options=X264_OPTIONS)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        frame_time_base = Fraction(1, fps)
        for index, frame in enumerate(_zoom_frames(source, (width, height), frame_count)):
            frame.pts = index
            frame.time_base = frame_time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def decode_image(image: bytes) -> Image.Image:
    """Decode image bytes into an upright RGB picture (EXIF orientation applied)."""
    try:
        with Image.open(io.BytesIO(image)) as opened:
            upright = ImageOps.exif_transpose(opened)
            return upright.convert("RGB")
    except (OSError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
        raise ValueError(f"cannot decode the image: {exc}") from exc


def zoom_at(progress: float) -> float:
    """The zoom factor at `progress` in [0, 1]: 1.0 to ZOOM_END with a cosine ease in and out."""
    eased = (1.0 - math.cos(math.pi * progress)) / 2.0
    return 1.0 + (ZOOM_END - 1.0) * eased


def _zoom_frames(source: Image.Image, size: tuple[int, int], frame_count: int) -> Iterator[VideoFrame]:
    width, height = size
    # Scale once to the size the closest zoom needs: every frame is then one sub-pixel crop
    # of a small picture, never a pass over the full-size upload.
    base = ImageOps.fit(
        source,
        (round(width * ZOOM_END), round(height * ZOOM_END)),
        Image.Resampling.LANCZOS,
    )
    centre_x, centre_y = base.width / 2.0, base.height / 2.0
    last_index = max(frame_count - 1, 1)

    def frame_at(index: int) -> VideoFrame:
        zoom = zoom_at(index / last_index)
        half_w, half_h = base.width / zoom / 2.0, base.height / zoom / 2.0
        box = (centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h)
        picture = base.resize(size, Image.Resampling.BILINEAR, box=box)
        return _as_frame(picture).reformat(format="yuv420p")

    with ThreadPoolExecutor(_SCALER_THREADS, thread_name_prefix="render") as scalers:
        pending: deque[Future[VideoFrame]] = deque()
        for index in range(frame_count):
            pending.append(scalers.submit(frame_at, index))
            if len(pending) > _FRAMES_AHEAD:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _as_frame(picture: Image.Image) -> VideoFrame:
    frame: VideoFrame = VideoFrame.from_image(picture)  # type: ignore[no-untyped-call]  # PyAV's stub
    return frame


def _even_round(value: float) -> int:
    return max(2, 2 * round(value / 2))


def _even_floor(value: float) -> int:
    return max(2, 2 * math.floor(value / 2))
