"""Crafted bad files for `tools.fuzz`: huge declared sizes, corrupt lengths, wrong types, bombs, per reader.

Each builder returns `[(name, bytes, extension)]`; `tools.fuzz_cases.build_corpus` collects them. Valid seeds
(`Seed` objects with `.data` and `.suffix`) come in as a dict per target.
"""
from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_size(png: bytes, width: int, height: int, depth: int | None = None, colour: int | None = None) -> bytes:
    """The same PNG with other IHDR dimensions (and bit depth / colour type) and a correct CRC."""
    ihdr = bytearray(png[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    if depth is not None:
        ihdr[8], ihdr[9] = depth, colour
    return png[:8] + _png_chunk(b"IHDR", bytes(ihdr)) + png[33:]


def png_with_idat_length(png: bytes, length: int) -> bytes:
    """The same PNG whose first IDAT chunk declares `length` bytes (a corrupt length field)."""
    at = png.index(b"IDAT") - 4
    return png[:at] + struct.pack(">I", length) + png[at + 4:]


def _npy(header: str, body: bytes = b"", version: bytes = b"\x01\x00") -> bytes:
    text = header.encode("latin1")
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    size = struct.pack("<H" if version == b"\x01\x00" else "<I", len(text))
    return b"\x93NUMPY" + version + size + text + body


def _jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    at = jpeg.index(b"\xff\xc0") + 5
    return jpeg[:at] + struct.pack(">HH", height, width) + jpeg[at + 4:]


def _bmp(width: int, height: int, bpp: int = 24, compression: int = 0, body: bytes = bytes(64)) -> bytes:
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bpp, compression, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(dib) + len(body), 0, 0, 54) + dib + body


def image_cases(seeds: dict[str, list[Seed]]) -> list[tuple[str, bytes, str]]:
    png, ppm, jpg = (next(s.data for s in seeds["image"] if s.suffix == ext) for ext in (".png", ".ppm", ".jpg"))
    return [
        ("png-40000x40000", png_with_size(png, 40000, 40000), ".png"),
        ("png-2^31-1x1", png_with_size(png, 2**31 - 1, 1), ".png"),
        ("png-9000x9000-tiny-idat", png_with_size(png, 9000, 9000), ".png"),
        ("png-idat-length-2^31-1", png_with_idat_length(png, 2**31 - 1), ".png"),
        ("png-idat-length-2^32-1", png_with_idat_length(png, 2**32 - 1), ".png"),
        ("png-bad-depth", png_with_size(png, 32, 24, 7, 2), ".png"),
        ("ppm-40000x40000", b"P6\n40000 40000\n255\n" + bytes(64), ".ppm"),
        ("pgm-16bit-huge", b"P5\n40000 40000\n65535\n" + bytes(64), ".pgm"),
        ("ppm-ascii-huge", b"P3\n40000 40000\n255\n1 2 3\n", ".ppm"),
        ("pbm-huge", b"P4\n99999 99999\n" + bytes(64), ".pbm"),
        ("ppm-long-number", b"P6\n" + b"9" * 5000 + b" 1\n255\n", ".ppm"),
        ("ppm-truncated-raster", ppm[:-10], ".ppm"),
        ("pam-40000x40000", b"P7\nWIDTH 40000\nHEIGHT 40000\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n" + bytes(64), ".pam"),
        ("jpeg-40000x40000", _jpeg_with_size(jpg, 40000, 40000), ".jpg"),
        ("jpeg-65535x65535", _jpeg_with_size(jpg, 65535, 65535), ".jpg"),
        ("jpeg-height-0", _jpeg_with_size(jpg, 32, 0), ".jpg"),
        ("jpeg-truncated", jpg[:200], ".jpg"),
        ("bmp-40000x40000", _bmp(40000, 40000), ".bmp"),
        ("bmp-top-down-huge", _bmp(40000, -40000, 32, 3), ".bmp"),
        ("bmp-rle-huge", _bmp(30000, 30000, 8, 1), ".bmp"),
        ("bmp-negative-width", _bmp(-5, 5), ".bmp"),
    ]


def flow_cases(seeds: dict[str, list[Seed]]) -> dict[str, list[tuple[str, bytes, str]]]:
    magic = struct.pack("<f", 202021.25)
    kitti = seeds["kitti_png"][0].data
    return {
        "flo": [("flo-2^30x2^30", magic + struct.pack("<ii", 2**30, 2**30) + bytes(16), ".flo"),
                ("flo-max-int", magic + struct.pack("<ii", 2**31 - 1, 2**31 - 1), ".flo"),
                ("flo-negative", magic + struct.pack("<ii", -1, 5) + bytes(40), ".flo"),
                ("flo-magic-only", magic, ".flo")],
        "kitti_png": [("kitti-40000x40000", png_with_size(kitti, 40000, 40000), ".png"),
                      ("kitti-idat-length-2^31-1", png_with_idat_length(kitti, 2**31 - 1), ".png"),
                      ("kitti-8-bit", next(s.data for s in seeds["image"] if s.suffix == ".png"), ".png")],
        "pfm": [("pfm-huge", b"PF\n99999999 99999999\n-1.0\n" + bytes(64), ".pfm"),
                ("pfm-long-number", b"PF\n" + b"9" * 5000 + b" 1\n-1.0\n" + bytes(12), ".pfm"),
                ("pfm-nan-scale", b"PF\n1 1\nnan\n" + bytes(12), ".pfm"),
                ("pfm-inf-scale", b"PF\n1 1\n1e999\n" + bytes(12), ".pfm"),
                ("pfm-nan-values", b"PF\n1 1\n-1.0\n" + np.full(3, np.nan, "<f4").tobytes(), ".pfm")],
    }


def npy_cases() -> list[tuple[str, bytes, str]]:
    npz = io.BytesIO()
    np.savez(npz, flow=np.zeros((2, 2, 2), np.float32))
    head = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }"
    return [
        ("npy-huge-shape", _npy(head % ("<f4", "(1000000, 1000000, 2)"), bytes(64)), ".npy"),
        ("npy-max-shape", _npy(head % ("<f8", "(9223372036854775807, 1, 2)")), ".npy"),
        ("npy-5000-digit-shape", _npy(head % ("<f4", "(" + "9" * 5000 + ", 1, 2)")), ".npy"),
        ("npy-token-error", _npy("{'descr': '<f4', 'fortran_order': False, 'shape': (((((((("), ".npy"),
        ("npy-deep-nesting", _npy("{'descr': '<f4', 'shape': " + "[" * 3000 + "]" * 3000 + "}"), ".npy"),
        ("npy-complex", _npy(head % ("<c8", "(2, 2, 2)"), bytes(64)), ".npy"),
        ("npy-object", _npy(head % ("|O", "(2, 2, 2)"), bytes(64)), ".npy"),
        ("npy-void", _npy(head % ("|V8", "(2, 2, 2)"), bytes(64)), ".npy"),
        ("npy-unicode", _npy(head % ("<U2", "(2, 2, 2)"), bytes(64)), ".npy"),
        ("npy-zero-size", _npy(head % ("<f4", "(0, 5, 2)")), ".npy"),
        ("npy-rank-2", _npy(head % ("<f4", "(2, 2)"), bytes(16)), ".npy"),
        ("npy-version-3", _npy(head % ("<f4", "(1, 1, 2)"), bytes(8), b"\x03\x00"), ".npy"),
        ("npy-header-length-65535", b"\x93NUMPY\x01\x00\xff\xff{'descr'", ".npy"),
        ("npz-renamed", npz.getvalue(), ".npy"),
    ]


class Payload:
    """An arbitrary Python object: torch's weights_only unpickler must refuse to rebuild it."""


def _torch_bytes(obj: object) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _quantized(tensor: object) -> object:
    import warnings

    import torch

    with warnings.catch_warnings():  # torch deprecates creating quantized tensors; files may still hold them
        warnings.simplefilter("ignore")
        return torch.quantize_per_tensor(tensor, 0.1, 0, torch.qint8)


def checkpoint_cases() -> list[tuple[str, bytes, str]]:
    import torch

    from flownas.arch import RAFT_K, SearchSpace
    from flownas.models import RAFT

    state = RAFT(small=True).state_dict()
    own = {"format": "flownas-toolkit", "format_version": 1, "model": {"family": "raft", "variant": "small"},
           "metadata": {}, "state_dict": state}
    space = SearchSpace.flownas().to_dict()

    def own_with(**changes: object) -> dict:
        return {k: v for k, v in {**own, **changes}.items() if v is not _DROP}

    def with_tensor(name: str, tensor: object) -> dict:
        return own_with(state_dict={**state, name: tensor})

    def supernet(**space_changes: object) -> dict:
        return own_with(model={"family": "flownas-supernet", "space": {**space, **space_changes}}, state_dict={})

    weight = "fnet.conv1.weight"
    cases = {
        "top-level-list": [torch.zeros(1)], "top-level-tensor": torch.zeros(1), "top-level-none": None,
        "empty-dict": {}, "own-no-model": own_with(model=_DROP), "own-no-state-dict": own_with(state_dict=_DROP),
        "own-state-dict-list": own_with(state_dict=[torch.zeros(1)]),
        "own-state-dict-tensor": own_with(state_dict=torch.zeros(1)),
        "own-state-dict-none": own_with(state_dict=None), "own-state-dict-empty": own_with(state_dict={}),
        "own-model-str": own_with(model="raft"), "own-model-list": own_with(model=[1]),
        "own-model-none": own_with(model=None), "own-family-int": own_with(model={"family": 5}),
        "own-variant-int": own_with(model={"family": "raft", "variant": 7}),
        "own-version-str": own_with(format_version="one"), "own-version-future": own_with(format_version=99),
        "own-int-keys": own_with(state_dict={**state, 7: torch.zeros(1)}),
        "published-int-keys": {1: torch.zeros(1), **{f"module.{k}": v for k, v in state.items()}},
        "own-list-value": with_tensor(weight, [1.0, 2.0]), "own-str-value": with_tensor(weight, "w"),
        "own-sparse": with_tensor(weight, state[weight].to_sparse()),
        "own-meta": with_tensor(weight, torch.empty(state[weight].shape, device="meta")),
        "own-quantized": with_tensor(weight, _quantized(state[weight])),
        "own-complex": with_tensor(weight, state[weight].to(torch.complex64)),
        "space-width-1e9": supernet(width=[[10**9]] * 6),
        "space-5000-digit": supernet(width=[[10**5000]] * 6),
        "space-600-digit": supernet(width=[[10**600]] * 6),  # the longest the safe unpickler accepts (LONG1)
        "space-depth-1e6": supernet(depth=[[10**6]] * 6),
        "space-1000-stages": supernet(**{k: [[1]] * 1000 for k in ("width", "kernel_size", "depth", "expand_ratio")},
                                      strides=[1] * 1000),
        "space-all-maxima": supernet(width=[[4096]] * 16, kernel_size=[[15]] * 16, depth=[[16]] * 16,
                                     expand_ratio=[[8]] * 16, strides=[1] * 16),
        "space-stem-1e9": supernet(stem_channels=10**9),
        "space-not-dict": own_with(model={"family": "flownas-supernet", "space": [1, 2]}),
        "arch-5000-digit": own_with(model={"family": "flownas", "space": space,
                                           "arch": {**RAFT_K.to_dict(), "width": [10**5000] * 6}}, state_dict={}),
        "arch-out-of-space": own_with(model={"family": "flownas", "space": space,
                                             "arch": {**RAFT_K.to_dict(), "width": [999] * 6}}, state_dict={}),
        "malicious-object": {"payload": Payload()},
    }
    crafted = [(name, _torch_bytes(obj), ".pt") for name, obj in cases.items()]
    npz = io.BytesIO()
    np.savez(npz, weight=np.zeros(3))
    return crafted + [("npz-renamed", npz.getvalue(), ".pt"), ("junk", b"\x80\x02junk" * 100, ".pth")]


_DROP = object()

YAML_BOMB = "\n".join(["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                      + [f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)]
                      + ["width: *i", "kernel_size: *i", "depth: *i", "expand_ratio: *i"])


def text_cases(target: str, seeds: dict[str, list[Seed]]) -> list[tuple[str, bytes, str]]:
    base = json.loads(seeds[target][0].data)
    big = "9" * 5000
    return [
        ("non-utf8", b"\xff\xfe\x00{\x00}\xc3\x28", ".json"),
        ("utf8-then-latin1", seeds[target][0].data[:-1] + b"\xe9}", ".json"),
        ("json-deep-nesting", b"[" * 100000 + b"]" * 100000, ".json"),
        ("json-deep-objects", b'{"a":' * 50000 + b"1" + b"}" * 50000, ".json"),
        ("yaml-deep-flow", b"[" * 100000 + b"]" * 100000, ".yaml"),
        ("yaml-deep-block", b"- " * 60000 + b"1\n", ".yaml"),
        ("json-5000-digit-int", json.dumps(base).replace("[", "[" + big + ", ", 1).encode(), ".json"),
        ("yaml-5000-digit-int", f"width: [{big}]\n".encode(), ".yaml"),
        ("yaml-billion-laughs", YAML_BOMB.encode(), ".yaml"),
        ("yaml-recursive", b"&a [*a]\n", ".yaml"),
        ("yaml-recursive-map", b"&a {width: *a, kernel_size: *a, depth: *a, expand_ratio: *a}\n", ".yaml"),
        ("yaml-python-tag", b"!!python/object/apply:os.system ['true']\n", ".yaml"),
        ("huge-file", b" " * (2 << 20) + json.dumps(base).encode(), ".json"),
        ("out-of-space-1e9", json.dumps({**base, "width": [[10**9]] * 6 if target == "space" else [10**9] * 6})
         .encode(), ".json"),
        ("wrong-types", json.dumps({k: "abc" for k in base}).encode(), ".json"),
        ("floats", json.dumps({k: [1.5] * 6 for k in base}).encode(), ".json"),
        ("nan-literal", json.dumps({k: [float("nan")] * 6 for k in base}).encode(), ".json"),
        ("top-level-list", b"[1, 2, 3]", ".json"),
        ("top-level-null", b"null", ".yaml"),
        ("empty", b"", ".yaml"),
    ]
