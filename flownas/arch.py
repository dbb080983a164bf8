"""Architectures and the search space of FlowNAS (FACTS §1); pure Python + numpy, no torch.

An `ArchConfig` holds one choice per stage for each of the four genes (width, kernel_size, depth,
expand_ratio), in the published dict format `{"width": [...], "kernel_size": [...], "depth": [...],
"expand_ratio": [...]}`. A `SearchSpace` holds the allowed choices per stage and does everything random
(sample, mutate, crossover) from an explicit `np.random.Generator`, never from global state.
"""
from __future__ import annotations

import itertools
import json
import math
import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence, Union

import numpy as np
from .errors import ToolkitError

ARCH_KEYS = ("width", "kernel_size", "depth", "expand_ratio")
ID_PREFIXES = ("w", "k", "d", "e")  # one letter per gene, in ARCH_KEYS order
SPACE_FIELDS = ("widths", "kernel_sizes", "depths", "expand_ratios")  # SearchSpace attribute per gene
SPACE_KEYS = ARCH_KEYS + ("strides", "stem_channels", "head_channels")
FLOWNAS_STRIDES = (1, 1, 2, 1, 2, 1)

RngLike = Union[np.random.Generator, int]
_ID_RE = re.compile(r"w([0-9.]+)-k([0-9.]+)-d([0-9.]+)-e([0-9.]+)")
_ID_START_RE = re.compile(r"w[0-9]")


class ArchError(ToolkitError, ValueError):
    """An architecture that is malformed or outside its search space (one-line message)."""


class SpaceError(ToolkitError, ValueError):
    """A malformed search-space definition (one-line message)."""


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round `v` to the nearest multiple of `divisor` (halves up), at least `min_value` (default divisor).

    The MobileNet rule: if rounding lost more than 10% of `v`, add one `divisor` back.
    """
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def expanded_channels(in_channels: int, expand_ratio: float) -> int:
    """Mid channels of an MBConv: `make_divisible(round(in * expand), 8)`.

    Python's built-in `round` (banker's rounding) on purpose: it is what the AttentiveNAS-derived release
    uses, so fractional ratios give the same channel counts as the published weights.
    """
    return make_divisible(round(in_channels * expand_ratio), 8)


def mid_channels(in_channels: int, expand_ratio: float, has_expand: bool) -> int:
    """Depthwise width of a block: expanded, or the input width when the stage has no expand conv."""
    return expanded_channels(in_channels, expand_ratio) if has_expand else in_channels


def _as_int(value: Any, what: str, error: type = ArchError) -> int:
    # JSON and YAML give ints; numpy integers are accepted, floats and bools are not (2.5 is no width).
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise error(f"{what} must be an integer, got {value!r}")
    return int(value)


def _as_rng(rng: RngLike) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a np.random.Generator or an int seed, got {type(rng).__name__}")


def _check_keys(d: Any, allowed: Sequence[str], what: str, error: type) -> None:
    # The four gene keys are always required; anything not in `allowed` is a typo or an alias.
    if not isinstance(d, Mapping):
        raise error(f"{what} must be a dict with keys {', '.join(ARCH_KEYS)}, got {type(d).__name__}")
    for key in d:
        if key not in allowed:
            raise error(f"unknown {what} key {key!r} (allowed keys: {', '.join(allowed)})")
    for key in ARCH_KEYS:
        if key not in d:
            raise error(f"{what} is missing key {key!r} (required keys: {', '.join(ARCH_KEYS)})")


def _parse_json(text: str) -> Any:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArchError(f"architecture JSON does not parse: {exc}") from None
    if not isinstance(data, Mapping):
        raise ArchError(f"architecture JSON must be an object, got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class BlockSpec:
    """One block of a static network: where it sits and the channel counts that fix its weights."""

    stage: int
    index: int  # position inside the stage (0 = first block, which carries the stage stride)
    slot: int  # supernet block slot (stage offset + index)
    in_channels: int
    out_channels: int
    kernel_size: int
    expand_ratio: int
    mid_channels: int
    stride: int
    has_expand: bool


@dataclass(frozen=True)
class ArchConfig:
    """One architecture: a per-stage tuple for each gene. Frozen and hashable (usable as a dict key)."""

    width: tuple[int, ...]
    kernel_size: tuple[int, ...]
    depth: tuple[int, ...]
    expand_ratio: tuple[int, ...]

    def __post_init__(self) -> None:
        # Coerce lists (JSON) to tuples so that equal architectures hash equal.
        for key in ARCH_KEYS:
            values = getattr(self, key)
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
                raise ArchError(f"{key} must be a list with one integer per stage, got {values!r}")
            coerced = tuple(_as_int(v, f"{key}[{i}]") for i, v in enumerate(values))
            object.__setattr__(self, key, coerced)
        lengths = {key: len(getattr(self, key)) for key in ARCH_KEYS}
        if len(set(lengths.values())) != 1 or lengths["width"] == 0:
            raise ArchError(f"all genes need one entry per stage; lengths are {lengths}")

    def __str__(self) -> str:
        return self.id

    @property
    def num_stages(self) -> int:
        return len(self.width)

    @property
    def num_blocks(self) -> int:
        return sum(self.depth)

    def to_dict(self) -> dict[str, list[int]]:
        """The published format: `{"width": [...], "kernel_size": [...], "depth": [...], "expand_ratio": [...]}`."""
        return {key: list(getattr(self, key)) for key in ARCH_KEYS}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ArchConfig":
        """Parse the published format; exactly the four keys, no aliases."""
        _check_keys(d, ARCH_KEYS, "architecture", ArchError)
        return cls(*(d[k] for k in ARCH_KEYS))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "ArchConfig":
        return cls.from_dict(_parse_json(text))

    @property
    def id(self) -> str:
        """Short readable id, e.g. `w64.72.88.104.120.136-k3.5.3.5.5.5-d2.1.1.2.2.1-e1.4.6.5.6.6`."""
        return "-".join(p + ".".join(map(str, getattr(self, k))) for p, k in zip(ID_PREFIXES, ARCH_KEYS))

    @classmethod
    def from_id(cls, s: str) -> "ArchConfig":
        """Parse an id written by `id`."""
        match = _ID_RE.fullmatch(s.strip()) if isinstance(s, str) else None
        try:
            if match is None:
                raise ValueError
            genes = [tuple(int(v) for v in group.split(".")) for group in match.groups()]
        except ValueError:
            raise ArchError(
                f"malformed architecture id {s!r}: expected w<widths>-k<kernels>-d<depths>-e<expands>, "
                f"each a dot-separated list of integers (e.g. {RAFT_K.id})"
            ) from None
        return cls(*genes)

    def blocks(self, space: "SearchSpace | None" = None) -> list[BlockSpec]:
        """The static blocks of this architecture in order, channels chained from the stem.

        The first block of a stage carries the stage stride. A stage whose largest expand choice is 1
        has no expand conv (FlowNAS stage 0), so its mid channels are its input channels; otherwise
        mid = `expanded_channels(in, expand)` (for FlowNAS both give the same numbers at expand 1).
        """
        space = space or SearchSpace.flownas()
        space.validate(self)
        blocks, in_channels = [], space.stem_channels
        for stage, (offset, stride) in enumerate(zip(space.stage_offsets, space.strides)):
            has_expand = max(space.expand_ratios[stage]) > 1
            out, expand = self.width[stage], self.expand_ratio[stage]
            for j in range(self.depth[stage]):
                mid = mid_channels(in_channels, expand, has_expand)
                blocks.append(BlockSpec(stage, j, offset + j, in_channels, out, self.kernel_size[stage],
                                        expand, mid, stride if j == 0 else 1, has_expand))
                in_channels = out
        return blocks


def _choices(value: Any, key: str) -> tuple[tuple[int, ...], ...]:
    # One non-empty list of distinct positive ints per stage; duplicates would bias uniform sampling.
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise SpaceError(f"{key} must be a list with one list of choices per stage, got {value!r}")
    stages = []
    for stage, options in enumerate(value):
        if isinstance(options, (str, bytes)) or not isinstance(options, Sequence) or len(options) == 0:
            raise SpaceError(f"{key} of stage {stage} must be a non-empty list of choices, got {options!r}")
        ints = tuple(_as_int(v, f"{key} choice of stage {stage}", SpaceError) for v in options)
        if min(ints) < 1 or len(set(ints)) != len(ints):
            raise SpaceError(f"{key} of stage {stage} must hold distinct positive integers, got {list(ints)}")
        stages.append(ints)
    return tuple(stages)


@dataclass(frozen=True)
class SearchSpace:
    """Per-stage choices of each gene, plus the fixed stem/head widths and stage strides."""

    widths: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    depths: tuple[tuple[int, ...], ...]
    expand_ratios: tuple[tuple[int, ...], ...]
    strides: tuple[int, ...] = FLOWNAS_STRIDES
    stem_channels: int = 64
    head_channels: int = 256

    def __post_init__(self) -> None:
        for key, attr in zip(ARCH_KEYS, SPACE_FIELDS):
            object.__setattr__(self, attr, _choices(getattr(self, attr), key))
        counts = {key: len(getattr(self, attr)) for key, attr in zip(ARCH_KEYS, SPACE_FIELDS)}
        if len(set(counts.values())) != 1 or counts["width"] == 0:
            raise SpaceError(f"every gene needs the same number of stages; counts are {counts}")
        strides = self.strides
        if isinstance(strides, (str, bytes)) or not isinstance(strides, Sequence) or len(strides) != self.num_stages:
            raise SpaceError(f"strides must be a list of {self.num_stages} entries (one per stage), got {strides!r}")
        object.__setattr__(self, "strides", tuple(_as_int(s, "stride", SpaceError) for s in strides))
        if any(s not in (1, 2) for s in self.strides):
            raise SpaceError(f"strides must be 1 or 2, got {list(self.strides)}")
        if any(k % 2 == 0 for ks in self.kernel_sizes for k in ks):
            raise SpaceError(f"kernel sizes must be odd (padding k//2 keeps the size), got {self.kernel_sizes}")
        for attr in ("stem_channels", "head_channels"):
            value = _as_int(getattr(self, attr), attr, SpaceError)
            if value < 1:
                raise SpaceError(f"{attr} must be positive, got {value}")
            object.__setattr__(self, attr, value)

    @classmethod
    def flownas(cls) -> "SearchSpace":
        """The released FlowNAS space (FACTS §1): 80,621,568 architectures."""
        return cls(
            widths=((56, 64), (64, 72), (88, 96), (96, 104, 112), (112, 120, 128), (128, 136)),
            kernel_sizes=((3, 5),) * 6,
            depths=((1, 2), (1, 2, 3), (1, 2, 3), (1, 2, 3), (2, 3, 4), (1, 2)),
            expand_ratios=((1,), (1, 2, 4), (4, 5, 6), (4, 5, 6), (6,), (6,)),
        )

    def to_dict(self) -> dict[str, Any]:
        """Published gene keys with a list of choices per stage, plus strides and stem/head widths."""
        d: dict[str, Any] = {key: [list(c) for c in getattr(self, attr)] for key, attr in zip(ARCH_KEYS, SPACE_FIELDS)}
        d.update(strides=list(self.strides), stem_channels=self.stem_channels, head_channels=self.head_channels)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SearchSpace":
        """Inverse of `to_dict`; strides default to FlowNAS's, stem/head widths to 64/256."""
        _check_keys(d, SPACE_KEYS, "search space", SpaceError)
        extra = {k: d[k] for k in ("strides", "stem_channels", "head_channels") if k in d}
        return cls(*(d[k] for k in ARCH_KEYS), **extra)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "SearchSpace":
        """Load a JSON or YAML file in the `to_dict` format; errors name the file."""
        data = _read_mapping_file(path, SpaceError)
        try:
            return cls.from_dict(data)
        except SpaceError as exc:
            raise SpaceError(f"{path}: {exc}") from None

    @property
    def num_stages(self) -> int:
        return len(self.widths)

    @property
    def max_slots_per_stage(self) -> tuple[int, ...]:
        """Supernet block slots per stage (the largest depth choice)."""
        return tuple(max(d) for d in self.depths)

    @property
    def stage_offsets(self) -> tuple[int, ...]:
        """First supernet slot of each stage; FlowNAS: (0, 2, 5, 8, 11, 15)."""
        return tuple(itertools.accumulate(self.max_slots_per_stage, initial=0))[:-1]

    @property
    def num_slots(self) -> int:
        return sum(self.max_slots_per_stage)

    def size(self) -> int:
        """Number of distinct architectures (product of the number of choices of every gene)."""
        return math.prod(len(c) for attr in SPACE_FIELDS for c in getattr(self, attr))

    def validate(self, arch: ArchConfig) -> None:
        """Raise `ArchError` naming stage, gene, value and allowed choices if `arch` is not in the space."""
        if not isinstance(arch, ArchConfig):
            raise ArchError(f"expected an ArchConfig, got {type(arch).__name__}")
        if arch.num_stages != self.num_stages:
            raise ArchError(f"architecture has {arch.num_stages} stages per gene, the space has {self.num_stages}")
        for key, attr in zip(ARCH_KEYS, SPACE_FIELDS):
            for stage, (value, choices) in enumerate(zip(getattr(arch, key), getattr(self, attr))):
                if value not in choices:
                    raise ArchError(f"stage {stage} {key}={value} is not one of {choices}")

    def contains(self, arch: ArchConfig) -> bool:
        try:
            self.validate(arch)
        except ArchError:
            return False
        return True

    def smallest(self) -> ArchConfig:
        return ArchConfig(*(tuple(min(c) for c in getattr(self, attr)) for attr in SPACE_FIELDS))

    def largest(self) -> ArchConfig:
        return ArchConfig(*(tuple(max(c) for c in getattr(self, attr)) for attr in SPACE_FIELDS))

    def _pick(self, rng: np.random.Generator, attr: str, stage: int) -> int:
        choices = getattr(self, attr)[stage]
        return choices[int(rng.integers(len(choices)))]

    def sample(self, rng: RngLike) -> ArchConfig:
        """Uniform over the space: every gene of every stage drawn independently."""
        rng = _as_rng(rng)
        return ArchConfig(*(tuple(self._pick(rng, attr, s) for s in range(self.num_stages)) for attr in SPACE_FIELDS))

    def mutate(self, arch: ArchConfig, rng: RngLike, prob: float = 0.1) -> ArchConfig:
        """Resample each gene with probability `prob` (the new value may equal the old one)."""
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"mutation probability must lie in [0, 1], got {prob}")
        self.validate(arch)
        rng = _as_rng(rng)
        genes = []
        for key, attr in zip(ARCH_KEYS, SPACE_FIELDS):
            genes.append(tuple(self._pick(rng, attr, s) if rng.random() < prob else v
                               for s, v in enumerate(getattr(arch, key))))
        return ArchConfig(*genes)

    def crossover(self, a: ArchConfig, b: ArchConfig, rng: RngLike) -> ArchConfig:
        """Each gene of each stage from `a` or `b` with probability 0.5."""
        self.validate(a)
        self.validate(b)
        rng = _as_rng(rng)
        genes = []
        for key in ARCH_KEYS:
            genes.append(tuple(va if rng.random() < 0.5 else vb for va, vb in zip(getattr(a, key), getattr(b, key))))
        return ArchConfig(*genes)


def _read_mapping_file(path: str | os.PathLike, error: type) -> Any:
    """Parse a JSON (.json) or YAML (anything else) file; every failure is one line naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise error(f"{path}: not valid JSON: {exc}") from None
    import yaml  # lazy: only file-based specs need it

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:  # its message spans lines; keep the error to one
        raise error(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None


# ----------------------------------------------------------------------------------- named archs
RAFT_S = ArchConfig((64, 72, 96, 104, 120, 136), (3, 3, 5, 3, 5, 5), (2, 2, 2, 1, 2, 1), (1, 2, 5, 5, 6, 6))
RAFT_K = ArchConfig((64, 72, 88, 104, 120, 136), (3, 5, 3, 5, 5, 5), (2, 1, 1, 2, 2, 1), (1, 4, 6, 5, 6, 6))

# Read-only so no caller can register into a process-wide table behind others' backs.
NAMED_ARCHS: Mapping[str, ArchConfig] = MappingProxyType({"raft-s": RAFT_S, "raft-k": RAFT_K})
SPACE_RELATIVE_NAMES = ("largest", "smallest")


def _unknown_spec(spec: Any) -> ArchError:
    names = ", ".join(list(NAMED_ARCHS) + list(SPACE_RELATIVE_NAMES))
    return ArchError(
        f"unknown architecture {spec!r}: give an ArchConfig, a name ({names}), an id like {RAFT_K.id}, "
        f"a JSON/YAML file or a dict with keys {', '.join(ARCH_KEYS)} (optionally wrapped as {{\"arch\": ...}})"
    )


def _arch_from_mapping(d: Mapping[str, Any]) -> ArchConfig:
    # Checkpoints and search results store the architecture under "arch" beside other metadata.
    if "arch" in d and isinstance(d["arch"], Mapping):
        return ArchConfig.from_dict(d["arch"])
    return ArchConfig.from_dict(d)


def _arch_from_file(path: str | os.PathLike) -> ArchConfig:
    data = _read_mapping_file(path, ArchError)
    if not isinstance(data, Mapping):
        raise ArchError(f"{path}: expected a dict with keys {', '.join(ARCH_KEYS)}, got {type(data).__name__}")
    try:
        return _arch_from_mapping(data)
    except ArchError as exc:
        raise ArchError(f"{path}: {exc}") from None


def _arch_from_string(spec: str) -> ArchConfig | None:
    """Names, JSON text, existing files and ids; None when `spec` is none of them."""
    text = spec.strip()
    if text.lower() in NAMED_ARCHS:
        return NAMED_ARCHS[text.lower()]
    if text.startswith("{"):
        return _arch_from_mapping(_parse_json(text))
    if Path(text).is_file():
        return _arch_from_file(text)
    if _ID_START_RE.match(text):  # looks like an id: a malformed one should say so, not "unknown"
        return ArchConfig.from_id(text)
    return None


def resolve_arch(spec: Any, space: SearchSpace | None = None) -> ArchConfig:
    """An `ArchConfig` from any accepted form, validated against `space` (default: FlowNAS).

    Forms: an ArchConfig; a name (`raft-s`, `raft-k`, `largest`, `smallest`); an id string; a JSON
    string; a path to a JSON/YAML file holding the published dict (or `{"arch": {...}}`); a dict.
    """
    space = space or SearchSpace.flownas()
    arch: ArchConfig | None = None
    if isinstance(spec, ArchConfig):
        arch = spec
    elif isinstance(spec, Mapping):
        arch = _arch_from_mapping(spec)
    elif isinstance(spec, os.PathLike):
        arch = _arch_from_file(spec)
    elif isinstance(spec, str) and spec.strip().lower() in SPACE_RELATIVE_NAMES:
        arch = space.largest() if spec.strip().lower() == "largest" else space.smallest()
    elif isinstance(spec, str):
        arch = _arch_from_string(spec)
    if arch is None:
        raise _unknown_spec(spec)
    space.validate(arch)
    return arch
