"""Architectures and the search space of FlowNAS (FACTS §1); pure Python + numpy, no torch.

A `SearchSpace` is a table of `Gene`s (flownas.genes) plus the fixed stem/head widths and stage strides.
Every space has the four structural stage genes the encoder is built from (width, kernel_size, depth,
expand_ratio, ids `w`/`k`/`d`/`e`); more genes, per stage or global (an iteration count, an update-block
width), are registered with `space.with_genes(Gene(...))` and are then sampled, mutated, crossed over,
validated and written into dicts and ids without new code. The encoder ignores them: their consumers (the
search, a latency predictor) read them as `arch.<name>`.

An `ArchConfig` holds one value per gene, in the published dict format `{"width": [...], "kernel_size":
[...], "depth": [...], "expand_ratio": [...]}` (global genes appear as `"iters": 12`), and has a short
readable id (`w64.72.88.104.120.136-k3.5.3.5.5.5-d2.1.1.2.2.1-e1.4.6.5.6.6`, global genes add `-i12`).
Everything random takes an explicit `np.random.Generator` or int seed, never global state.
"""
from __future__ import annotations

import functools
import itertools
import json
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator, Mapping, Sequence

from .genes import (STAGE, ArchError, Gene, GeneValue, GeneValues, RngLike, SpaceError, as_int, as_rng, check_gene_names,
                    check_keys, check_table, gene_values, parse_id, with_defaults)

ARCH_KEYS = ("width", "kernel_size", "depth", "expand_ratio")  # the structural genes, in id order
ID_PREFIXES = ("w", "k", "d", "e")  # one letter per structural gene, in ARCH_KEYS order
SPACE_FIXED_KEYS = ("strides", "stem_channels", "head_channels")
SPACE_KEYS = ARCH_KEYS + SPACE_FIXED_KEYS + ("extra_genes",)
FLOWNAS_STRIDES = (1, 1, 2, 1, 2, 1)

_ID_START_RE = re.compile(r"w[0-9]")
# The space `resolve_arch` parses against, so that dicts and ids nested in its string forms know the
# space's extra genes; unset, parsing uses the FlowNAS space.
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


def _parse_json(text: str) -> Any:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArchError(f"architecture JSON does not parse: {exc}") from None
    if not isinstance(data, Mapping):
        raise ArchError(f"architecture JSON must be an object, got {type(data).__name__}")
    return data


def _default_space(space: "SearchSpace | None") -> "SearchSpace":
    return space or SearchSpace.flownas()


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


class ArchConfig(GeneValues):
    """One architecture: a value per gene of its space (a per-stage tuple, or an int for a global gene).

    Frozen and hashable (usable as a dict key); equal architectures hash equal. `ArchConfig(width,
    kernel_size, depth, expand_ratio)` builds one over the four structural genes; architectures with more
    genes come from `from_dict`/`from_id` with their space, or from the space's operators. Genes read as
    attributes: `arch.width`, `arch.iters`.
    """

    def __init__(self, width: Sequence[int], kernel_size: Sequence[int], depth: Sequence[int],
                 expand_ratio: Sequence[int]) -> None:
        values = dict(zip(ARCH_KEYS, (width, kernel_size, depth, expand_ratio)))
        object.__setattr__(self, "genes", gene_values(SearchSpace.flownas().genes, values))

    @property
    def num_stages(self) -> int:
        return len(self.width)

    @property
    def num_blocks(self) -> int:
        return sum(self.depth)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], space: "SearchSpace | None" = None) -> "ArchConfig":
        """Parse the published format: exactly the space's gene keys (default: FlowNAS), no aliases.

        A global gene with a declared default may be omitted and takes its default.
        """
        genes = _default_space(space).genes
        check_keys(d, [g.name for g in genes], [g.name for g in genes if g.default is None], "architecture",
                    ArchError)
        return cls.build(genes, {g.name: d.get(g.name, g.default) for g in genes})

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str, space: "SearchSpace | None" = None) -> "ArchConfig":
        return cls.from_dict(_parse_json(text), space)

    @classmethod
    def from_id(cls, s: str, space: "SearchSpace | None" = None) -> "ArchConfig":
        """Parse an id written by `id`: the space's gene groups in order (a defaulted global gene may be left out)."""
        space = _default_space(space)
        try:
            values = parse_id(s, space.genes)
        except ValueError:
            pattern = "-".join(f"{g.prefix}<{g.name}>" for g in space.genes)
            raise ArchError(
                f"malformed architecture id {s!r}: expected {pattern}, each a dot-separated list of integers "
                f"(e.g. {space.largest().id})"
            ) from None
        return cls.build(space.genes, values)

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


def flownas_genes() -> tuple[Gene, ...]:
    """The released FlowNAS genes (FACTS §1): 80,621,568 architectures."""
    return (
        Gene("width", "w", STAGE, ((56, 64), (64, 72), (88, 96), (96, 104, 112), (112, 120, 128), (128, 136))),
        Gene("kernel_size", "k", STAGE, ((3, 5),) * 6),
        Gene("depth", "d", STAGE, ((1, 2), (1, 2, 3), (1, 2, 3), (1, 2, 3), (2, 3, 4), (1, 2))),
        Gene("expand_ratio", "e", STAGE, ((1,), (1, 2, 4), (4, 5, 6), (4, 5, 6), (6,), (6,))),
    )


@functools.lru_cache(maxsize=1)
def _flownas_space() -> "SearchSpace":
    return SearchSpace(flownas_genes())


@dataclass(frozen=True)
class SearchSpace:
    """A table of genes (the four structural stage genes first), plus stage strides and stem/head widths."""

    genes: tuple[Gene, ...]
    strides: tuple[int, ...] = FLOWNAS_STRIDES
    stem_channels: int = 64
    head_channels: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "genes", _structural_first(self.genes))
        counts = {g.name: g.num_stages for g in self.genes if g.scope == STAGE}
        if len(set(counts.values())) != 1 or 0 in counts.values():
            raise SpaceError(f"every gene needs the same number of stages (at least one); counts are {counts}")
        strides = self.strides
        if isinstance(strides, (str, bytes)) or not isinstance(strides, Sequence) or len(strides) != self.num_stages:
            raise SpaceError(f"strides must be a list of {self.num_stages} entries (one per stage), got {strides!r}")
        object.__setattr__(self, "strides", tuple(as_int(s, "stride", SpaceError) for s in strides))
        if any(s not in (1, 2) for s in self.strides):
            raise SpaceError(f"strides must be 1 or 2, got {list(self.strides)}")
        if any(k % 2 == 0 for ks in self.kernel_sizes for k in ks):
            raise SpaceError(f"kernel sizes must be odd (padding k//2 keeps the size), got {self.kernel_sizes}")
        for attr in ("stem_channels", "head_channels"):
            value = as_int(getattr(self, attr), attr, SpaceError)
            if value < 1:
                raise SpaceError(f"{attr} must be positive, got {value}")
            object.__setattr__(self, attr, value)

    @classmethod
    def flownas(cls) -> "SearchSpace":
        """The released FlowNAS space (FACTS §1): 80,621,568 architectures (one shared, immutable instance)."""
        return _flownas_space()

    def with_genes(self, *genes: Gene) -> "SearchSpace":
        """This space with more genes registered (stage genes need one choice list per stage)."""
        return replace(self, genes=self.genes + tuple(genes))

    def gene(self, name: str) -> Gene:
        """The gene called `name`."""
        for gene in self.genes:
            if gene.name == name:
                return gene
        raise SpaceError(f"the search space has no gene {name!r} (genes: {', '.join(self.gene_names)})")

    @property
    def gene_names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.genes)

    @property
    def extra_genes(self) -> tuple[Gene, ...]:
        """The genes beyond the four structural ones."""
        return self.genes[len(ARCH_KEYS):]

    # Per-stage choices of the structural genes, under their historical names.
    widths = property(lambda self: self.gene("width").choices)
    kernel_sizes = property(lambda self: self.gene("kernel_size").choices)
    depths = property(lambda self: self.gene("depth").choices)
    expand_ratios = property(lambda self: self.gene("expand_ratio").choices)

    def to_dict(self) -> dict[str, Any]:
        """Structural genes with a list of choices per stage, strides, stem/head widths[, extra_genes]."""
        d: dict[str, Any] = {g.name: g.to_dict()["choices"] for g in self.genes[:len(ARCH_KEYS)]}
        d.update(strides=list(self.strides), stem_channels=self.stem_channels, head_channels=self.head_channels)
        if self.extra_genes:
            d["extra_genes"] = [g.to_dict() for g in self.extra_genes]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SearchSpace":
        """Inverse of `to_dict`; strides default to FlowNAS's, stem/head widths to 64/256, no extra genes."""
        check_keys(d, SPACE_KEYS, ARCH_KEYS, "search space", SpaceError)
        extra = d.get("extra_genes", [])
        if isinstance(extra, (str, bytes)) or not isinstance(extra, Sequence):
            raise SpaceError(f"extra_genes must be a list of gene dicts, got {extra!r}")
        genes = [Gene(key, prefix, STAGE, d[key]) for key, prefix in zip(ARCH_KEYS, ID_PREFIXES)]
        genes += [Gene.from_dict(g, f"extra_genes[{i}]") for i, g in enumerate(extra)]
        return cls(tuple(genes), **{k: d[k] for k in SPACE_FIXED_KEYS if k in d})

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
        return math.prod(g.size() for g in self.genes)

    def validate(self, arch: ArchConfig) -> None:
        """Raise `ArchError` naming stage, gene, value and allowed choices if `arch` is not in the space."""
        if not isinstance(arch, ArchConfig):
            raise ArchError(f"expected an ArchConfig, got {type(arch).__name__}")
        check_gene_names(arch, self.genes)
        if arch.num_stages != self.num_stages:
            raise ArchError(f"architecture has {arch.num_stages} stages per gene, the space has {self.num_stages}")
        for gene in self.genes:
            gene.check(getattr(arch, gene.name))

    def fill_defaults(self, arch: ArchConfig) -> ArchConfig:
        """`arch` plus the defaults of the global genes it lacks; unchanged unless only such genes are missing."""
        values = with_defaults(arch, self.genes)
        return arch if values is None else ArchConfig.build(self.genes, values)

    def restrict(self, arch: ArchConfig) -> ArchConfig:
        """`arch` with only this space's genes: a searched `...-i8` architecture -> the encoders' architecture."""
        values = arch.to_dict()
        return ArchConfig.from_dict({g.name: values[g.name] for g in self.genes if g.name in values}, self)

    def contains(self, arch: ArchConfig) -> bool:
        try:
            self.validate(arch)
        except ArchError:
            return False
        return True

    def _arch(self, values: Iterator[GeneValue]) -> ArchConfig:
        return ArchConfig.build(self.genes, dict(zip(self.gene_names, values)))

    def smallest(self) -> ArchConfig:
        return self._arch(g.smallest() for g in self.genes)

    def largest(self) -> ArchConfig:
        return self._arch(g.largest() for g in self.genes)

    def sample(self, rng: RngLike) -> ArchConfig:
        """Uniform over the space: every gene (of every stage) drawn independently, in table order."""
        rng = as_rng(rng)
        return self._arch(g.sample(rng) for g in self.genes)

    def mutate(self, arch: ArchConfig, rng: RngLike, prob: float = 0.1) -> ArchConfig:
        """Resample each gene (of each stage) with probability `prob` (the new value may equal the old one)."""
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"mutation probability must lie in [0, 1], got {prob}")
        self.validate(arch)
        rng = as_rng(rng)
        return self._arch(g.mutate(getattr(arch, g.name), rng, prob) for g in self.genes)

    def crossover(self, a: ArchConfig, b: ArchConfig, rng: RngLike) -> ArchConfig:
        """Each gene (of each stage) from `a` or `b` with probability 0.5."""
        self.validate(a)
        self.validate(b)
        rng = as_rng(rng)
        return self._arch(g.crossover(getattr(a, g.name), getattr(b, g.name), rng) for g in self.genes)


def _structural_first(genes: Any) -> tuple[Gene, ...]:
    """A checked gene table with the structural genes first, in ARCH_KEYS order (ids do not follow file order)."""
    reserved = [name for name in dir(ArchConfig) if name not in ARCH_KEYS] + ["genes"]
    genes = check_table(genes, reserved)
    by_name = {g.name: g for g in genes}
    for name, prefix in zip(ARCH_KEYS, ID_PREFIXES):
        gene = by_name.get(name)
        if gene is None or gene.scope != STAGE or gene.prefix != prefix:
            raise SpaceError(f"a search space needs the stage gene {name!r} with id prefix {prefix!r} "
                             f"(the encoder is built from {', '.join(ARCH_KEYS)})")
    return tuple(by_name[k] for k in ARCH_KEYS) + tuple(g for g in genes if g.name not in ARCH_KEYS)


def _read_mapping_file(path: str | os.PathLike, error: type) -> Any:
    """Parse a JSON (.json) or YAML (anything else) file; every failure is one line naming the file.

    Delegates to `flownas.configfile.read_mapping_file` (size, UTF-8, nesting, digit and alias-bomb limits).
    """
    from .configfile import read_mapping_file

    return read_mapping_file(path, error)


# ----------------------------------------------------------------------------------- named archs
RAFT_S = ArchConfig((64, 72, 96, 104, 120, 136), (3, 3, 5, 3, 5, 5), (2, 2, 2, 1, 2, 1), (1, 2, 5, 5, 6, 6))
RAFT_K = ArchConfig((64, 72, 88, 104, 120, 136), (3, 5, 3, 5, 5, 5), (2, 1, 1, 2, 2, 1), (1, 4, 6, 5, 6, 6))

# Read-only so no caller can register into a process-wide table behind others' backs.
NAMED_ARCHS: Mapping[str, ArchConfig] = MappingProxyType({"raft-s": RAFT_S, "raft-k": RAFT_K})
SPACE_RELATIVE_NAMES = ("largest", "smallest")


class UnknownArchError(ArchError):
    """A spec that is no architecture form at all (not a name, id, JSON, file or dict)."""


def _unknown_spec(spec: Any) -> ArchError:
    names = ", ".join(list(NAMED_ARCHS) + list(SPACE_RELATIVE_NAMES))
    try:  # repr of a 5000-digit integer raises (Python's int-to-str limit); a 300-character string is noise
        shown = repr(spec) if len(repr(spec)) <= 80 else f"<a {type(spec).__name__} too long to show>"
    except ValueError:
        shown = f"<a {type(spec).__name__} too long to show>"
    return UnknownArchError(
        f"unknown architecture {shown}: give an ArchConfig, a name ({names}), an id like {RAFT_K.id}, "
        f"a JSON/YAML file or a dict with keys {', '.join(ARCH_KEYS)} (optionally wrapped as {{\"arch\": ...}})"
    )


def _arch_from_mapping(d: Mapping[str, Any], space: SearchSpace) -> ArchConfig:
    # Checkpoints and search results store the architecture under "arch" beside other metadata.
    if "arch" in d and isinstance(d["arch"], Mapping):
        return ArchConfig.from_dict(d["arch"], space)
    return ArchConfig.from_dict(d, space)


def _arch_from_file(path: str | os.PathLike, space: SearchSpace) -> ArchConfig:
    data = _read_mapping_file(path, ArchError)
    if not isinstance(data, Mapping):
        raise ArchError(f"{path}: expected a dict with keys {', '.join(ARCH_KEYS)}, got {type(data).__name__}")
    try:
        return _arch_from_mapping(data, space)
    except ArchError as exc:
        raise ArchError(f"{path}: {exc}") from None


def _arch_from_string(spec: str, space: SearchSpace) -> tuple[ArchConfig | None, str | None]:
    """Names, JSON text, existing files and ids (with the file it came from); None when `spec` is none of them."""
    text = spec.strip()
    if text.lower() in NAMED_ARCHS:
        return NAMED_ARCHS[text.lower()], None
    if text.startswith("{"):
        return _arch_from_mapping(_parse_json(text), space), None
    try:  # Path.is_file raises OSError (ENAMETOOLONG) for a string longer than a file name may be
        is_file = Path(text).is_file()
    except (OSError, ValueError):
        is_file = False
    if is_file:
        return _arch_from_file(text, space), text
    if _ID_START_RE.match(text):  # looks like an id: a malformed one should say so, not "unknown"
        return ArchConfig.from_id(text, space), None
    return None, None


def resolve_arch(spec: Any, space: SearchSpace | None = None) -> ArchConfig:
    """An `ArchConfig` from any accepted form, validated against `space` (default: FlowNAS).

    Forms: an ArchConfig; a name (`raft-s`, `raft-k`, `largest`, `smallest`); an id string; a JSON
    string; a path to a JSON/YAML file holding the published dict (or `{"arch": {...}}`); a dict.
    Dicts and ids are read with `space`'s genes; an architecture lacking a global gene that has a
    default in `space` (a named FlowNAS arch in a space with an `iters` gene) takes the default.
    Errors about an architecture read from a file name the file.
    """
    space = space or SearchSpace.flownas()
    arch, source = _parse_spec(spec, space)
    if arch is None:
        raise _unknown_spec(spec)
    try:
        arch = space.fill_defaults(arch)
        space.validate(arch)
    except ArchError as exc:
        if source is None:
            raise
        raise ArchError(f"{source}: {exc}") from None
    return arch


def _parse_spec(spec: Any, space: SearchSpace) -> tuple[ArchConfig | None, str | None]:
    """The architecture a spec names (None when it is no accepted form) and the file it came from, if any."""
    if isinstance(spec, ArchConfig):
        return spec, None
    if isinstance(spec, Mapping):
        return _arch_from_mapping(spec, space), None
    if isinstance(spec, os.PathLike):
        return _arch_from_file(spec, space), os.fspath(spec)
    if isinstance(spec, str) and spec.strip().lower() in SPACE_RELATIVE_NAMES:
        return (space.largest() if spec.strip().lower() == "largest" else space.smallest()), None
    if isinstance(spec, str):
        return _arch_from_string(spec, space)
    return None, None
