"""Inputs for `tools.fuzz`: valid seed files written by the toolkit's own writers, byte-level mutations, and
hand-crafted structure-aware bad files (empty, another kind of file, huge declared sizes, bombs).

Everything is deterministic: `make_case(target, index, seed, corpus)` draws from `random.Random(f"{seed}:{target}:{index}")`,
so one case can be reproduced without replaying the ones before it.
"""
from __future__ import annotations

import io
import json
import random
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from tools.fuzz_crafted import checkpoint_cases, flow_cases, image_cases, npy_cases, text_cases

TARGETS = ("flo", "kitti_png", "pfm", "npy", "image", "checkpoint", "arch", "space")
TEXT_TARGETS = ("pfm", "npy", "image", "arch", "space")  # formats with numbers written as text somewhere
EXTREME_INTS = (0, 1, 2**15, 2**16 - 1, 40000, 2**31 - 1, 2**31, 2**32 - 1, 10**9)
EXTREME_TEXT = (b"0", b"-1", b"4096", b"40000", b"999999999", b"1" + b"0" * 30, b"9" * 5000, b"1e999", b"NaN", b"-0")


@dataclass
class Seed:
    """A valid file: its bytes, the extension it is read with and the byte ranges worth mutating most."""

    name: str
    data: bytes
    suffix: str
    hot: list = field(default_factory=list)  # [(start, stop)]: headers, pickles, zip directories


@dataclass
class Corpus:
    """Seeds per target plus crafted bad files per target (name, bytes, suffix)."""

    seeds: dict[str, list[Seed]]
    crafted: dict[str, list[tuple[str, bytes, str]]]


# --------------------------------------------------------------------------------------------- seeds
def _flow(height: int, width: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(height, width, 2)) * 8).astype(np.float32)


def _zip_hot(data: bytes) -> list:
    """Local headers, the pickle and the central directory of a torch zip checkpoint (not the tensor bytes)."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    hot = []
    for info in archive.infolist():
        start = info.header_offset
        stop = start + 30 + len(info.filename.encode()) + 64
        if info.filename.endswith(".pkl"):
            stop += info.compress_size
        hot.append((start, min(stop, len(data))))
    directory = archive.start_dir if hasattr(archive, "start_dir") else len(data) - 512
    hot.append((max(0, directory), len(data)))
    return hot


def make_seeds(folder: Path) -> dict[str, list[Seed]]:
    """Write valid files with the toolkit's writers into `folder`; return them per target."""
    import torch

    from flownas.arch import RAFT_K, SearchSpace
    from flownas.data.flow_io import write_flow, write_image, write_pfm
    from flownas.models import RAFT
    from flownas.weights import save_checkpoint

    folder.mkdir(parents=True, exist_ok=True)

    def written(name: str, write: Callable[[Path], None], hot: list) -> Seed:
        path = folder / name
        write(path)
        data = path.read_bytes()
        return Seed(name, data, path.suffix, hot or [(0, len(data))])

    rgb = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    seeds = {
        "flo": [written(f"f{i}.flo", lambda p, i=i: write_flow(p, _flow(5 + i, 7, i)), [(0, 12)]) for i in range(2)],
        "kitti_png": [written("k.png", lambda p: write_flow(p, _flow(6, 9, 2), np.arange(54).reshape(6, 9) % 3 > 0),
                              [(0, 64)])],
        "pfm": [written("f.pfm", lambda p: write_flow(p, _flow(4, 6, 3)), [(0, 24)]),
                written("d.pfm", lambda p: write_pfm(p, _flow(4, 6, 4)[..., 0]), [(0, 24)])],
        "npy": [written("f.npy", lambda p: write_flow(p, _flow(5, 7, 5)), [(0, 128)])],
        "image": [written(f"i{ext}", lambda p: write_image(p, rgb), [(0, 64 if ext != ".jpg" else 640)])
                  for ext in (".png", ".ppm", ".jpg", ".bmp")],
    }
    torch.manual_seed(0)
    model = RAFT(small=True).eval()
    own = written("own.pt", lambda p: save_checkpoint(p, model, {"note": "fuzz seed"}), [])
    published = {f"module.{k}": v for k, v in model.state_dict().items()}
    princeton = written("princeton.pth", lambda p: torch.save(published, p), [])
    legacy = written("legacy.pth", lambda p: torch.save(published, p, _use_new_zipfile_serialization=False),
                     [(0, 4096)])
    own.hot, princeton.hot = _zip_hot(own.data), _zip_hot(princeton.data)
    seeds["checkpoint"] = [own, princeton, legacy]
    space = SearchSpace.flownas()
    import yaml

    seeds["arch"] = [written("a.json", lambda p: p.write_text(RAFT_K.to_json()), []),
                     written("a.yaml", lambda p: p.write_text(yaml.safe_dump(RAFT_K.to_dict())), []),
                     written("w.json", lambda p: p.write_text(json.dumps({"arch": RAFT_K.to_dict(), "epe": 1.5})), [])]
    seeds["space"] = [written("s.json", lambda p: p.write_text(json.dumps(space.to_dict())), []),
                      written("s.yaml", lambda p: p.write_text(yaml.safe_dump(space.to_dict())), [])]
    return seeds


# --------------------------------------------------------------------------------------------- mutations
def _offset(rng: random.Random, data: bytes, hot: list) -> int:
    if hot and rng.random() < 0.8:
        start, stop = rng.choice(hot)
        stop = min(stop, len(data))
        if stop > start:
            return rng.randrange(start, stop)
    return rng.randrange(len(data)) if data else 0


def bit_flip(rng: random.Random, data: bytes, hot: list) -> tuple[bytes, str]:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if out:
            pos = _offset(rng, data, hot)
            out[pos] ^= 1 << rng.randrange(8)
    return bytes(out), "bitflip"


def truncate(rng: random.Random, data: bytes, hot: list) -> tuple[bytes, str]:
    cut = _offset(rng, data, hot) if rng.random() < 0.7 else rng.randrange(len(data) + 1)
    return data[:cut], f"truncate@{cut}"


def insert(rng: random.Random, data: bytes, hot: list) -> tuple[bytes, str]:
    pos = _offset(rng, data, hot)
    blob = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    return data[:pos] + blob + data[pos:], f"insert{len(blob)}@{pos}"


def delete(rng: random.Random, data: bytes, hot: list) -> tuple[bytes, str]:
    pos = _offset(rng, data, hot)
    size = rng.randint(1, 64)
    return data[:pos] + data[pos + size:], f"delete{size}@{pos}"


def overwrite_int(rng: random.Random, data: bytes, hot: list) -> tuple[bytes, str]:
    """An extreme integer written over a header field (2/4/8 bytes, either byte order)."""
    value = rng.choice(EXTREME_INTS)
    width, order = rng.choice((2, 4, 8)), rng.choice("<>")
    packed = struct.pack(order + {2: "H", 4: "I", 8: "Q"}[width], value % (1 << (8 * width)))
    pos = _offset(rng, data, hot)
    return data[:pos] + packed + data[pos + width:], f"int{width}{order}={value}@{pos}"


def text_number(rng: random.Random, data: bytes, hot: list) -> tuple[bytes, str]:
    """A number written as text (PFM/PPM/npy headers, JSON, YAML) replaced by an extreme one."""
    numbers = [m for m in re.finditer(rb"-?\d+(\.\d+)?", data[:4096])]
    if not numbers:
        return bit_flip(rng, data, hot)
    match = rng.choice(numbers)
    value = rng.choice(EXTREME_TEXT)
    return data[:match.start()] + value + data[match.end():], f"number@{match.start()}={value[:12]!r}"


def pickle_mutation(rng: random.Random, data: bytes, hot: list) -> tuple[bytes, str]:
    """Mutate the pickle inside a zip checkpoint and re-zip it, so torch gets past the zip layer."""
    op = rng.choice((bit_flip, truncate, insert, delete, overwrite_int))
    out, detail = io.BytesIO(), ""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
            for name in archive.namelist():
                body = archive.read(name)
                if name.endswith("data.pkl"):
                    body, detail = op(rng, body, [(0, len(body))])
                dst.writestr(name, body)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError):  # already broken: flip bits
        return bit_flip(rng, data, hot)
    return out.getvalue(), f"pickle-{detail}"


BYTE_OPS = (bit_flip, truncate, insert, delete, overwrite_int)


def mutate(rng: random.Random, target: str, data: bytes, hot: list) -> tuple[bytes, str]:
    """One to three stacked mutations chosen for the target's kind of file."""
    ops = list(BYTE_OPS)
    if target in TEXT_TARGETS:
        ops += [text_number, text_number]
    if target == "checkpoint":
        ops += [pickle_mutation] * 3
    steps = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        data, detail = rng.choice(ops)(rng, data, hot)
        steps.append(detail)
    return data, "+".join(steps)


# --------------------------------------------------------------------------------------------- corpus and cases
def build_corpus(folder: Path) -> Corpus:
    """Seeds written by the toolkit, plus crafted bad files (including valid files of the other kinds)."""
    seeds = make_seeds(folder)
    crafted = {target: [] for target in TARGETS}
    crafted.update(flow_cases(seeds))
    crafted["npy"] = npy_cases()
    crafted["image"] = image_cases(seeds)
    crafted["checkpoint"] = checkpoint_cases()
    for target in ("arch", "space"):
        crafted[target] = text_cases(target, seeds)
    for target in TARGETS:
        suffix = seeds[target][0].suffix
        crafted[target].append(("empty-file", b"", suffix))
        for other in TARGETS:
            if other != target:  # a valid file of another kind under this target's extension
                crafted[target].append((f"a-valid-{other}-file", seeds[other][0].data, suffix))
    return Corpus(seeds, crafted)


def make_case(target: str, index: int, seed: int, corpus: Corpus) -> tuple[bytes, str, str]:
    """Bytes, extension and description of case `index`: the crafted files first, then mutated seeds."""
    rng = random.Random(f"{seed}:{target}:{index}")
    crafted = corpus.crafted[target]
    if index < len(crafted):
        name, data, suffix = crafted[index]
        return data, suffix, f"crafted:{name}"
    if rng.random() < 0.1:  # a crafted file, mutated further
        name, data, suffix = rng.choice(crafted)
        data, detail = mutate(rng, target, data, [(0, min(len(data), 256))])
        return data, suffix, f"crafted:{name}+{detail}"
    chosen = rng.choice(corpus.seeds[target])
    data, detail = mutate(rng, target, chosen.data, chosen.hot)
    return data, chosen.suffix, f"{chosen.name}+{detail}"
