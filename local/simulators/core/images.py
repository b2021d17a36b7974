"""The image a task renders from: fetched through its URL or decoded from a `data:` URL,
and the checks every route's image rules share."""

from __future__ import annotations

import base64
import binascii
import io
from urllib.parse import unquote_to_bytes, urlsplit

import httpx
from PIL import Image

from local.simulators.core.http import REQUEST_BODY_MAX_BYTES
from local.simulators.core.tasks import TaskFailed


def fetch_image(client: httpx.Client, url: str, limit: int) -> bytes:
    """The image at `url`: fetched over HTTP (redirects followed, at most `limit` bytes
    read), or decoded from a `data:` URL (a route that does not take those refuses them
    when it validates the create call). TaskFailed says why there is none."""
    if url.startswith("data:"):
        try:
            image = data_url_bytes(url)
        except ValueError as exc:
            raise TaskFailed(f"image data URL cannot be read: {exc}") from exc
        check_size(len(image), limit)
        return image
    try:
        with client.stream("GET", url, follow_redirects=True) as response:
            if response.status_code != 200:
                raise TaskFailed(f"image could not be fetched: HTTP {response.status_code}")
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                check_size(size, limit)
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise TaskFailed(f"image could not be fetched: {type(exc).__name__}") from exc
    return b"".join(chunks)


def check_size(size: int, limit: int) -> None:
    """TaskFailed when an image of `size` bytes is over `limit`."""
    if size > limit:
        raise TaskFailed(f"image is larger than {limit // (1024 * 1024)} MB")


def check_decodes(data: bytes) -> None:
    """TaskFailed unless Pillow can open the image: a provider decodes the file, and a
    readable header alone does not make an image."""
    try:
        with Image.open(io.BytesIO(data)):
            pass
    except (OSError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
        raise TaskFailed("image cannot be decoded") from exc


def is_http_url(url: str) -> bool:
    """Whether `url` is an absolute http(s) URL."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def is_image_url(url: str) -> bool:
    """Whether `url` is one the worker reads an image from: http(s) or a `data:` URL."""
    return is_data_url(url) if url.startswith("data:") else is_http_url(url)


def is_data_url(url: str) -> bool:
    """Whether `url` has the form of a `data:` URL (`data:[<type>][;base64],<data>`)."""
    return url.startswith("data:") and "," in url


def data_url_bytes(url: str) -> bytes:
    """The bytes a `data:` URL carries (base64 or percent-encoded); ValueError says why not."""
    if not is_data_url(url):
        raise ValueError("not a data: URL")
    header, _, data = url.partition(",")
    if not header.endswith(";base64"):
        return unquote_to_bytes(data)
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise ValueError("not valid base64") from exc


def data_url_body_max(image_max_bytes: int) -> int:
    """A create body limit with room for a base64 `data:` URL of the largest image."""
    return REQUEST_BODY_MAX_BYTES + -(-image_max_bytes // 3) * 4
