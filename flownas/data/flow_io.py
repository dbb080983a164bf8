"""Optical-flow and image file I/O: Middlebury `.flo`, KITTI 16-bit `.png`, `.pfm` and `.npy`.

Conventions used throughout:
- a flow field is `np.float32 [H, W, 2]` holding (u, v) = (horizontal, vertical) displacement in pixels;
- a validity mask is `np.bool_ [H, W]`; flow values at invalid pixels are returned as 0 so that
  downstream arithmetic never meets the 1e10 "unknown" markers or NaNs;
- images are `np.uint8 [H, W, 3]` in RGB order (OpenCV's BGR is converted at this boundary only).

Every malformed input raises `FlowFormatError` with a single line naming the file and what was expected, before
anything large is allocated: image headers are checked by `image_headers.check_image_header` (at most
`MAX_IMAGE_PIXELS`, consistent with the file size) before OpenCV decodes them, `.npy` headers (dtype, shape,
data size) are checked before the array is built, `.flo`/`.pfm` sizes must match the file exactly.
Writers are atomic (temporary file in the destination folder, then `os.replace`), so an interrupted run
never leaves a half-written flow file that a later run would read as truncated.
"""
from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np

from ..fileio import atomic_write_bytes
from ..errors import ToolkitError, one_line
from .image_headers import MAX_IMAGE_PIXELS, HeaderError, ImageHeader, check_image_header

PathLike = Union[str, "os.PathLike[str]"]

FLO_MAGIC = 202021.25
FLO_UNKNOWN = 1e10  # written for invalid pixels; the Middlebury reader treats |value| > 1e9 as unknown
FLO_UNKNOWN_THRESHOLD = 1e9
KITTI_OFFSET = 2**15
KITTI_SCALE = 64.0
KITTI_MAX_FLOW = (65535 - KITTI_OFFSET) / KITTI_SCALE  # largest |u| a KITTI png can hold (~512 px)
FLOW_EXTENSIONS = (".flo", ".png", ".pfm", ".npy")
_PFM_HEADER = re.compile(rb"\A(PF|Pf)\s+(\d+)\s+(\d+)\s+(\S+)\s")
MAX_FLOW_PIXELS = MAX_IMAGE_PIXELS  # .npy flows: larger headers are refused before allocating (800 MB as float32)
NPY_FLOW_KINDS = "fiu"  # numpy dtype kinds a flow may be stored as: float, signed and unsigned integers


class FlowFormatError(ToolkitError, ValueError):
    """A flow or image file is missing, truncated, malformed or of an unsupported kind."""


# --------------------------------------------------------------------------------------------- helpers
def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FlowFormatError(f"{path}: file not found (expected {what})") from None
    except IsADirectoryError:
        raise FlowFormatError(f"{path}: is a folder (expected {what})") from None
    except OSError as exc:
        raise FlowFormatError(f"{path}: cannot read ({exc.strerror or type(exc).__name__}; expected {what})") from None
    except ValueError:  # an embedded NUL byte in the name
        raise FlowFormatError(f"{path}: not a usable file name (expected {what})") from None


def _decode_image(path: Path, data: bytes, what: str) -> tuple[np.ndarray, ImageHeader | None]:
    """OpenCV's decoding of `data` (IMREAD_UNCHANGED) after the header was checked, and that header."""
    if not data:
        raise FlowFormatError(f"{path}: empty file (expected {what})")
    try:
        header = check_image_header(data)
    except HeaderError as exc:
        raise FlowFormatError(f"{path}: {exc} (expected {what})") from None
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # OpenCV refuses some files by raising (size limits, failed allocations)
        reason = one_line(exc).split("error: ", 1)[-1]
        raise FlowFormatError(f"{path}: unreadable image (OpenCV: {reason}; expected {what})") from None
    if image is None:
        raise FlowFormatError(f"{path}: unreadable image (expected {what})")
    return image, header


def _suffix(path: Path, allowed: tuple[str, ...], action: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise FlowFormatError(f"{path}: unsupported extension {path.suffix!r} for {action} "
                              f"(expected one of {', '.join(allowed)})")
    return suffix


def _check_flow_array(flow: np.ndarray, path: Path) -> np.ndarray:
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2 or flow.shape[0] < 1 or flow.shape[1] < 1:
        raise FlowFormatError(f"{path}: flow to write must have shape [H, W, 2], got {list(flow.shape)}")
    return flow.astype(np.float32)


def _resolve_valid(flow: np.ndarray, valid: Optional[np.ndarray], path: Path) -> np.ndarray:
    """Validity to write: the given mask (if any) AND finite flow, since NaN/inf cannot be stored meaningfully."""
    finite = np.isfinite(flow).all(axis=2)
    if valid is None:
        return finite
    valid = np.asarray(valid)
    if valid.shape != flow.shape[:2]:
        raise FlowFormatError(f"{path}: valid mask shape {list(valid.shape)} does not match flow "
                              f"shape {list(flow.shape[:2])}")
    return valid.astype(bool) & finite


# --------------------------------------------------------------------------------------------- .flo
def _read_flo(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = _read_bytes(path, "a Middlebury .flo file")
    if len(data) < 12:
        raise FlowFormatError(f"{path}: truncated .flo header ({len(data)} bytes, expected at least 12)")
    magic = np.frombuffer(data, "<f4", 1, 0)[0]
    if magic != np.float32(FLO_MAGIC):
        raise FlowFormatError(f"{path}: wrong .flo magic {float(magic)!r} (expected {FLO_MAGIC})")
    width, height = (int(x) for x in np.frombuffer(data, "<i4", 2, 4))
    if width < 1 or height < 1:
        raise FlowFormatError(f"{path}: invalid .flo size {width}x{height} (expected positive W and H)")
    expected = 12 + 8 * width * height
    if len(data) != expected:
        raise FlowFormatError(f"{path}: .flo of {width}x{height} must be {expected} bytes, got {len(data)}")
    flow = np.frombuffer(data, "<f4", 2 * width * height, 12).reshape(height, width, 2).astype(np.float32)
    # NaN counts as unknown too: comparisons with NaN are False, so test "is a usable number" directly.
    valid = (np.abs(flow) <= FLO_UNKNOWN_THRESHOLD).all(axis=2)
    flow[~valid] = 0.0
    return flow, valid


def _encode_flo(flow: np.ndarray, valid: np.ndarray) -> bytes:
    height, width = flow.shape[:2]
    body = flow.copy()
    body[~valid] = FLO_UNKNOWN
    header = np.array([FLO_MAGIC], "<f4").tobytes() + np.array([width, height], "<i4").tobytes()
    return header + body.astype("<f4").tobytes()


# --------------------------------------------------------------------------------------------- KITTI png
def _read_kitti_png(path: Path) -> tuple[np.ndarray, np.ndarray]:
    what = "a KITTI 16-bit 3-channel flow png"
    data = _read_bytes(path, what)
    if data and not data.startswith(b"\x89PNG"):
        raise FlowFormatError(f"{path}: not a PNG file (expected {what})")
    raw, _ = _decode_image(path, data, what)
    if raw.dtype != np.uint16 or raw.ndim != 3 or raw.shape[2] != 3:
        channels = 1 if raw.ndim == 2 else raw.shape[2]
        raise FlowFormatError(f"{path}: got a {raw.dtype} png with {channels} channel(s) "
                              f"(expected a KITTI 16-bit 3-channel flow png)")
    # OpenCV gives BGR: B = valid flag, G = v, R = u.
    flow = (raw[:, :, 2:0:-1].astype(np.float32) - KITTI_OFFSET) / KITTI_SCALE
    valid = raw[:, :, 0] > 0
    flow[~valid] = 0.0
    return flow, valid


def _encode_kitti_png(flow: np.ndarray, valid: np.ndarray, path: Path) -> bytes:
    too_large = valid & (np.abs(flow) > KITTI_MAX_FLOW).any(axis=2)
    if too_large.any():
        raise FlowFormatError(f"{path}: {int(too_large.sum())} valid pixels exceed the KITTI png range "
                              f"|flow| <= {KITTI_MAX_FLOW:.2f} px")
    stored = np.where(valid[..., None], flow, 0.0)
    uv = np.rint(stored * KITTI_SCALE + KITTI_OFFSET).astype(np.uint16)
    bgr = np.dstack([valid.astype(np.uint16), uv[:, :, 1], uv[:, :, 0]])
    ok, buffer = cv2.imencode(".png", bgr)
    if not ok:
        raise FlowFormatError(f"{path}: OpenCV could not encode the KITTI png")
    return buffer.tobytes()


# --------------------------------------------------------------------------------------------- .pfm
def read_pfm(path: PathLike) -> np.ndarray:
    """Read a PFM file: `float32 [H, W, 3]` for `PF`, `[H, W]` for `Pf`, rows top-down."""
    path = Path(path)
    data = _read_bytes(path, "a .pfm file")
    match = _PFM_HEADER.match(data[:256])
    if match is None:
        raise FlowFormatError(f"{path}: bad PFM header (expected 'PF' or 'Pf', then 'W H', then a scale)")
    kind, width, height, scale_text = match.groups()
    try:
        scale = float(scale_text)
    except ValueError:
        raise FlowFormatError(f"{path}: bad PFM scale {scale_text[:20]!r} (expected a non-zero number)") from None
    width, height = int(width), int(height)  # at most ~250 digits: the header is matched in 256 bytes
    channels = 3 if kind == b"PF" else 1
    if width < 1 or height < 1 or scale == 0 or not math.isfinite(scale):
        raise FlowFormatError(f"{path}: bad PFM header {width}x{height} scale {scale} "
                              "(expected positive W, H and a non-zero scale)")
    count = width * height * channels
    offset = match.end()
    if len(data) - offset != 4 * count:
        raise FlowFormatError(f"{path}: PFM of {width}x{height}x{channels} needs {4 * count} data bytes, "
                              f"got {len(data) - offset}")
    dtype = "<f4" if scale < 0 else ">f4"  # negative scale means little-endian
    array = np.frombuffer(data, dtype, count, offset).astype(np.float32)
    shape = (height, width, channels) if channels == 3 else (height, width)
    # PFM stores the bottom row first.
    return np.ascontiguousarray(array.reshape(shape)[::-1])


def _encode_pfm(array: np.ndarray, path: Path) -> bytes:
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 3 and array.shape[2] == 2:
        # FlyingThings3D flow PFMs are 3-channel with a zero third channel.
        array = np.dstack([array, np.zeros(array.shape[:2], np.float32)])
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise FlowFormatError(f"{path}: PFM array must be [H, W], [H, W, 2] or [H, W, 3], got {list(array.shape)}")
    kind = b"PF" if array.ndim == 3 else b"Pf"
    height, width = array.shape[:2]
    header = kind + b"\n" + f"{width} {height}\n-1.0\n".encode("ascii")
    return header + np.ascontiguousarray(array[::-1]).astype("<f4").tobytes()


def write_pfm(path: PathLike, array: np.ndarray) -> None:
    """Write `array` ([H,W] -> 'Pf', [H,W,3] or flow [H,W,2] -> 'PF') as little-endian PFM, bottom row first."""
    path = Path(path)
    atomic_write_bytes(path, _encode_pfm(array, path))


def _read_pfm_flow(path: Path) -> tuple[np.ndarray, np.ndarray]:
    array = read_pfm(path)
    if array.ndim != 3:
        raise FlowFormatError(f"{path}: single-channel 'Pf' PFM cannot hold flow (expected a 3-channel 'PF' file)")
    flow = np.ascontiguousarray(array[:, :, :2])
    valid = np.isfinite(flow).all(axis=2)  # all True for well-formed files
    flow[~valid] = 0.0
    return flow, valid


# --------------------------------------------------------------------------------------------- .npy
_NPY_WHAT = "a .npy flow array [H, W, 2] of real numbers"


def _npy_header(path: Path, data: bytes) -> tuple[tuple, bool, np.dtype, int]:
    """(shape, fortran_order, dtype, data offset) from the header alone, nothing allocated yet."""
    if not data.startswith(b"\x93NUMPY"):
        kind = "a zip archive (.npz?)" if data.startswith(b"PK") else "no .npy magic"
        raise FlowFormatError(f"{path}: not a .npy file ({kind}; expected {_NPY_WHAT})")
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read(stream)
    except Exception as exc:  # numpy's header parser raises ValueError, TokenError, SyntaxError, RecursionError...
        raise FlowFormatError(f"{path}: unreadable .npy header ({type(exc).__name__}: {one_line(exc)[:120]}; "
                              f"expected {_NPY_WHAT})") from None
    return shape, fortran_order, dtype, stream.tell()


def _read_npy(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = _read_bytes(path, _NPY_WHAT)
    shape, fortran_order, dtype, offset = _npy_header(path, data)
    if dtype.kind not in NPY_FLOW_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise FlowFormatError(f"{path}: .npy holds {dtype} values (expected {_NPY_WHAT})")
    if len(shape) != 3 or shape[2] != 2 or shape[0] < 1 or shape[1] < 1:
        raise FlowFormatError(f"{path}: .npy holds an array of shape {list(shape)} (expected {_NPY_WHAT})")
    if shape[0] * shape[1] > MAX_FLOW_PIXELS:
        raise FlowFormatError(f"{path}: .npy declares {shape[0]}x{shape[1]} pixels, more than the "
                              f"{MAX_FLOW_PIXELS} pixel limit (expected {_NPY_WHAT})")
    count = shape[0] * shape[1] * 2
    if len(data) - offset != count * dtype.itemsize:
        raise FlowFormatError(f"{path}: .npy of shape {list(shape)} {dtype} needs {count * dtype.itemsize} data "
                              f"bytes, got {len(data) - offset} (truncated or corrupt)")
    array = np.frombuffer(data, dtype, count, offset).reshape(shape, order="F" if fortran_order else "C")
    flow = array.astype(np.float32)
    valid = np.isfinite(flow).all(axis=2)
    flow[~valid] = 0.0
    return flow, valid


def _encode_npy(flow: np.ndarray, valid: np.ndarray) -> bytes:
    stored = flow.copy()
    stored[~valid] = np.nan  # the reader marks non-finite pixels invalid
    buffer = io.BytesIO()
    np.save(buffer, stored, allow_pickle=False)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------- public API
_READERS = {".flo": _read_flo, ".png": _read_kitti_png, ".pfm": _read_pfm_flow, ".npy": _read_npy}


def read_flow(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a flow file chosen by extension (.flo, KITTI .png, .pfm, .npy).

    Returns `(flow, valid)`: `np.float32 [H, W, 2]` and `np.bool_ [H, W]`; flow is 0 where invalid.
    """
    path = Path(path)
    return _READERS[_suffix(path, FLOW_EXTENSIONS, "reading flow")](path)


def write_flow(path: PathLike, flow: np.ndarray, valid: Optional[np.ndarray] = None) -> None:
    """Atomically write `flow` (`[H, W, 2]`) with optional `valid` (`[H, W]` bool) as .flo, KITTI .png, .npy or .pfm.

    Invalid or non-finite pixels become 1e10 in .flo, valid=0 in KITTI png, NaN in .npy, 0 in .pfm.
    KITTI png quantises flow to 1/64 px and rejects valid values beyond about +-512 px.
    """
    path = Path(path)
    suffix = _suffix(path, (".flo", ".png", ".npy", ".pfm"), "writing flow")
    flow = _check_flow_array(flow, path)
    mask = _resolve_valid(flow, valid, path)
    if suffix == ".pfm":
        # PFM has no validity channel: invalid pixels are stored as zero flow (FlyingThings3D fixtures).
        write_pfm(path, np.where(mask[..., None], flow, 0.0))
        return
    if suffix == ".flo":
        data = _encode_flo(flow, mask)
    elif suffix == ".png":
        data = _encode_kitti_png(flow, mask, path)
    else:
        data = _encode_npy(flow, mask)
    atomic_write_bytes(path, data)


def read_image(path: PathLike) -> np.ndarray:
    """Read an 8-bit image as `np.uint8 [H, W, 3]` RGB (grayscale expanded, alpha dropped, 16-bit rejected).

    PNG, PNM, BMP and JPEG headers are checked before decoding (at most `MAX_IMAGE_PIXELS`, consistent with the
    file size); other formats OpenCV knows are decoded as they are.
    """
    path = Path(path)
    what = "an 8-bit PNG/PPM/JPEG/BMP image"
    image, _ = _decode_image(path, _read_bytes(path, what), what)
    if image.dtype != np.uint8:
        raise FlowFormatError(f"{path}: {image.dtype} image (expected 8 bits per channel; "
                              "16-bit pngs are flow files, read them with read_flow)")
    if image.ndim == 2:
        return np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))
    if image.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(image, 3, axis=2))
    if image.shape[2] not in (3, 4):
        raise FlowFormatError(f"{path}: image with {image.shape[2]} channels (expected 1, 3 or 4)")
    return np.ascontiguousarray(image[:, :, 2::-1])  # BGR(A) -> RGB, dropping alpha


def write_image(path: PathLike, image: np.ndarray) -> None:
    """Write uint8 RGB `[H,W,3]` atomically; the format follows the extension (.png, .ppm, .jpg ...)."""
    path = Path(path)
    ok, data = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(image[..., ::-1]))  # OpenCV is BGR
    if not ok:
        raise FlowFormatError(f"{path}: could not encode an image with extension {path.suffix!r}")
    atomic_write_bytes(path, data.tobytes())
