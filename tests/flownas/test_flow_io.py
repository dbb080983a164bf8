"""Flow and image file formats: round trips, hand-built files read independently, real data, bad input."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from flownas.data.flow_io import (FlowFormatError, read_flow, read_image, read_pfm, write_flow,
                                  write_pfm)


def _random_flow(height: int = 5, width: int = 7, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(height, width, 2)) * 20).astype(np.float32)


def _assert_one_line_naming(error: pytest.ExceptionInfo, path: Path) -> None:
    message = str(error.value)
    assert path.name in message
    assert "\n" not in message


# --------------------------------------------------------------------------------------------- .flo
def test_flo_round_trip_with_invalid_pixels(tmp_path: Path) -> None:
    flow = _random_flow()
    valid = np.ones(flow.shape[:2], bool)
    valid[1, 2] = valid[4, 6] = False
    path = tmp_path / "a.flo"
    write_flow(path, flow, valid)
    assert path.stat().st_size == 12 + 8 * 5 * 7
    got, got_valid = read_flow(path)
    assert got.dtype == np.float32 and got.shape == (5, 7, 2)
    assert got_valid.dtype == np.bool_
    np.testing.assert_array_equal(got_valid, valid)
    np.testing.assert_array_equal(got[valid], flow[valid])
    assert (got[~valid] == 0).all()
    # Invalid pixels are stored as the Middlebury "unknown" value 1e10.
    raw = np.frombuffer(path.read_bytes(), "<f4", offset=12).reshape(5, 7, 2)
    assert raw[1, 2, 0] == np.float32(1e10)


def test_flo_hand_written_is_read_row_major_interleaved(tmp_path: Path) -> None:
    width, height = 3, 2
    values = [float(i) for i in range(2 * width * height)]
    values[5] = 2e9  # v of pixel (row 0, col 2) unknown
    path = tmp_path / "hand.flo"
    path.write_bytes(struct.pack("<f", 202021.25) + struct.pack("<ii", width, height)
                     + struct.pack(f"<{len(values)}f", *values))
    flow, valid = read_flow(path)
    assert flow.shape == (2, 3, 2)
    assert flow[0, 1].tolist() == [2.0, 3.0]
    assert flow[1, 0].tolist() == [6.0, 7.0]
    assert valid.tolist() == [[True, True, False], [True, True, True]]
    assert flow[0, 2].tolist() == [0.0, 0.0]


def test_write_flow_overwrites_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "f.flo"
    write_flow(path, np.zeros((2, 2, 2), np.float32))
    write_flow(path, np.ones((2, 2, 2), np.float32))
    assert read_flow(path)[0].tolist() == np.ones((2, 2, 2)).tolist()
    assert [p.name for p in path.parent.iterdir()] == ["f.flo"]


# --------------------------------------------------------------------------------------------- KITTI
def test_kitti_png_round_trip_quantises_to_one_64th(tmp_path: Path) -> None:
    flow = _random_flow(seed=1)
    valid = np.random.default_rng(2).random(flow.shape[:2]) > 0.3
    path = tmp_path / "000000_10.png"
    write_flow(path, flow, valid)
    got, got_valid = read_flow(path)
    np.testing.assert_array_equal(got_valid, valid)
    expected = np.round(flow * 64) / 64
    np.testing.assert_array_equal(got[valid], expected[valid])
    assert np.abs(got[valid] - flow[valid]).max() <= 1 / 128 + 1e-6
    assert (got[~valid] == 0).all()


def test_kitti_png_hand_written_channels(tmp_path: Path) -> None:
    # KITTI stores R = u, G = v, B = valid; OpenCV writes BGR, so build the BGR array by hand.
    bgr = np.zeros((2, 3, 3), np.uint16)
    bgr[..., 2] = 2**15 + 64 * 3       # u = +3
    bgr[..., 1] = 2**15 - 32           # v = -0.5
    bgr[..., 0] = 1
    bgr[1, 2] = (0, 0, 0)              # invalid pixel
    path = tmp_path / "k.png"
    assert cv2.imwrite(str(path), bgr)
    flow, valid = read_flow(path)
    assert flow[0, 0].tolist() == [3.0, -0.5]
    assert valid.sum() == 5 and not valid[1, 2]
    assert flow[1, 2].tolist() == [0.0, 0.0]


def test_kitti_png_rejects_8_bit_and_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "eight.png"
    cv2.imwrite(str(path), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(FlowFormatError, match="16-bit") as error:
        read_flow(path)
    _assert_one_line_naming(error, path)
    with pytest.raises(FlowFormatError, match="KITTI png range"):
        write_flow(tmp_path / "big.png", np.full((2, 2, 2), 600.0, np.float32))


# --------------------------------------------------------------------------------------------- .npy / .pfm
def test_npy_round_trip_marks_non_finite_invalid(tmp_path: Path) -> None:
    flow = _random_flow(seed=3)
    valid = np.ones(flow.shape[:2], bool)
    valid[0, 0] = False
    path = tmp_path / "f.npy"
    write_flow(path, flow, valid)
    got, got_valid = read_flow(path)
    np.testing.assert_array_equal(got_valid, valid)
    np.testing.assert_array_equal(got[valid], flow[valid])
    assert np.isnan(np.load(path)[0, 0]).all()


@pytest.mark.parametrize("endian,scale", [("<", -1.0), (">", 1.0)])
def test_pfm_hand_written_bottom_up_rows(tmp_path: Path, endian: str, scale: float) -> None:
    height, width = 3, 2
    top_down = np.arange(height * width * 3, dtype=np.float32).reshape(height, width, 3)
    path = tmp_path / "flow.pfm"
    # Rows are stored bottom row first.
    path.write_bytes(f"PF\n{width} {height}\n{scale}\n".encode() + top_down[::-1].astype(f"{endian}f4").tobytes())
    np.testing.assert_array_equal(read_pfm(path), top_down)
    flow, valid = read_flow(path)
    np.testing.assert_array_equal(flow, top_down[:, :, :2])
    assert valid.all() and valid.shape == (height, width)


def test_pfm_write_round_trip_and_single_channel(tmp_path: Path) -> None:
    flow = _random_flow(seed=4)
    write_pfm(tmp_path / "f.pfm", flow)
    got, valid = read_flow(tmp_path / "f.pfm")
    np.testing.assert_array_equal(got, flow)
    assert valid.all()
    # The written file stores the bottom row first, little-endian (negative scale).
    data = (tmp_path / "f.pfm").read_bytes()
    header = b"PF\n7 5\n-1.0\n"
    assert data.startswith(header)
    assert np.frombuffer(data, "<f4", 2, len(header)).tolist() == flow[-1, 0].tolist()
    depth = np.arange(6, dtype=np.float32).reshape(2, 3)
    write_pfm(tmp_path / "d.pfm", depth)
    np.testing.assert_array_equal(read_pfm(tmp_path / "d.pfm"), depth)
    with pytest.raises(FlowFormatError, match="Pf"):
        read_flow(tmp_path / "d.pfm")


def test_pfm_bad_header(tmp_path: Path) -> None:
    path = tmp_path / "bad.pfm"
    path.write_bytes(b"P6\n2 2\n255\n" + bytes(12))
    with pytest.raises(FlowFormatError, match="header") as error:
        read_flow(path)
    _assert_one_line_naming(error, path)


# --------------------------------------------------------------------------------------------- real data
def test_real_middlebury_rubberwhale(rubberwhale: Path) -> None:
    flow, valid = read_flow(rubberwhale / "flow10.flo")
    assert flow.shape == (388, 584, 2) and flow.dtype == np.float32
    assert (~valid).any() and valid.mean() > 0.9
    magnitude = np.linalg.norm(flow[valid], axis=1)
    assert magnitude.max() < 10 and magnitude.max() > 1
    assert (flow[~valid] == 0).all()
    for name in ("frame10.png", "frame11.png"):
        image = read_image(rubberwhale / name)
        assert image.shape == (388, 584, 3) and image.dtype == np.uint8


# --------------------------------------------------------------------------------------------- images
def test_read_image_rgb_gray_alpha(tmp_path: Path) -> None:
    bgr = np.random.default_rng(5).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "c.png"), bgr)
    cv2.imwrite(str(tmp_path / "c.ppm"), bgr)
    for name in ("c.png", "c.ppm"):
        np.testing.assert_array_equal(read_image(tmp_path / name), bgr[:, :, ::-1])
    gray = bgr[:, :, 0]
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), np.dstack([gray] * 3))
    bgra = np.dstack([bgr, np.full((4, 5), 7, np.uint8)])
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), bgr[:, :, ::-1])


def test_read_image_rejects_16_bit_and_garbage(tmp_path: Path) -> None:
    deep = tmp_path / "deep.png"
    cv2.imwrite(str(deep), np.zeros((3, 3, 3), np.uint16))
    with pytest.raises(FlowFormatError, match="8 bits") as error:
        read_image(deep)
    _assert_one_line_naming(error, deep)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(FlowFormatError, match="unreadable") as error:
        read_image(junk)
    _assert_one_line_naming(error, junk)


# --------------------------------------------------------------------------------------------- bad input
def test_truncated_flo(tmp_path: Path) -> None:
    path = tmp_path / "short.flo"
    write_flow(path, _random_flow())
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(FlowFormatError, match="must be 292 bytes, got 288") as error:
        read_flow(path)
    _assert_one_line_naming(error, path)


def test_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "magic.flo"
    path.write_bytes(struct.pack("<fii", 1.0, 1, 1) + bytes(8))
    with pytest.raises(FlowFormatError, match="magic") as error:
        read_flow(path)
    _assert_one_line_naming(error, path)


@pytest.mark.parametrize("reader,name", [(read_flow, "gone.flo"), (read_flow, "gone.png"), (read_image, "gone.png")])
def test_missing_file(tmp_path: Path, reader, name: str) -> None:
    with pytest.raises(FlowFormatError, match="not found") as error:
        reader(tmp_path / name)
    _assert_one_line_naming(error, tmp_path / name)


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "flow.txt"
    path.write_text("1 2")
    with pytest.raises(FlowFormatError, match="unsupported extension") as error:
        read_flow(path)
    _assert_one_line_naming(error, path)
    with pytest.raises(FlowFormatError, match="unsupported extension"):
        write_flow(tmp_path / "flow.jpg", _random_flow())
    assert issubclass(FlowFormatError, ValueError)


def test_write_rejects_bad_shapes(tmp_path: Path) -> None:
    with pytest.raises(FlowFormatError, match=r"\[H, W, 2\]"):
        write_flow(tmp_path / "f.flo", np.zeros((3, 4, 3), np.float32))
    with pytest.raises(FlowFormatError, match="valid mask"):
        write_flow(tmp_path / "f.flo", np.zeros((3, 4, 2), np.float32), np.ones((4, 3), bool))


# --------------------------------------------------------------------------------------------- hostile input
# Each case is refused with one line naming the file, before anything large is allocated (flow_io docstring).
def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(width: int, height: int, depth: int = 8, colour: int = 2, idat: bytes | None = None) -> bytes:
    """A PNG built by hand: IHDR with the given header fields, one IDAT, IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    if idat is None:
        row = b"\x00" + bytes(width * 3 * depth // 8)
        idat = zlib.compress(row * height)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _npy(header: str, body: bytes = b"") -> bytes:
    text = header.encode("latin1")
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + body


def _refused(reader, path: Path, data: bytes, match: str) -> str:
    path.write_bytes(data)
    with pytest.raises(FlowFormatError, match=match) as error:
        reader(path)
    _assert_one_line_naming(error, path)
    return str(error.value)


def test_hand_built_png_is_read_and_its_header_parsed(tmp_path: Path) -> None:
    from flownas.data.image_headers import ImageHeader, check_image_header

    data = _png(5, 3)
    assert check_image_header(data) == ImageHeader("PNG", 5, 3, 3, 8)
    path = tmp_path / "hand.png"
    path.write_bytes(data)
    assert read_image(path).shape == (3, 5, 3) and not read_image(path).any()


@pytest.mark.parametrize("reader,name", [(read_image, "empty.png"), (read_flow, "empty.png"), (read_image, "e.jpg")])
def test_zero_byte_images(tmp_path: Path, reader, name: str) -> None:
    _refused(reader, tmp_path / name, b"", "empty file")


HUGE_HEADERS = {
    "huge.png": _png(40000, 40000, idat=zlib.compress(b"\x00" * 100)),
    "huge16.png": _png(40000, 40000, 16, idat=zlib.compress(b"\x00" * 100)),
    "huge.ppm": b"P6\n40000 40000\n255\n" + bytes(100),
    "huge.pgm": b"P5\n40000 40000\n255\n" + bytes(100),
    "huge.bmp": b"BM" + struct.pack("<IHHI", 154, 0, 0, 54)
                + struct.pack("<IiiHHIIiiII", 40, 40000, 40000, 1, 24, 0, 0, 0, 0, 0, 0) + bytes(100),
    # JPEG: SOI, then a baseline frame header (SOF0) of 40000x40000 with 3 components.
    "huge.jpg": b"\xff\xd8\xff\xc0\x00\x11\x08" + struct.pack(">HH", 40000, 40000) + b"\x03" + bytes(9) + b"\xff\xd9",
}


@pytest.mark.parametrize("name", sorted(HUGE_HEADERS))
def test_headers_claiming_40000x40000_are_refused_before_decoding(tmp_path: Path, name: str) -> None:
    message = _refused(read_image, tmp_path / name, HUGE_HEADERS[name], "40000x40000")
    assert "megapixel limit" in message


def test_kitti_png_with_a_huge_header(tmp_path: Path) -> None:
    _refused(read_flow, tmp_path / "k.png", HUGE_HEADERS["huge16.png"], "40000x40000")


@pytest.mark.parametrize("length", [2**31 - 1, 2**32 - 1, 100_000])
def test_png_with_a_corrupt_idat_length(tmp_path: Path, length: int) -> None:
    rng = np.random.default_rng(0)
    data = _png(32, 24, idat=zlib.compress(b"".join(b"\x00" + rng.bytes(96) for _ in range(24))))
    assert 1000 < len(data) < 4096
    at = data.index(b"IDAT") - 4
    corrupt = data[:at] + struct.pack(">I", length) + data[at + 4:]
    for reader, name in ((read_image, "c.png"), (read_flow, "kitti.png")):
        _refused(reader, tmp_path / name, corrupt, "corrupt length")


def test_png_whose_pixels_cannot_come_from_its_data(tmp_path: Path) -> None:
    # 9000x9000 RGB (243 MB) is under the pixel limit, but 100 compressed bytes inflate to 103 KB at most.
    message = _refused(read_image, tmp_path / "bomb.png", _png(9000, 9000, idat=zlib.compress(bytes(100))), "deflate")
    assert "9000x9000" in message


def test_truncated_pnm_raster(tmp_path: Path) -> None:
    _refused(read_image, tmp_path / "short.ppm", b"P6\n10 10\n255\n" + bytes(299), "truncated")


# --------------------------------------------------------------------------------------------- hostile .npy
_HEAD = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }"


@pytest.mark.parametrize("name,data,match", [
    ("huge.npy", _npy(_HEAD % ("<f4", "(1000000, 1000000, 2)"), bytes(64)), "pixel limit"),
    ("token.npy", _npy("{'descr': '<f4', 'fortran_order': False, 'shape': (((((((("), "unreadable .npy header"),
    ("digits.npy", _npy(_HEAD % ("<f4", "(" + "9" * 5000 + ", 1, 2)")), "unreadable .npy header"),
    ("complex.npy", _npy(_HEAD % ("<c8", "(2, 2, 2)"), bytes(64)), "complex64"),
    ("object.npy", _npy(_HEAD % ("|O", "(2, 2, 2)"), bytes(64)), "object"),
    ("zero.npy", _npy(_HEAD % ("<f4", "(0, 5, 2)")), r"shape \[0, 5, 2\]"),
    ("short.npy", _npy(_HEAD % ("<f4", "(2, 2, 2)"), bytes(31)), "needs 32 data bytes, got 31"),
])
def test_bad_npy_headers(tmp_path: Path, name: str, data: bytes, match: str) -> None:
    _refused(read_flow, tmp_path / name, data, match)


def test_npz_and_zip_files_renamed_npy(tmp_path: Path) -> None:
    np.savez(tmp_path / "flows.npz", flow=np.zeros((2, 2, 2), np.float32))
    _refused(read_flow, tmp_path / "flows.npy", (tmp_path / "flows.npz").read_bytes(), "zip archive")
    import zipfile

    with zipfile.ZipFile(tmp_path / "any.zip", "w") as archive:
        archive.writestr("readme.txt", "hello")
    _refused(read_flow, tmp_path / "any.npy", (tmp_path / "any.zip").read_bytes(), "not a .npy file")


def test_object_array_saved_by_numpy(tmp_path: Path) -> None:
    path = tmp_path / "objects.npy"
    np.save(path, np.empty((2, 2, 2), dtype=object), allow_pickle=True)
    with pytest.raises(FlowFormatError, match="object") as error:
        read_flow(path)
    _assert_one_line_naming(error, path)


def test_npy_other_layouts_still_read(tmp_path: Path) -> None:
    flow = _random_flow(seed=7).astype(np.float64)
    np.save(tmp_path / "f.npy", np.asfortranarray(flow.astype(">f8")))
    got, valid = read_flow(tmp_path / "f.npy")
    np.testing.assert_array_equal(got, flow.astype(np.float32))
    assert valid.all()


# --------------------------------------------------------------------------------------------- hostile .flo / .pfm
@pytest.mark.parametrize("width,height", [(2**30, 2**30), (2**31 - 1, 2**31 - 1), (-1, 5)])
def test_flo_absurd_sizes(tmp_path: Path, width: int, height: int) -> None:
    data = struct.pack("<fii", 202021.25, width, height) + bytes(16)
    _refused(read_flow, tmp_path / "huge.flo", data, "size|must be")


@pytest.mark.parametrize("header", [b"PF\n99999999 99999999\n-1.0\n", b"PF\n1 1\nnan\n", b"PF\n1 1\n1e999\n"])
def test_pfm_absurd_sizes_and_scales(tmp_path: Path, header: bytes) -> None:
    _refused(read_flow, tmp_path / "bad.pfm", header + bytes(12), "PFM")


def test_nan_flow_values_are_invalid_pixels_not_errors(tmp_path: Path) -> None:
    values = np.array([[[np.nan, 1.0], [2.0, 3.0]]], "<f4")
    (tmp_path / "nan.pfm").write_bytes(b"PF\n2 1\n-1.0\n" + np.dstack([values, np.zeros((1, 2))]).astype("<f4").tobytes())
    flow, valid = read_flow(tmp_path / "nan.pfm")
    assert valid.tolist() == [[False, True]] and flow[0, 0].tolist() == [0.0, 0.0]
    (tmp_path / "nan.flo").write_bytes(struct.pack("<fii", 202021.25, 2, 1) + values.tobytes())
    flow, valid = read_flow(tmp_path / "nan.flo")
    assert valid.tolist() == [[False, True]] and flow[0, 1].tolist() == [2.0, 3.0]
