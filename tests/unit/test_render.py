"""local/render.py: real MP4 files, decoded back with PyAV."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import pytest
from PIL import Image, ImageChops, ImageDraw, ImageStat

from local.render import (
    ZOOM_END,
    Resolution,
    output_size,
    render_video,
    render_video_file,
    zoom_at,
)


def _picture(width: int, height: int, image_format: str = "PNG", **save_options: object) -> bytes:
    """A picture with detail everywhere, so a zoom shows in every region of the frame."""
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for x in range(0, width, 16):
        draw.line([(x, 0), (x, height)], fill=(255, (x * 7) % 256, 40), width=3)
    for y in range(0, height, 16):
        draw.line([(0, y), (width, y)], fill=(30, 90, (y * 5) % 256), width=3)
    draw.ellipse([width // 3, height // 3, 2 * width // 3, 2 * height // 3], fill=(240, 240, 240))
    buffer = io.BytesIO()
    image.save(buffer, image_format, **save_options)
    return buffer.getvalue()


def _decode(video: bytes) -> tuple[av.VideoStream, list[Image.Image]]:
    with av.open(io.BytesIO(video), mode="r") as container:
        stream = container.streams.video[0]
        frames = [frame.to_image() for frame in container.decode(stream)]  # type: ignore[no-untyped-call]
        return stream, frames


def _mean_difference(first: Image.Image, second: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(first, second)).mean) / 3


@pytest.mark.parametrize(
    ("size", "resolution", "max_long_side", "duration", "fps", "expected_size"),
    [
        ((800, 450), "720P", None, 1, 24, (1280, 720)),
        ((450, 800), "720P", None, 1, 24, (720, 1280)),
        ((1600, 900), "1080P", 640, 3, 24, (640, 360)),
        ((450, 800), "1080P", 480, 4, 30, (270, 480)),
    ],
    ids=["landscape-720P", "portrait-720P", "landscape-1080P-capped", "portrait-1080P-capped"],
)
def test_render_follows_the_image_aspect_with_h264_frames_over_the_exact_duration(
    size: tuple[int, int],
    resolution: Resolution,
    max_long_side: int | None,
    duration: int,
    fps: int,
    expected_size: tuple[int, int],
) -> None:
    # Given a picture in the given orientation (full-size renders are kept short: they are slow)
    image = _picture(*size, image_format="JPEG", quality=90)

    # When it is rendered
    video = render_video(
        image, duration=duration, resolution=resolution, fps=fps, max_long_side=max_long_side
    )

    # Then the MP4 holds duration x fps H.264 frames of the expected size, over the duration
    stream, frames = _decode(video)
    assert stream.codec_context.name == "h264"
    assert (stream.width, stream.height) == expected_size
    assert stream.codec_context.pix_fmt == "yuv420p"
    assert len(frames) == duration * fps
    assert stream.duration is not None and stream.time_base is not None
    assert abs(float(stream.duration * stream.time_base) - duration) <= 1 / fps
    assert stream.average_rate == Fraction(fps)


def test_render_zooms_in_about_the_centre_over_time() -> None:
    # Given a detailed landscape picture
    image = _picture(960, 540)

    # When it is rendered
    _, frames = _decode(render_video(image, duration=3, resolution="720P", max_long_side=480))

    # Then the frames move, and the last one is the first one's centre, enlarged by ZOOM_END
    first, middle, last = frames[0], frames[len(frames) // 2], frames[-1]
    assert _mean_difference(first, middle) > 2
    assert _mean_difference(middle, last) > 2
    width, height = first.size
    crop_width, crop_height = width / ZOOM_END, height / ZOOM_END
    centre_of_first = first.resize(
        first.size,
        Image.Resampling.BILINEAR,
        box=(
            (width - crop_width) / 2,
            (height - crop_height) / 2,
            (width + crop_width) / 2,
            (height + crop_height) / 2,
        ),
    )
    assert _mean_difference(centre_of_first, last) < _mean_difference(first, last) / 3


def test_zoom_eases_from_one_to_zoom_end() -> None:
    # Given / When the zoom along the clip
    zooms = [zoom_at(step / 10) for step in range(11)]

    # Then it starts at 1, ends at ZOOM_END, never goes backwards and moves slowest at the ends
    assert zooms[0] == pytest.approx(1.0)
    assert zooms[-1] == pytest.approx(ZOOM_END)
    assert zooms == sorted(zooms)
    assert zooms[1] - zooms[0] < zooms[6] - zooms[5]


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "BMP", "WEBP"])
def test_render_accepts_every_provider_image_format(image_format: str) -> None:
    # Given a picture in one of the provider's formats
    image = _picture(400, 300, image_format=image_format)

    # When it is rendered small and short
    stream, frames = _decode(render_video(image, duration=1, resolution="720P", max_long_side=160))

    # Then a video comes out
    assert (stream.width, stream.height) == (160, 120)
    assert len(frames) == 24


def test_render_applies_exif_orientation() -> None:
    # Given a landscape JPEG whose EXIF says "rotate 90 degrees" (as phones write them)
    exif = Image.Exif()
    exif[0x0112] = 6
    image = _picture(640, 360, image_format="JPEG", exif=exif.tobytes())

    # When it is rendered
    stream, _ = _decode(render_video(image, duration=1, resolution="720P", max_long_side=320))

    # Then the video is upright: portrait
    assert (stream.width, stream.height) == (180, 320)


def test_render_video_file_writes_a_faststart_mp4(tmp_path: Path) -> None:
    # Given a picture and a target path
    path = tmp_path / "clip.mp4"

    # When the video is written to the path
    render_video_file(_picture(400, 400), path, duration=1, resolution="720P", max_long_side=128)

    # Then the file is an MP4 whose index (moov) comes before the media data, for streaming
    data = path.read_bytes()
    assert data[4:8] == b"ftyp"
    assert 0 < data.find(b"moov") < data.find(b"mdat")


def test_render_refuses_bytes_that_are_not_an_image() -> None:
    # Given / When / Then
    with pytest.raises(ValueError, match="cannot decode"):
        render_video(b"GIF89a not really", duration=1, resolution="720P")


@pytest.mark.parametrize(
    ("size", "resolution", "max_long_side", "expected_size"),
    [
        ((1000, 1000), "1080P", None, (1080, 1080)),
        ((1920, 1080), "1080P", None, (1920, 1080)),
        ((1080, 1920), "1080P", None, (1080, 1920)),
        ((1001, 333), "720P", None, (2164, 720)),
        ((1000, 333), "720P", 641, (640, 212)),
        ((500, 2000), "720P", 100, (24, 100)),
    ],
)
def test_output_size_has_the_short_side_of_the_resolution_and_even_sides(
    size: tuple[int, int],
    resolution: Resolution,
    max_long_side: int | None,
    expected_size: tuple[int, int],
) -> None:
    # Given / When
    width, height = output_size(*size, resolution, max_long_side)

    # Then
    assert (width, height) == expected_size
    assert width % 2 == 0 and height % 2 == 0
