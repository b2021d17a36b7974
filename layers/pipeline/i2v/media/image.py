"""Validate an uploaded image against the provider's rules from the first bytes of the file.

The Lambda package carries no imaging library: the format comes from magic bytes (never
from the file name), and width and height from the format's own header, which lies in
the first few hundred bytes of any supported file (a JPEG may put large metadata
segments before its frame header, so its head can grow, within a cap).

Rules (HappyHorse 1.0 image-to-video): JPEG, PNG, BMP or WEBP; each side at least
300 px; at most 10 MiB; aspect ratio between 1:2.5 and 2.5:1 inclusive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from i2v.domain import Frozen
from i2v.errors import InvalidImage

ImageFormat = Literal["jpeg", "png", "bmp", "webp"]

HEAD_BYTES = 64 * 1024
# A JPEG with big EXIF/ICC/XMP segments may put its frame header past the first 64 KiB.
MAX_HEAD_BYTES = 1024 * 1024

SUPPORTED_FORMATS_HINT = "use JPEG, PNG, BMP or WEBP"


class ImageInfo(Frozen):
    format: ImageFormat
    width: int
    height: int


class NeedMoreBytes(InvalidImage):
    """The head ends before the header that decides; `needed` bytes from the start would do."""

    code = "TRUNCATED_IMAGE"

    def __init__(self, needed: int, have: int) -> None:
        super().__init__(f"the image header is cut short: {have} bytes read, {needed} needed")
        self.needed = needed


def read_image_info(read_range: Callable[[int, int], bytes], size: int) -> ImageInfo:
    """Read the head of a `size`-byte file and parse it, reading more only when needed.

    `read_range(start, end_inclusive)` returns those bytes (an S3 ranged GET). The head
    starts at HEAD_BYTES and grows, only for a header that lies further, up to
    MAX_HEAD_BYTES: a big image is never read whole.
    """
    if size <= 0:
        return inspect_image(b"")
    head = read_range(0, min(HEAD_BYTES, size) - 1)
    while True:
        try:
            return inspect_image(head)
        except NeedMoreBytes as short:
            if short.needed > size:
                raise _corrupt(f"the file ends after {size} bytes, inside its header") from None
            if short.needed > MAX_HEAD_BYTES:
                raise InvalidImage(
                    f"the image's metadata before its frame header is over "
                    f"{MAX_HEAD_BYTES // 1024} KiB; save it again without large metadata",
                    code="IMAGE_HEADER_TOO_LARGE",
                ) from None
            target = min(size, MAX_HEAD_BYTES, max(short.needed, 2 * len(head)))
            more = read_range(len(head), target - 1)
            if not more:
                raise _corrupt("the file ended before its stated size") from None
            head += more


def inspect_image(head: bytes) -> ImageInfo:
    """Format and size from the first bytes of a file.

    Raises InvalidImage for anything that is not a readable supported image, and its
    subclass NeedMoreBytes when the head is too short to decide.
    """
    if not head:
        raise InvalidImage(f"the file is empty (0 bytes); {SUPPORTED_FORMATS_HINT}", code="EMPTY_IMAGE")
    image_format = _detect_format(head)
    width, height = _PARSERS[image_format](head)
    if width <= 0 or height <= 0:
        raise _corrupt(f"the {image_format.upper()} header gives a size of {width}x{height} px")
    return ImageInfo(format=image_format, width=width, height=height)


# --- format detection ---------------------------------------------------------------

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_BMP_MAGIC = b"BM"
_RIFF_MAGIC = b"RIFF"
_SUPPORTED_MAGICS: tuple[tuple[bytes, ImageFormat], ...] = (
    (_JPEG_MAGIC, "jpeg"),
    (_PNG_MAGIC, "png"),
    (_BMP_MAGIC, "bmp"),
)

# Formats people upload by mistake, named so the rejection says what the file is.
_KNOWN_UNSUPPORTED: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF", "PDF"),
    (b"8BPS", "Photoshop PSD"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
)
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})


def _detect_format(head: bytes) -> ImageFormat:
    for magic, image_format in _SUPPORTED_MAGICS:
        if head.startswith(magic):
            return image_format
    if head.startswith(_RIFF_MAGIC):
        _require(head, 12)
        if head[8:12] == b"WEBP":
            return "webp"
        form = head[8:12].decode("latin-1").strip()
        raise _unsupported(f"a RIFF {form!r} file")
    if any(magic.startswith(head) for magic in (_JPEG_MAGIC, _PNG_MAGIC, _RIFF_MAGIC)):
        raise NeedMoreBytes(needed=12, have=len(head))
    raise _unsupported(_describe_unsupported(head))


def _describe_unsupported(head: bytes) -> str | None:
    for magic, name in _KNOWN_UNSUPPORTED:
        if head.startswith(magic):
            return name
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _AVIF_BRANDS:
            return "AVIF"
        if brand in _HEIF_BRANDS:
            return "HEIC/HEIF"
        return "an ISO media (MP4/QuickTime) file"
    return _describe_text(head)


def _describe_text(head: bytes) -> str | None:
    sample = head[:4096]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError:
        # The sample may end inside a multi-byte character; that alone does not make it binary.
        try:
            text = sample[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return None
    text = text.lstrip("\ufeff \t\r\n").lower()
    if text.startswith("<"):
        if "<svg" in text:
            return "SVG"
        if "<html" in text or text.startswith("<!doctype html"):
            return "HTML"
        return "XML"
    if all(char.isprintable() or char in "\t\r\n" for char in text):
        return "plain text"
    return None


def _unsupported(detected: str | None) -> InvalidImage:
    what = f"detected {detected}" if detected else "the format is not recognised"
    return InvalidImage(f"not a supported image: {what}; {SUPPORTED_FORMATS_HINT}", code="UNSUPPORTED_FORMAT")


def _corrupt(reason: str) -> InvalidImage:
    return InvalidImage(f"the image is corrupt or truncated: {reason}", code="CORRUPT_IMAGE")


def _require(head: bytes, end: int) -> None:
    if len(head) < end:
        raise NeedMoreBytes(needed=end, have=len(head))


def _uint(head: bytes, start: int, length: int, byteorder: Literal["big", "little"]) -> int:
    _require(head, start + length)
    return int.from_bytes(head[start : start + length], byteorder)


# --- JPEG ---------------------------------------------------------------------------

# Frame headers: SOF0-3, 5-7, 9-11, 13-15. C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_JPEG_SOF_MARKERS = frozenset(
    {*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0)}
)
# Markers without a length field: TEM and RST0-7.
_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
_JPEG_SOS, _JPEG_EOI = 0xDA, 0xD9


def _jpeg_size(head: bytes) -> tuple[int, int]:
    position = 2  # after SOI
    while True:
        if _uint(head, position, 1, "big") != 0xFF:
            raise _corrupt(f"JPEG marker expected at byte {position}")
        while _uint(head, position, 1, "big") == 0xFF:  # fill bytes before a marker
            position += 1
        marker = head[position]
        position += 1
        if marker in _JPEG_STANDALONE_MARKERS:
            continue
        if marker in (0x00, 0xD8, _JPEG_SOS, _JPEG_EOI):
            raise _corrupt(f"JPEG marker 0x{marker:02X} before any frame header")
        length = _uint(head, position, 2, "big")
        if length < 2:
            raise _corrupt(f"JPEG segment 0x{marker:02X} has length {length}")
        if marker in _JPEG_SOF_MARKERS:
            # Segment: length (2), sample precision (1), height (2), width (2).
            height = _uint(head, position + 3, 2, "big")
            width = _uint(head, position + 5, 2, "big")
            return width, height
        position += length


# --- PNG ----------------------------------------------------------------------------


def _png_size(head: bytes) -> tuple[int, int]:
    # Signature (8), then the IHDR chunk: length (4), type (4), width (4), height (4).
    _require(head, 24)
    if head[12:16] != b"IHDR":
        raise _corrupt("the PNG does not start with an IHDR chunk")
    return _uint(head, 16, 4, "big"), _uint(head, 20, 4, "big")


# --- BMP ----------------------------------------------------------------------------

_BMP_CORE_HEADER_SIZE = 12
_BMP_INFO_HEADER_MIN_SIZE = 40


def _bmp_size(head: bytes) -> tuple[int, int]:
    # File header (14), then the DIB header whose own size says which layout follows.
    dib_header_size = _uint(head, 14, 4, "little")
    if dib_header_size == _BMP_CORE_HEADER_SIZE:
        return _uint(head, 18, 2, "little"), _uint(head, 20, 2, "little")
    if dib_header_size >= _BMP_INFO_HEADER_MIN_SIZE:
        _require(head, 26)
        width = int.from_bytes(head[18:22], "little", signed=True)
        # A negative height marks a top-down bitmap.
        height = abs(int.from_bytes(head[22:26], "little", signed=True))
        return width, height
    raise _corrupt(f"unknown BMP header size {dib_header_size}")


# --- WEBP ---------------------------------------------------------------------------

_VP8_START_CODE = b"\x9d\x01\x2a"
_VP8L_SIGNATURE = 0x2F
_FOURTEEN_BITS = 0x3FFF


def _webp_size(head: bytes) -> tuple[int, int]:
    # "RIFF", size (4), "WEBP", then the first chunk: fourcc (4), size (4), payload at 20.
    _require(head, 20)
    chunk = head[12:16]
    if chunk == b"VP8 ":
        # Lossy: frame tag (3), start code (3), then 14-bit width and height (top 2 bits scale).
        _require(head, 30)
        if head[23:26] != _VP8_START_CODE:
            raise _corrupt("the WEBP VP8 frame has no start code")
        return (
            _uint(head, 26, 2, "little") & _FOURTEEN_BITS,
            _uint(head, 28, 2, "little") & _FOURTEEN_BITS,
        )
    if chunk == b"VP8L":
        # Lossless: signature byte, then width-1 and height-1 as 14-bit fields, LSB first.
        if _uint(head, 20, 1, "little") != _VP8L_SIGNATURE:
            raise _corrupt("the WEBP VP8L stream has no signature")
        bits = _uint(head, 21, 4, "little")
        return (bits & _FOURTEEN_BITS) + 1, ((bits >> 14) & _FOURTEEN_BITS) + 1
    if chunk == b"VP8X":
        # Extended: flags (1), reserved (3), canvas width-1 (3), canvas height-1 (3).
        return _uint(head, 24, 3, "little") + 1, _uint(head, 27, 3, "little") + 1
    raise _corrupt(f"unknown first WEBP chunk {chunk!r}")


_PARSERS: dict[ImageFormat, Callable[[bytes], tuple[int, int]]] = {
    "jpeg": _jpeg_size,
    "png": _png_size,
    "bmp": _bmp_size,
    "webp": _webp_size,
}
