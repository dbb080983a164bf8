"""Image headers read before decoding, so that a hostile header cannot make a decoder allocate gigabytes.

OpenCV allocates the image its header declares before it finds out that the data is missing (a 4 KB PNG can
claim 40000x40000 pixels; a corrupt chunk length drove its PNG reader to 4.4 GiB). `check_image_header` parses
the headers of the formats the toolkit reads (PNG, PNM, BMP, JPEG) and refuses, before any decoding:

- images of more than `MAX_IMAGE_PIXELS` pixels (100 megapixels: 10x a 4K frame, ~300 MB as 8-bit RGB);
- headers inconsistent with the file where that is checkable: PNG chunks longer than the file, PNG pixel data
  larger than its compressed data could hold (deflate cannot exceed `MAX_DEFLATE_RATIO`:1), uncompressed PNM and
  BMP rasters larger than the file, JPEG segments longer than the file;
- malformed headers (zero sizes, unknown bit depths).

Other formats return None and are left to the decoder. The JPEG and run-length BMP payload sizes are not
checked: entropy coding and RLE escapes have no useful bound on the pixels a byte can describe.
Parsers raise `HeaderError(reason)`; the caller adds the file name.
"""
from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from typing import Optional

MAX_IMAGE_PIXELS = 100_000_000
MAX_DEFLATE_RATIO = 1032  # deflate's limit: 258-byte matches coded in 2 bits (zlib reaches ~1030:1 on zeros)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> (channels, allowed bit depths); type 3 is palette-indexed (one index per pixel).
_PNG_COLOUR = {0: (1, (1, 2, 4, 8, 16)), 2: (3, (8, 16)), 3: (1, (1, 2, 4, 8)), 4: (2, (8, 16)), 6: (4, (8, 16))}
_PNM_TOKEN = re.compile(rb"(?:\s|#[^\n]*\n)*(\d{1,10})(?!\d)")  # whitespace and comments, then a number
_PAM_LINE = re.compile(rb"(WIDTH|HEIGHT|DEPTH|MAXVAL)\s+(\d{1,10})")


class HeaderError(ValueError):
    """A malformed, inconsistent or too large image header; the message says what and what was expected."""


@dataclass(frozen=True)
class ImageHeader:
    """What a header declares: format name, size in pixels, channels and bits per channel (0 if unknown)."""

    format: str
    width: int
    height: int
    channels: int
    bit_depth: int


def check_image_header(data: bytes) -> Optional[ImageHeader]:
    """The declared header of a PNG, PNM (P1-P7), BMP or JPEG file, checked; None for other formats."""
    if data.startswith(PNG_SIGNATURE):
        header = _png(data)
    elif len(data) >= 2 and data[0:1] == b"P" and data[1:2] in b"1234567":
        header = _pnm(data)
    elif data.startswith(b"BM"):
        header = _bmp(data)
    elif data.startswith(b"\xff\xd8"):
        header = _jpeg(data)
    else:
        return None
    return header


def _check_size(kind: str, width: int, height: int) -> None:
    """Positive and within the pixel limit; every parser calls this before its file-size checks."""
    if width < 1 or height < 1:
        raise HeaderError(f"{kind} header declares {width}x{height} pixels (expected a positive width and height)")
    if width * height > MAX_IMAGE_PIXELS:
        raise HeaderError(f"{kind} header declares {width}x{height} pixels, more than the "
                          f"{MAX_IMAGE_PIXELS // 1_000_000} megapixel limit")


# --------------------------------------------------------------------------------------------- PNG
def _png(data: bytes) -> ImageHeader:
    """Walk the chunks: IHDR first, every declared length inside the file, IEND reached."""
    offset, ihdr, idat_bytes = len(PNG_SIGNATURE), None, 0
    while True:
        if offset + 12 > len(data):
            raise HeaderError("PNG ends before its IEND chunk (truncated file)")
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if length > 2**31 - 1 or offset + 12 + length > len(data):
            raise HeaderError(f"PNG chunk {kind!r} declares {length} bytes, only {len(data) - offset - 12} remain "
                              "(corrupt length or truncated file)")
        body = data[offset + 8:offset + 8 + length]
        if ihdr is None:
            if kind != b"IHDR" or length != 13:
                raise HeaderError("PNG does not start with a 13-byte IHDR chunk")
            if struct.unpack(">I", data[offset + 8 + length:offset + 12 + length])[0] != zlib.crc32(kind + body):
                raise HeaderError("PNG IHDR chunk fails its CRC (corrupt header)")
            ihdr = body
        elif kind == b"IDAT":
            idat_bytes += length
        elif kind == b"IEND":
            break
        offset += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", ihdr[:10])
    if colour not in _PNG_COLOUR or depth not in _PNG_COLOUR[colour][1]:
        raise HeaderError(f"PNG bit depth {depth} with colour type {colour} is not allowed by the PNG standard")
    _check_size("PNG", width, height)
    channels = _PNG_COLOUR[colour][0]
    raw_bytes = height * ((width * channels * depth + 7) // 8)  # at least this much after inflating
    if raw_bytes > MAX_DEFLATE_RATIO * idat_bytes:
        raise HeaderError(f"PNG declares {width}x{height} pixels ({raw_bytes} bytes) but holds {idat_bytes} bytes "
                          f"of compressed data (deflate cannot expand more than {MAX_DEFLATE_RATIO}:1)")
    return ImageHeader("PNG", width, height, 3 if colour == 3 else channels, depth)


# --------------------------------------------------------------------------------------------- PNM
def _pnm(data: bytes) -> ImageHeader:
    kind = data[1] - ord("0")
    if kind == 7:
        return _pam(data)
    numbers, offset = [], 2
    for _ in range(2 if kind in (1, 4) else 3):  # width, height (and maxval except for bitmaps)
        match = _PNM_TOKEN.match(data, offset)
        if match is None:
            raise HeaderError(f"bad P{kind} header (expected width, height{'' if kind in (1, 4) else ', maxval'} "
                              "as numbers of at most 10 digits)")
        numbers.append(int(match.group(1)))
        offset = match.end() + 1  # like OpenCV (and netpbm), any one byte ends a number
    width, height = numbers[:2]
    maxval = numbers[2] if len(numbers) == 3 else 1
    _check_size(f"P{kind}", width, height)
    if not 1 <= maxval <= 65535:
        raise HeaderError(f"P{kind} maximum value {maxval} (expected 1 to 65535)")
    channels = 3 if kind in (3, 6) else 1
    sample = 1 if maxval < 256 else 2
    samples = width * height * channels
    if kind == 4:
        needed = height * ((width + 7) // 8)
    elif kind in (5, 6):
        needed = samples * sample
    else:  # ASCII: a digit per sample at least (P1 may omit separators), separators between P2/P3 samples
        needed = samples if kind == 1 else 2 * samples - 1
    available = len(data) - offset
    if needed > available:
        raise HeaderError(f"P{kind} header declares {width}x{height} pixels needing {needed} bytes, "
                          f"the file holds {max(available, 0)} (truncated or corrupt)")
    return ImageHeader(f"P{kind}", width, height, channels, 8 * sample if kind not in (1, 4) else 1)


def _pam(data: bytes) -> ImageHeader:
    end = data.find(b"ENDHDR", 0, 4096)
    if end < 0:
        raise HeaderError("P7 (PAM) header has no ENDHDR within 4096 bytes")
    fields = {key.decode(): int(value) for key, value in _PAM_LINE.findall(data[:end])}
    if not {"WIDTH", "HEIGHT", "DEPTH", "MAXVAL"} <= set(fields):
        raise HeaderError("P7 (PAM) header lacks WIDTH, HEIGHT, DEPTH or MAXVAL (numbers of at most 10 digits)")
    width, height, depth, maxval = (fields[k] for k in ("WIDTH", "HEIGHT", "DEPTH", "MAXVAL"))
    _check_size("P7 (PAM)", width, height)
    if not (1 <= depth <= 4 and 1 <= maxval <= 65535):
        raise HeaderError(f"P7 (PAM) depth {depth} / maxval {maxval} (expected 1-4 and 1-65535)")
    needed = width * height * depth * (1 if maxval < 256 else 2)
    if needed > len(data) - end - 7:
        raise HeaderError(f"P7 (PAM) header declares {width}x{height}x{depth} needing {needed} bytes, "
                          f"the file holds {len(data) - end - 7} (truncated or corrupt)")
    return ImageHeader("P7", width, height, depth, 8 if maxval < 256 else 16)


# --------------------------------------------------------------------------------------------- BMP
def _bmp(data: bytes) -> ImageHeader:
    if len(data) < 26:
        raise HeaderError(f"BMP header truncated ({len(data)} bytes, expected at least 26)")
    pixels_at, dib_size = struct.unpack("<II", data[10:18])
    if dib_size == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit sizes, no compression
        width, height, _, bpp = struct.unpack("<HHHH", data[18:26])
        compression = 0
    elif dib_size >= 40 and len(data) >= 34:
        width, height, _, bpp, compression = struct.unpack("<iiHHI", data[18:34])
    else:
        raise HeaderError(f"BMP info header of {dib_size} bytes (expected 12, 40 or more) or truncated")
    height = abs(height)  # negative: rows stored top-down
    _check_size("BMP", width, height)
    if bpp not in (1, 2, 4, 8, 16, 24, 32):
        raise HeaderError(f"BMP with {bpp} bits per pixel (expected 1, 2, 4, 8, 16, 24 or 32)")
    if compression in (0, 3, 6):  # uncompressed rows, padded to 4 bytes
        needed = height * (((width * bpp + 31) // 32) * 4)
        if pixels_at + needed > len(data):
            raise HeaderError(f"BMP declares {width}x{height} pixels needing {needed} bytes from offset "
                              f"{pixels_at}, the file has {len(data)} bytes (truncated or corrupt)")
    return ImageHeader("BMP", width, height, 4 if bpp == 32 else 3, 8)


# --------------------------------------------------------------------------------------------- JPEG
_SOF_MARKERS = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers (not DHT, JPG, DAC)


def _jpeg(data: bytes) -> ImageHeader:
    """Walk the marker segments up to the first frame header (SOFn): size, precision, components."""
    offset = 2
    while True:
        while offset < len(data) and data[offset] == 0xFF and offset + 1 < len(data) and data[offset + 1] == 0xFF:
            offset += 1  # fill bytes
        if offset < len(data) and data[offset] != 0xFF:  # libjpeg skips extraneous bytes up to a marker: so do we
            offset = data.find(b"\xff", offset)
            offset = len(data) if offset < 0 else offset
            continue
        if offset + 4 > len(data):
            raise HeaderError("JPEG ends before its frame header (SOF): truncated or corrupt")
        marker = data[offset + 1]
        if marker == 0x00 or marker == 0x01 or 0xD0 <= marker <= 0xD8:  # stuffed zero, markers without a length
            offset += 2
            continue
        if marker in (0xD9, 0xDA):
            raise HeaderError("JPEG has no frame header (SOF) before its image data")
        length = struct.unpack(">H", data[offset + 2:offset + 4])[0]
        if length < 2 or offset + 2 + length > len(data):
            raise HeaderError(f"JPEG segment 0xFF{marker:02X} declares {length} bytes past the end of the file")
        if marker in _SOF_MARKERS:
            if length < 8:
                raise HeaderError(f"JPEG frame header of {length} bytes (expected at least 8)")
            precision, height, width, components = struct.unpack(">BHHB", data[offset + 4:offset + 10])
            if components not in (1, 3, 4):
                raise HeaderError(f"JPEG with {components} components (expected 1, 3 or 4)")
            _check_size("JPEG", width, height)
            return ImageHeader("JPEG", width, height, components, precision)
        offset += 2 + length
