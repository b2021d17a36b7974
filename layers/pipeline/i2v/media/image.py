"""Validate an uploaded image against the provider's rules, before any paid call.

Two reads, both without an imaging library in the Lambda package. The head
(`read_image_info`) gives the format from magic bytes (never from the file name) and width
and height from the format's own header, which lies in the first few hundred bytes of any
supported file (a JPEG may put large metadata segments before its frame header, so its
head can grow, within a cap). The route's rules are checked on those facts. Only then, for
an image that would be paid for, the whole file is walked (`verify_image`): an image a
decoder cannot read to its end is refused, in bounded memory and time, whatever its header
says (decision 13).

Rules (HappyHorse 1.0 image-to-video): JPEG, PNG, BMP or WEBP; each side at least
300 px; at most 10 MiB; aspect ratio between 1:2.5 and 2.5:1 inclusive.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator
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
                raise _truncated(f"the file ends after {size} bytes, inside its header") from None
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


# --- the whole file: can a decoder read it to its end? ------------------------------------

# Bytes per ranged GET of the whole-file walk: what it holds in memory at once, beside one
# inflated piece of a PNG (INFLATE_PIECE_BYTES) and the head of a JPEG segment (<= 64 KiB).
READ_CHUNK_BYTES = 1024 * 1024
INFLATE_PIECE_BYTES = 256 * 1024


def verify_image(read_range: Callable[[int, int], bytes], size: int, info: ImageInfo) -> None:
    """Walk the whole `size`-byte file as a decoder would, or raise InvalidImage with why not.

    Call it after the route's rules accepted `info` (read_image_info's), so the file is at
    most the route's byte limit and its pixels at most its pixel limit. PNG: every chunk and
    its CRC up to IEND, the image data inflated (in pieces, never held) to exactly the size
    the IHDR implies, each row's filter type valid. JPEG: every segment and every scan's
    entropy-coded data up to EOI, quantization tables and scan components defined. WEBP: the
    RIFF size against the file, every chunk inside it, the frame headers. BMP: the pixel
    array the header describes against the file. Bytes after the format's end (a ZIP or an
    HTML page appended, a phone's motion-photo video) are left alone, as decoders do.
    """
    stream = _Stream(read_range, size)
    _VERIFIERS[info.format](stream, info)


def _truncated(reason: str) -> InvalidImage:
    return InvalidImage(f"the image is cut short: {reason}; upload the whole file", code="TRUNCATED_IMAGE")


class _Stream:
    """The file's bytes in order, one ranged read of READ_CHUNK_BYTES at a time.

    `position` is the file offset of the next byte. `skip` moves on without reading what
    it passes over, when those bytes are not already held.
    """

    def __init__(self, read_range: Callable[[int, int], bytes], size: int) -> None:
        self._read_range = read_range
        self.size = size
        self._buffer = b""
        self._offset = 0  # of `position` in the buffer
        self.position = 0

    def _held(self) -> int:
        return len(self._buffer) - self._offset

    def _load(self, what: str) -> None:
        """Append the next chunk after what is held; raise when the file has no more."""
        start = self.position + self._held()
        if start >= self.size:
            raise _truncated(f"the file ends after {self.size} bytes, inside {what}")
        data = self._read_range(start, min(self.size, start + READ_CHUNK_BYTES) - 1)
        if not data:
            raise _corrupt(f"the file ended at byte {start}, before its stated size of {self.size}")
        self._buffer = self._buffer[self._offset :] + data
        self._offset = 0

    def take(self, count: int, what: str) -> bytes:
        """The next `count` bytes (a header or a segment: small)."""
        while self._held() < count:
            self._load(what)
        data = self._buffer[self._offset : self._offset + count]
        self._offset += count
        self.position += count
        return data

    def pieces(self, count: int, what: str) -> Iterator[bytes]:
        """The next `count` bytes, at most one chunk at a time."""
        while count:
            if not self._held():
                self._load(what)
            piece = self._buffer[self._offset : self._offset + min(count, self._held())]
            self._offset += len(piece)
            self.position += len(piece)
            count -= len(piece)
            yield piece

    def skip(self, count: int, what: str) -> None:
        if self.position + count > self.size:
            raise _truncated(
                f"the file ends after {self.size} bytes, inside {what} "
                f"({self.position + count - self.size} bytes short)"
            )
        if count <= self._held():
            self._offset += count
        else:
            self._buffer, self._offset = b"", 0
        self.position += count

    def window(self, what: str) -> tuple[bytes, int]:
        """The bytes held from `position` on (loading more if none) and where they start."""
        if not self._held():
            self._load(what)
        return self._buffer, self._offset

    def advance(self, count: int) -> None:
        """Move on by `count` bytes of the window."""
        self._offset += count
        self.position += count


# --- PNG, whole ---------------------------------------------------------------------------

_PNG_MAX_CHUNK_LENGTH = 2**31 - 1
# Chunks read whole have a fixed length: a claim of more is refused before it is read.
_PNG_FIXED_LENGTHS = {b"IHDR": 13, b"acTL": 8}
# Channels per colour type; the bit depths each allows (PNG specification, 11.2.2).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_PNG_BIT_DEPTHS = {0: {1, 2, 4, 8, 16}, 2: {8, 16}, 3: {1, 2, 4, 8}, 4: {8, 16}, 6: {8, 16}}
# Adam7: (first column, first row, column step, row step) of each of the 7 passes.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_PNG_FILTER_TYPES = bytes(range(5))


def _png_rows(ihdr: bytes) -> list[tuple[int, int]]:
    """(rows, bytes per row with its filter byte) of each pass the IHDR describes."""
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", ihdr)
    if depth not in _PNG_BIT_DEPTHS.get(colour, ()):
        raise _corrupt(f"the PNG's IHDR gives colour type {colour} with bit depth {depth}")
    if compression or filtering or interlace > 1:
        raise _corrupt(
            f"the PNG's IHDR gives compression {compression}, filter {filtering}, interlace {interlace}"
        )
    bits = _PNG_CHANNELS[colour] * depth
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    rows = []
    for column, row, column_step, row_step in passes:
        pass_width = max(0, (width - column + column_step - 1) // column_step)
        pass_height = max(0, (height - row + row_step - 1) // row_step)
        if pass_width and pass_height:
            rows.append((pass_height, 1 + (pass_width * bits + 7) // 8))
    return rows


class _PngImageData:
    """The IDAT stream inflated piece by piece: only counted and its filter bytes checked.

    Decoders stop once every row is decoded, so inflation stops there too: a stream that
    would inflate further (a bomb) costs no more than the image's own size.
    """

    def __init__(self, rows: list[tuple[int, int]]) -> None:
        self._inflater = zlib.decompressobj()
        self._passes = rows
        self.expected = sum(count * stride for count, stride in rows)
        self.inflated = 0
        self._pass = 0
        self._in_pass = 0  # bytes of the current pass seen

    def feed(self, data: bytes) -> None:
        while data and self.inflated < self.expected:
            try:
                piece = self._inflater.decompress(
                    data, min(INFLATE_PIECE_BYTES, self.expected - self.inflated)
                )
            except zlib.error as exc:
                raise _corrupt(f"the PNG's image data does not inflate ({exc})") from None
            self._check_filters(piece)
            self.inflated += len(piece)
            data = self._inflater.unconsumed_tail
            if self._inflater.eof:
                return

    def _check_filters(self, piece: bytes) -> None:
        start = 0
        while start < len(piece):
            count, stride = self._passes[self._pass]
            span = min(len(piece) - start, count * stride - self._in_pass)
            # The filter bytes are the pass's bytes at multiples of the row's stride.
            first = (-self._in_pass) % stride
            filters = piece[start + first : start + span : stride]
            if filters.translate(None, _PNG_FILTER_TYPES):
                raise _corrupt("a row of the PNG's image data has an unknown filter type")
            start += span
            self._in_pass += span
            if self._in_pass == count * stride:
                self._pass, self._in_pass = self._pass + 1, 0


def _verify_png(stream: _Stream, info: ImageInfo) -> None:
    stream.skip(len(_PNG_MAGIC), "the PNG signature")
    image_data: _PngImageData | None = None
    previous = b""
    while previous != b"IEND":
        length, chunk_type = struct.unpack(">I4s", stream.take(8, "a PNG chunk header"))
        what = f"the PNG's {chunk_type.decode('latin-1')} chunk at byte {stream.position - 8}"
        if length > _PNG_MAX_CHUNK_LENGTH or _PNG_FIXED_LENGTHS.get(chunk_type, length) != length:
            raise _corrupt(f"{what} claims {length} bytes")
        if image_data is None:  # the IHDR: the head check saw that it comes first
            ihdr = stream.take(length, what)
            crc = zlib.crc32(ihdr, zlib.crc32(chunk_type))
            image_data = _PngImageData(_png_rows(ihdr))
        else:
            crc = _png_chunk_crc(stream, chunk_type, length, what, image_data, previous)
        if int.from_bytes(stream.take(4, f"the CRC of {what}"), "big") != crc:
            raise _corrupt(f"the CRC of {what} does not match its bytes")
        previous = chunk_type
    assert image_data is not None
    if image_data.inflated < image_data.expected:
        raise _corrupt(
            f"the PNG's image data inflates to {image_data.inflated} bytes; "
            f"{info.width}x{info.height} px need {image_data.expected}"
        )


def _png_chunk_crc(
    stream: _Stream, chunk_type: bytes, length: int, what: str, image_data: _PngImageData, previous: bytes
) -> int:
    """Read one chunk after the IHDR (its image data inflated) and return its CRC."""
    crc = zlib.crc32(chunk_type)
    if chunk_type == b"acTL":  # an APNG: the frame count comes first
        body = stream.take(length, what)
        if int.from_bytes(body[:4], "big") > 1:
            _refuse_animation("PNG (APNG)")
        return zlib.crc32(body, crc)
    if chunk_type == b"IDAT" and image_data.inflated and previous != b"IDAT":
        raise _corrupt("the PNG's IDAT chunks are not consecutive")
    for piece in stream.pieces(length, what):
        crc = zlib.crc32(piece, crc)
        if chunk_type == b"IDAT":
            image_data.feed(piece)
    return crc


def _refuse_animation(kind: str) -> None:
    raise InvalidImage(
        f"the image is an animated {kind}; upload a still image (its first frame as JPEG, PNG or WEBP)",
        code="ANIMATED_IMAGE",
    )


# --- JPEG, whole --------------------------------------------------------------------------

_JPEG_DQT, _JPEG_RST = 0xDB, frozenset(range(0xD0, 0xD8))


# A frame's components: each id -> the quantization table it uses.
_JpegFrame = dict[int, int]


def _verify_jpeg(stream: _Stream, info: ImageInfo) -> None:
    """Every segment and every scan, in order, up to EOI: a file cut short has no EOI."""
    stream.skip(2, "the JPEG's start marker")
    frame: _JpegFrame | None = None
    tables: set[int] = set()
    scans = 0
    marker = _jpeg_marker(stream, "a JPEG segment")
    while marker != _JPEG_EOI:
        if marker == 0xD8:
            raise _corrupt(f"JPEG start marker out of place at byte {stream.position - 2}")
        if marker in _JPEG_STANDALONE_MARKERS:
            marker = _jpeg_marker(stream, "a JPEG segment")
            continue
        what = f"the JPEG's 0x{marker:02X} segment at byte {stream.position - 2}"
        length = int.from_bytes(stream.take(2, what), "big")
        if length < 2:
            raise _corrupt(f"{what} has length {length}")
        body = stream.take(length - 2, what)
        if marker in _JPEG_SOF_MARKERS:
            frame = _jpeg_frame(body, what)
        elif marker == _JPEG_DQT:
            tables |= _jpeg_tables(body, what)
        elif marker == _JPEG_SOS:
            scans += 1
            _check_jpeg_scan(body, frame, tables, scans)
            marker = _skip_entropy_data(stream, scans)
            continue
        marker = _jpeg_marker(stream, "a JPEG segment")
    if not scans:
        raise _corrupt("the JPEG ends before any image data (no scan)")


def _jpeg_marker(stream: _Stream, what: str) -> int:
    """The next marker's code, after any fill bytes."""
    if stream.take(1, what) != b"\xff":
        raise _corrupt(f"JPEG marker expected at byte {stream.position - 1}")
    code = 0xFF
    while code == 0xFF:
        code = stream.take(1, what)[0]
    if code == 0x00:
        raise _corrupt(f"JPEG marker expected at byte {stream.position - 2}")
    return code


def _jpeg_frame(body: bytes, what: str) -> _JpegFrame:
    # Precision (1), height (2), width (2), count (1), then id, sampling, table per component.
    if len(body) < 6 or len(body) < 6 + 3 * body[5]:
        raise _corrupt(f"{what} (a frame header) is too short")
    return {body[i]: body[i + 2] for i in range(6, 6 + 3 * body[5], 3)}


def _jpeg_tables(body: bytes, what: str) -> set[int]:
    """The table ids one DQT segment defines: each is (precision << 4 | id) then 64 values."""
    defined, position = set(), 0
    while position < len(body):
        precision, table = body[position] >> 4, body[position] & 0x0F
        position += 1 + 64 * (precision + 1)
        if precision > 1 or position > len(body):
            raise _corrupt(f"{what} (quantization tables) is malformed")
        defined.add(table)
    return defined


def _check_jpeg_scan(body: bytes, frame: _JpegFrame | None, tables: set[int], scan: int) -> None:
    if frame is None:
        raise _corrupt("the JPEG's image data starts before its frame header")
    missing = sorted({table for table in frame.values() if table not in tables})
    if missing:
        raise _corrupt(f"the JPEG's quantization table {missing[0]} is used but never defined")
    count = body[0] if body else 0
    scanned = {body[1 + 2 * i] for i in range(count) if 1 + 2 * i < len(body)}
    if not count or len(body) < 1 + 2 * count + 3 or not scanned <= set(frame):
        raise _corrupt(f"the JPEG's scan {scan} header does not match its frame's components")


def _skip_entropy_data(stream: _Stream, scan: int) -> int:
    """Move past one scan's entropy-coded data; the marker that ends it.

    Inside it, 0xFF is followed by 0x00 (a stuffed byte) or RST0-7; anything else is the
    next marker.
    """
    what = f"the JPEG's scan {scan} (image data), with no end-of-image marker"
    while True:
        window, start = stream.window(what)
        found = window.find(b"\xff", start)
        if found < 0:
            stream.advance(len(window) - start)
            continue
        stream.advance(found - start + 1)
        code = stream.take(1, what)[0]
        while code == 0xFF:
            code = stream.take(1, what)[0]
        if code != 0x00 and code not in _JPEG_RST:
            return code


# --- WEBP, whole --------------------------------------------------------------------------

_WEBP_ANIMATION_FLAG = 0x02
_VP8X_LENGTH = 10


def _verify_webp(stream: _Stream, info: ImageInfo) -> None:
    """The RIFF size against the file, then every chunk inside it.

    libwebp refuses a file shorter than its RIFF size says, and reads nothing after it.
    """
    riff_end = 8 + int.from_bytes(stream.take(12, "the WEBP header")[4:8], "little")
    if riff_end > stream.size:
        raise _truncated(
            f"the WEBP's RIFF header says {riff_end} bytes and the file has {stream.size} "
            f"({riff_end - stream.size} bytes short)"
        )
    frames = 0
    while stream.position + 8 <= riff_end:
        fourcc, length = struct.unpack("<4sI", stream.take(8, "a WEBP chunk header"))
        name = fourcc.decode("latin-1")
        what = f"the WEBP's {name!r} chunk at byte {stream.position - 8}"
        padded = length + (length & 1)
        if stream.position + padded > riff_end:
            raise _corrupt(f"{what} runs {stream.position + padded - riff_end} bytes past the RIFF's end")
        if fourcc == b"VP8X":
            if length != _VP8X_LENGTH:
                raise _corrupt(f"{what} claims {length} bytes, not {_VP8X_LENGTH}")
            if stream.take(1, what)[0] & _WEBP_ANIMATION_FLAG:
                _refuse_animation("WEBP")
            padded -= 1
        elif fourcc in (b"VP8 ", b"VP8L"):
            frames += 1
            header = stream.take(min(length, 10), what)
            _check_webp_frame(fourcc, header, length, info, what)
            padded -= len(header)
        stream.skip(padded, what)
    if stream.position != riff_end:
        raise _corrupt(f"the WEBP's last chunk header is cut by the RIFF's end at byte {riff_end}")
    if frames != 1:
        raise _corrupt(f"the WEBP holds {frames} image frames; a still image has one")


def _check_webp_frame(fourcc: bytes, header: bytes, length: int, info: ImageInfo, what: str) -> None:
    if fourcc == b"VP8 ":
        # Frame tag: bit 0 clear for a key frame; its top 19 bits, the first partition's size.
        tag = int.from_bytes(header[:3], "little")
        if len(header) < 10 or tag & 1 or (tag >> 5) > length - 10 or header[3:6] != _VP8_START_CODE:
            raise _corrupt(f"{what} is not a VP8 key frame that fits in its chunk")
        width = int.from_bytes(header[6:8], "little") & _FOURTEEN_BITS
        height = int.from_bytes(header[8:10], "little") & _FOURTEEN_BITS
    else:
        bits = int.from_bytes(header[1:5], "little")
        if len(header) < 5 or header[0] != _VP8L_SIGNATURE or bits >> 29:
            raise _corrupt(f"{what} is not a VP8L stream of version 0")
        width, height = (bits & _FOURTEEN_BITS) + 1, ((bits >> 14) & _FOURTEEN_BITS) + 1
    if (width, height) != (info.width, info.height):
        raise _corrupt(f"{what} is {width}x{height} px inside a {info.width}x{info.height} px canvas")


# --- BMP, whole ---------------------------------------------------------------------------

_BMP_RGB, _BMP_RLE8, _BMP_RLE4, _BMP_BITFIELDS, _BMP_ALPHABITFIELDS = 0, 1, 2, 3, 6
_BMP_BIT_COUNTS = frozenset({1, 4, 8, 16, 24, 32})


def _verify_bmp(stream: _Stream, info: ImageInfo) -> None:
    """The pixel array the headers describe, against the file's size (nothing else to walk)."""
    header = stream.take(min(stream.size, 54), "the BMP header")
    pixels_at = int.from_bytes(header[10:14], "little")
    core = int.from_bytes(header[14:18], "little") == _BMP_CORE_HEADER_SIZE
    if core:
        bit_count, compression, stated = int.from_bytes(header[24:26], "little"), _BMP_RGB, 0
    elif len(header) < 38:
        raise _truncated(f"the file ends after {stream.size} bytes, inside the BMP header")
    else:
        bit_count = int.from_bytes(header[28:30], "little")
        compression = int.from_bytes(header[30:34], "little")
        stated = int.from_bytes(header[34:38], "little")
    if bit_count not in _BMP_BIT_COUNTS:
        raise _corrupt(f"the BMP has {bit_count} bits per pixel")
    if compression in (_BMP_RLE8, _BMP_RLE4):
        # Run-length data has no size of its own but the one the header states.
        needed = pixels_at + max(stated, 1)
    elif compression in (_BMP_RGB, _BMP_BITFIELDS, _BMP_ALPHABITFIELDS):
        # Rows are padded to 4 bytes; decoders do not need the last row's padding.
        stride = (info.width * bit_count + 31) // 32 * 4
        needed = pixels_at + stride * (info.height - 1) + (info.width * bit_count + 7) // 8
    else:
        raise _corrupt(f"the BMP uses compression {compression}, which decoders do not read")
    if needed > stream.size:
        raise _truncated(
            f"the BMP's pixel array ends at byte {needed} and the file has {stream.size} "
            f"({needed - stream.size} bytes short)"
        )


_VERIFIERS: dict[ImageFormat, Callable[[_Stream, ImageInfo], None]] = {
    "png": _verify_png,
    "jpeg": _verify_jpeg,
    "webp": _verify_webp,
    "bmp": _verify_bmp,
}
