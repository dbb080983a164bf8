"""Inputs for any graph: declared tensor specs, shape overrides, files, and seeded generated data.

The way `trtexec --shapes` / `polygraphy run --input-shapes --load-inputs` work: a runner declares its inputs
(name, shape with dynamic axes, dtype); the user may fix shapes (`name:1x3x384x512`) or give arrays from `.npy`
files (`name:file.npy`); every other input is generated from a seeded generator. Flow models (inputs `image1`,
`image2` of 3 channels) get a realistic image pair instead of noise: the second frame is the first shifted, so
iterative models converge as they do on real frames. onnx and numpy only: no torch, no onnxruntime.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np

from flownas.errors import UserInputError

Dim = Union[int, str, None]  # a fixed size, or a dynamic axis (its symbolic name, or None when unnamed)
FLOW_INPUTS = ("image1", "image2")
MAX_GENERATED_ELEMENTS = 1 << 30  # 4 GiB of float32: refuse larger generated inputs instead of swapping
_ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_,
                10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64, 4: np.uint16}


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output: shape (ints, with str/None for dynamic axes) and numpy dtype."""

    name: str
    shape: tuple[Dim, ...]
    dtype: np.dtype

    @property
    def is_dynamic(self) -> bool:
        return any(not isinstance(d, int) or d < 0 for d in self.shape)

    def describe(self) -> str:
        dims = "x".join(str(d) if isinstance(d, int) and d >= 0 else (d or "?") for d in self.shape)
        return f"{self.name}:{dims} {np.dtype(self.dtype).name}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": np.dtype(self.dtype).name}


# --------------------------------------------------------------------------------------------- ONNX specs
def onnx_io_specs(path: str | os.PathLike) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) declared by an ONNX file's graph; initializers listed as inputs are left out."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # protobuf raises its own decode errors for files that are not ONNX
        raise UserInputError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
    initializers = {init.name for init in graph.initializer}
    inputs = [_value_spec(v, path) for v in graph.input if v.name not in initializers]
    return inputs, [_value_spec(v, path) for v in graph.output]


def _value_spec(value: Any, path: str | os.PathLike) -> TensorSpec:
    tensor = value.type.tensor_type
    if not value.type.HasField("tensor_type"):
        raise UserInputError(f"{path}: input/output {value.name!r} is not a tensor (sequences and maps are not supported)")
    dims: list[Dim] = []
    for d in tensor.shape.dim:
        dims.append(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None))
    dtype = _ONNX_DTYPES.get(tensor.elem_type)
    if dtype is None:
        raise UserInputError(f"{path}: tensor {value.name!r} has ONNX element type {tensor.elem_type}, which numpy "
                             "cannot hold (expected a float, int or bool type)")
    return TensorSpec(value.name, tuple(dims), np.dtype(dtype))


def flow_input_specs(height: int | None = None, width: int | None = None, batch: int = 1) -> list[TensorSpec]:
    """The two image inputs of a flow model, `[B,3,H,W]` float32 in [0,255]; None leaves an axis dynamic."""
    return [TensorSpec(name, (batch, 3, height, width), np.dtype(np.float32)) for name in FLOW_INPUTS]


def is_flow_graph(specs: Sequence[TensorSpec]) -> bool:
    """True for the two-image flow models this toolkit exports (inputs image1/image2, 3 channels, rank 4)."""
    by_name = {s.name: s for s in specs}
    return set(by_name) == set(FLOW_INPUTS) and all(len(s.shape) == 4 and s.shape[1] == 3 for s in by_name.values())


# --------------------------------------------------------------------------------------------- user options
def parse_shape_spec(spec: str, option: str = "--input-shape") -> dict[str, tuple[int, ...]]:
    """`"image1:1x3x384x512,image2:1x3x384x512"` -> `{"image1": (1, 3, 384, 512), ...}` (trtexec's syntax).

    Comma-separated `name:dims`, dims joined by `x`; a name containing ':' is written in single quotes
    (`'input:0':1x3x8x8`). Errors are one line naming the bad piece.
    """
    if not spec or not str(spec).strip():
        raise UserInputError(f"{option}: empty shape spec; expected name:DxDx..., e.g. image1:1x3x384x512")
    shapes: dict[str, tuple[int, ...]] = {}
    for raw in str(spec).split(","):
        piece = raw.strip()
        name, sep, dims = piece.rpartition(":")
        name = name.strip().strip("'\"")
        if not sep or not name:
            raise UserInputError(f"{option}: bad piece {piece!r}; expected name:DxDx..., e.g. image1:1x3x384x512")
        if name in shapes:
            raise UserInputError(f"{option}: input {name!r} is given twice")
        shapes[name] = tuple(_positive_dim(option, piece, d) for d in dims.split("x"))
    return shapes


def _positive_dim(option: str, piece: str, dim: str) -> int:
    text = dim.strip()
    if not text.isdigit() or len(text) > 9 or int(text) < 1:
        raise UserInputError(f"{option}: bad piece {piece!r}; dimension {dim!r} is not a positive integer")
    return int(text)


def parse_input_files(spec: str, option: str = "--inputs") -> dict[str, np.ndarray]:
    """`"x:a.npy,mask:m.npy"` -> arrays read from `.npy` files (no pickles: nothing in a file is executed)."""
    arrays: dict[str, np.ndarray] = {}
    for raw in str(spec).split(","):
        piece = raw.strip()
        name, sep, path = piece.partition(":")
        if not sep or not name.strip() or not path.strip():
            raise UserInputError(f"{option}: bad piece {piece!r}; expected name:file.npy")
        arrays[name.strip()] = load_array(Path(path.strip()))
    return arrays


def load_array(path: Path) -> np.ndarray:
    """A numeric array from a `.npy` file; one-line errors for missing, non-npy, pickled or non-numeric files."""
    if not path.is_file():
        raise UserInputError(f"{path}: input file not found (expected a .npy array)")
    data = path.read_bytes()
    try:
        stream = io.BytesIO(data)
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(stream)  # the header only: check sizes before allocating
    except Exception:  # numpy raises ValueError, SyntaxError or tokenizer errors for corrupt headers
        raise UserInputError(f"{path}: not a .npy array file (bad header)") from None
    if dtype.hasobject or not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise UserInputError(f"{path}: .npy holds {dtype}; expected a numeric or bool array")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if expected > len(data):
        raise UserInputError(f"{path}: .npy header declares {list(shape)} {dtype} ({expected} bytes) but the file "
                             f"holds {len(data)} bytes")
    return np.load(io.BytesIO(data), allow_pickle=False)


# --------------------------------------------------------------------------------------------- resolution
def resolve_shapes(specs: Sequence[TensorSpec], overrides: Mapping[str, Sequence[int]] | None = None,
                   arrays: Mapping[str, np.ndarray] | None = None) -> dict[str, tuple[int, ...]]:
    """A concrete shape per input: a given array's shape, else an override, else the declared static shape.

    Overrides must keep the rank and the fixed axes of a static graph; a dynamic axis with no override is a
    one-line error that shows the option to fix it.
    """
    overrides, arrays = dict(overrides or {}), dict(arrays or {})
    names = {s.name for s in specs}
    unknown = sorted((set(overrides) | set(arrays)) - names)
    if unknown:
        raise UserInputError(f"no input named {', '.join(map(repr, unknown))}; the inputs are "
                             f"{', '.join(s.describe() for s in specs)}")
    shapes = {}
    for spec in specs:
        wanted = tuple(arrays[spec.name].shape) if spec.name in arrays else overrides.get(spec.name)
        shapes[spec.name] = _fit(spec, tuple(wanted) if wanted is not None else None)
    return shapes


def _fit(spec: TensorSpec, wanted: tuple[int, ...] | None) -> tuple[int, ...]:
    if wanted is None:
        if spec.is_dynamic:
            example = "x".join(str(d) if isinstance(d, int) and d >= 0 else "1" for d in spec.shape)
            raise UserInputError(f"input {spec.describe()} has dynamic axes: give its shape, e.g. "
                                 f"--input-shape {spec.name}:{example}")
        return tuple(int(d) for d in spec.shape)  # type: ignore[arg-type]
    if len(wanted) != len(spec.shape):
        raise UserInputError(f"input {spec.describe()}: shape {_dims(wanted)} has rank {len(wanted)}, "
                             f"the graph declares rank {len(spec.shape)}")
    for axis, (declared, given) in enumerate(zip(spec.shape, wanted)):
        if isinstance(declared, int) and declared >= 0 and declared != given:
            raise UserInputError(f"input {spec.describe()}: axis {axis} is fixed at {declared} in the graph, "
                                 f"got {given} (shape {_dims(wanted)})")
    return tuple(int(v) for v in wanted)


def _dims(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


# --------------------------------------------------------------------------------------------- data
def generate_inputs(specs: Sequence[TensorSpec], shapes: Mapping[str, tuple[int, ...]], *,
                    arrays: Mapping[str, np.ndarray] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Feeds for every input: given arrays (cast to the declared dtype), else seeded generated data.

    Floats are uniform in [0, 1) (Polygraphy's default range), ints and bools 0 or 1; a flow model's image pair
    is a seeded image in [0, 255] and the same image shifted by (2, -3) px, so the model sees real motion.
    """
    arrays = dict(arrays or {})
    total = sum(int(np.prod(shapes[s.name], dtype=np.int64)) for s in specs if s.name not in arrays)
    if total > MAX_GENERATED_ELEMENTS:
        raise UserInputError(f"generated inputs would hold {total:,} elements (limit {MAX_GENERATED_ELEMENTS:,}); "
                             "give smaller shapes")
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    if is_flow_graph(specs) and not set(FLOW_INPUTS) & set(arrays):
        feeds.update(image_pair(shapes[FLOW_INPUTS[0]], rng))
    for spec in specs:
        if spec.name in arrays:
            feeds[spec.name] = np.ascontiguousarray(arrays[spec.name], dtype=spec.dtype)
        elif spec.name not in feeds:
            feeds[spec.name] = _random(rng, shapes[spec.name], np.dtype(spec.dtype))
    return feeds


def image_pair(shape: Sequence[int], rng: np.random.Generator | int = 0) -> dict[str, np.ndarray]:
    """`image1`, `image2`: float32 `shape` ([B,3,H,W]) in [0,255]; the second is the first shifted by (2,-3) px."""
    rng = np.random.default_rng(rng) if isinstance(rng, int) else rng
    image1 = (rng.random(tuple(shape), dtype=np.float32) * 255).astype(np.float32)
    return {"image1": image1, "image2": np.ascontiguousarray(np.roll(image1, (2, -3), axis=(2, 3)))}


def _random(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.floating):
        return rng.random(shape, dtype=np.float32).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    return rng.integers(0, 2, shape).astype(dtype)


def check_feeds(specs: Sequence[TensorSpec], feeds: Mapping[str, np.ndarray], where: str) -> None:
    """Names, ranks and fixed axes of `feeds` fit `specs`; otherwise one line naming input and expected shape."""
    names = [s.name for s in specs]
    missing = [n for n in names if n not in feeds]
    extra = sorted(set(feeds) - set(names))
    if missing or extra:
        raise UserInputError(f"{where} takes inputs {', '.join(s.describe() for s in specs)}; "
                             + (f"missing {missing}" if missing else f"unknown {extra}"))
    for spec in specs:
        _fit(spec, tuple(np.shape(feeds[spec.name])))
