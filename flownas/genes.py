"""The genes of a search space: one `Gene` per searchable choice; pure Python + numpy, no torch.

A gene has a name (its key in an architecture dict), an id prefix (its group in an architecture id), a
scope and its choices:

- scope "stage": one value per stage, `choices` holds one tuple of allowed values per stage
  (`Gene("width", "w", "stage", ((56, 64), (64, 72), ...))`); in a dict it is a list, in an id
  `w64.72.88...` (dot-separated).
- scope "global": one value for the whole network, `choices` is one tuple
  (`Gene("iters", "i", "global", (4, 8, 12))`); in a dict it is an int, in an id `i12`.

Every random operation (sample, mutate, crossover) works gene by gene from an explicit
`np.random.Generator`, so a gene registered in a space is searched without new code. Values are
integers (an id is dot- and dash-separated integers). A global gene may declare a `default`: an
architecture dict or id that omits the gene takes it (so archs stored before the gene was added still load).
"""
from __future__ import annotations

import keyword
import numbers
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Union

import numpy as np

from .errors import ToolkitError

STAGE, GLOBAL = "stage", "global"
SCOPES = (STAGE, GLOBAL)
GeneValue = Union[int, tuple[int, ...]]
RngLike = Union[np.random.Generator, int]
GENE_KEYS = ("name", "prefix", "scope", "choices", "default")
_PREFIX_RE = re.compile(r"[a-z]+")


class ArchError(ToolkitError, ValueError):
    """An architecture that is malformed or outside its search space (one-line message)."""


class SpaceError(ToolkitError, ValueError):
    """A malformed search-space definition (one-line message)."""


def as_int(value: Any, what: str, error: type = ArchError) -> int:
    """`value` as an int; JSON/YAML ints and numpy integers pass, floats and bools do not (2.5 is no width)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise error(f"{what} must be an integer, got {value!r}")
    return int(value)


def as_rng(rng: RngLike) -> np.random.Generator:
    """An explicit generator, or one seeded from an int; never numpy's global state."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a np.random.Generator or an int seed, got {type(rng).__name__}")


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _option_list(options: Any, what: str) -> tuple[int, ...]:
    # Non-empty, distinct, positive: duplicates would bias uniform sampling.
    if not _is_list(options) or len(options) == 0:
        raise SpaceError(f"{what} must be a non-empty list of choices, got {options!r}")
    ints = tuple(as_int(v, f"{what} choice", SpaceError) for v in options)
    if min(ints) < 1 or len(set(ints)) != len(ints):
        raise SpaceError(f"{what} must hold distinct positive integers, got {list(ints)}")
    return ints


def coerce_value(name: str, scope: str, value: Any) -> GeneValue:
    """An architecture's value of one gene in canonical form: a tuple of ints (stage) or an int (global)."""
    if scope == GLOBAL:
        return as_int(value, name)
    if not _is_list(value):
        raise ArchError(f"{name} must be a list with one integer per stage, got {value!r}")
    return tuple(as_int(v, f"{name}[{i}]") for i, v in enumerate(value))


@dataclass(frozen=True)
class Gene:
    """One searchable choice of a space: name (dict key), id prefix, scope ("stage"/"global"), choices.

    `choices`: for scope "stage" one non-empty tuple of distinct positive ints per stage; for scope
    "global" one such tuple. `default` (global genes only) is used when a dict or id omits the gene.
    """

    name: str
    prefix: str
    scope: str
    choices: tuple
    default: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier() or self.name.startswith("_") \
                or keyword.iskeyword(self.name):
            raise SpaceError(f"gene name must be a Python identifier without a leading underscore, got {self.name!r}")
        if not isinstance(self.prefix, str) or not _PREFIX_RE.fullmatch(self.prefix):
            raise SpaceError(f"gene {self.name!r}: id prefix must be lowercase letters, got {self.prefix!r}")
        if self.scope not in SCOPES:
            raise SpaceError(f"gene {self.name!r}: scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        if self.scope == GLOBAL:
            choices: tuple = _option_list(self.choices, self.name)
        elif not _is_list(self.choices):
            raise SpaceError(f"{self.name} must be a list with one list of choices per stage, got {self.choices!r}")
        else:
            choices = tuple(_option_list(c, f"{self.name} of stage {s}") for s, c in enumerate(self.choices))
        object.__setattr__(self, "choices", choices)
        self._check_default()

    def _check_default(self) -> None:
        if self.default is None:
            return
        if self.scope != GLOBAL:
            raise SpaceError(f"gene {self.name!r}: only global genes take a default")
        default = as_int(self.default, f"gene {self.name!r} default", SpaceError)
        if default not in self.choices:
            raise SpaceError(f"gene {self.name!r}: default {default} is not one of {self.choices}")
        object.__setattr__(self, "default", default)

    # ------------------------------------------------------------------------------------- shape
    @property
    def num_stages(self) -> int | None:
        """Stages this gene covers (None for a global gene)."""
        return len(self.choices) if self.scope == STAGE else None

    def options(self, stage: int | None = None) -> tuple[int, ...]:
        """Allowed values at `stage` (stage genes) or overall (global genes, `stage=None`)."""
        return self.choices[stage] if self.scope == STAGE else self.choices

    def size(self) -> int:
        """Number of distinct values this gene can take (product over stages for a stage gene)."""
        if self.scope == GLOBAL:
            return len(self.choices)
        count = 1
        for options in self.choices:
            count *= len(options)
        return count

    def smallest(self) -> GeneValue:
        return min(self.choices) if self.scope == GLOBAL else tuple(min(c) for c in self.choices)

    def largest(self) -> GeneValue:
        return max(self.choices) if self.scope == GLOBAL else tuple(max(c) for c in self.choices)

    # ------------------------------------------------------------------------------------- checks
    def check(self, value: GeneValue) -> None:
        """Raise `ArchError` naming stage, gene, value and allowed choices if `value` is not allowed."""
        if self.scope == GLOBAL:
            if value not in self.choices:
                raise ArchError(f"{self.name}={value} is not one of {self.choices}")
            return
        for stage, (v, options) in enumerate(zip(value, self.choices)):
            if v not in options:
                raise ArchError(f"stage {stage} {self.name}={v} is not one of {options}")

    # ------------------------------------------------------------------------------------- random
    @staticmethod
    def _pick(rng: np.random.Generator, options: tuple[int, ...]) -> int:
        return options[int(rng.integers(len(options)))]

    def sample(self, rng: np.random.Generator) -> GeneValue:
        """Uniform: each stage (or the one global value) drawn independently."""
        if self.scope == GLOBAL:
            return self._pick(rng, self.choices)
        return tuple(self._pick(rng, options) for options in self.choices)

    def mutate(self, value: GeneValue, rng: np.random.Generator, prob: float) -> GeneValue:
        """Resample each stage (or the global value) with probability `prob`; the new value may equal the old."""
        if self.scope == GLOBAL:
            return self._pick(rng, self.choices) if rng.random() < prob else value
        # Condition first, then the draw: the order of draws from `rng` is part of the seeded behaviour.
        return tuple(self._pick(rng, options) if rng.random() < prob else v for v, options in zip(value, self.choices))

    def crossover(self, a: GeneValue, b: GeneValue, rng: np.random.Generator) -> GeneValue:
        """Each stage (or the global value) from `a` or `b` with probability 0.5."""
        if self.scope == GLOBAL:
            return a if rng.random() < 0.5 else b
        return tuple(va if rng.random() < 0.5 else vb for va, vb in zip(a, b))

    # ------------------------------------------------------------------------------------- ids
    def format(self, value: GeneValue) -> str:
        """The id group of `value`: `w64.72.88` (stage) or `i12` (global)."""
        return self.prefix + (str(value) if self.scope == GLOBAL else ".".join(map(str, value)))

    def parse(self, text: str) -> GeneValue:
        """Inverse of `format` without the prefix; `ValueError` when `text` is no such group."""
        if not re.fullmatch(r"[0-9]+" if self.scope == GLOBAL else r"[0-9]+(\.[0-9]+)*", text):
            raise ValueError(text)
        return int(text) if self.scope == GLOBAL else tuple(int(v) for v in text.split("."))

    # ------------------------------------------------------------------------------------- files
    def to_dict(self) -> dict[str, Any]:
        """`{"name", "prefix", "scope", "choices"[, "default"]}` with lists, JSON/YAML-ready."""
        choices = list(self.choices) if self.scope == GLOBAL else [list(c) for c in self.choices]
        d: dict[str, Any] = {"name": self.name, "prefix": self.prefix, "scope": self.scope, "choices": choices}
        if self.default is not None:
            d["default"] = self.default
        return d

    @classmethod
    def from_dict(cls, d: Any, what: str = "gene") -> "Gene":
        """Inverse of `to_dict`; `what` names the entry in errors (e.g. `extra_genes[0]`)."""
        if not isinstance(d, Mapping):
            raise SpaceError(f"{what} must be a dict with keys {', '.join(GENE_KEYS[:4])}, got {type(d).__name__}")
        for key in d:
            if key not in GENE_KEYS:
                raise SpaceError(f"unknown {what} key {key!r} (allowed keys: {', '.join(GENE_KEYS)})")
        for key in GENE_KEYS[:4]:
            if key not in d:
                raise SpaceError(f"{what} is missing key {key!r} (required keys: {', '.join(GENE_KEYS[:4])})")
        return cls(d["name"], d["prefix"], d["scope"], d["choices"], d.get("default"))


# ----------------------------------------------------------------------------------------- gene tables
def check_keys(d: Any, allowed: Sequence[str], required: Sequence[str], what: str, error: type) -> None:
    """Required keys must be in dict `d`; a key not in `allowed` is a typo or an alias (one-line `error`)."""
    if not isinstance(d, Mapping):
        raise error(f"{what} must be a dict with keys {', '.join(required)}, got {type(d).__name__}")
    for key in d:
        if key not in allowed:
            raise error(f"unknown {what} key {key!r} (allowed keys: {', '.join(allowed)})")
    for key in required:
        if key not in d:
            raise error(f"{what} is missing key {key!r} (required keys: {', '.join(required)})")


def check_table(genes: Any, reserved: Sequence[str] = ()) -> tuple[Gene, ...]:
    """A tuple of Genes with unique names and prefixes, none named like a `reserved` attribute."""
    if isinstance(genes, (str, bytes)) or not isinstance(genes, Sequence) or not all(isinstance(g, Gene) for g in genes):
        raise SpaceError(f"a search space needs a list of Gene objects, got {genes!r}")
    for what, keys in (("names", [g.name for g in genes]), ("id prefixes", [g.prefix for g in genes])):
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise SpaceError(f"gene {what} must be unique, repeated: {', '.join(repeated)}")
    for gene in genes:
        if gene.name in reserved:
            raise SpaceError(f"gene name {gene.name!r} is taken by an ArchConfig attribute")
    return tuple(genes)


def gene_values(genes: Sequence[Gene], values: Mapping[str, Any]) -> tuple[tuple[str, str, GeneValue], ...]:
    """`(name, prefix, value)` per gene, values canonical; stage genes must agree in length (ArchError)."""
    coerced = tuple((g.name, g.prefix, coerce_value(g.name, g.scope, values[g.name])) for g in genes)
    lengths = {name: len(v) for name, _, v in coerced if isinstance(v, tuple)}
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise ArchError(f"all genes need one entry per stage; lengths are {lengths}")
    return coerced


def parse_id(s: Any, genes: Sequence[Gene]) -> dict[str, GeneValue]:
    """Gene values from an id's dash-separated groups, in table order (a defaulted global gene may be
    absent); `ValueError` when `s` does not have that layout."""
    if not isinstance(s, str):
        raise ValueError(s)
    groups = [re.fullmatch(r"([a-z]+)(.*)", group) for group in s.strip().split("-")]
    values: dict[str, GeneValue] = {}
    position = 0
    for gene in genes:
        match = groups[position] if position < len(groups) else None
        if match is not None and match.group(1) == gene.prefix:
            values[gene.name] = gene.parse(match.group(2))
            position += 1
        elif gene.default is not None:
            values[gene.name] = gene.default
        else:
            raise ValueError(s)
    if position != len(groups):
        raise ValueError(s)
    return values


@dataclass(frozen=True, init=False, repr=False)
class GeneValues:
    """One value per gene of a table (a per-stage tuple, or an int for a global gene); base of ArchConfig.

    Frozen and hashable; equal values hash equal. Genes read as attributes (`arch.width`, `arch.iters`).
    """

    genes: tuple[tuple[str, str, GeneValue], ...]  # (name, id prefix, value) in the table's order

    @classmethod
    def build(cls, genes: Sequence[Gene], values: Mapping[str, Any]) -> Any:
        """One value per gene of `genes` from `values` (checked for shape, not against choices)."""
        record = object.__new__(cls)
        object.__setattr__(record, "genes", gene_values(genes, values))
        return record

    def __getattr__(self, name: str) -> GeneValue:
        # Only called when normal lookup fails; `__dict__.get` keeps copy/pickle (no `genes` yet) safe.
        if not name.startswith("_"):
            for gene_name, _, value in self.__dict__.get("genes", ()):
                if gene_name == name:
                    return value
        raise AttributeError(f"{type(self).__name__} has no gene or attribute {name!r}")

    def __str__(self) -> str:
        return self.id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{n}={v!r}' for n, _, v in self.genes)})"

    @property
    def gene_names(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.genes)

    def to_dict(self) -> dict[str, Any]:
        """`{name: [per-stage values]}` for stage genes, `{name: value}` for global genes, in table order."""
        return {name: list(value) if isinstance(value, tuple) else value for name, _, value in self.genes}

    @property
    def id(self) -> str:
        """Dash-separated gene groups, e.g. `w64.72-k3.5-i12`."""
        return "-".join(prefix + (str(v) if isinstance(v, int) else ".".join(map(str, v)))
                        for _, prefix, v in self.genes)


def check_gene_names(record: GeneValues, table: Sequence[Gene]) -> None:
    """`ArchError` unless `record` has exactly the genes of `table`, with the same id prefixes."""
    prefixes = {name: prefix for name, prefix, _ in record.genes}
    names = ", ".join(g.name for g in table)
    for gene in table:
        if gene.name not in prefixes:
            raise ArchError(f"architecture has no gene {gene.name!r} (the space's genes: {names})")
        if prefixes[gene.name] != gene.prefix:
            raise ArchError(f"architecture gene {gene.name!r} has id prefix {prefixes[gene.name]!r}, "
                            f"the space's is {gene.prefix!r}")
    extra = [name for name in prefixes if name not in {g.name for g in table}]  # record order: deterministic
    if extra:
        raise ArchError(f"architecture gene {extra[0]!r} is not in the space (genes: {names})")


def with_defaults(record: GeneValues, table: Sequence[Gene]) -> dict[str, GeneValue] | None:
    """The values of `record` plus the defaults of the `table` genes it lacks; None unless it lacks
    only defaulted genes (then there is nothing to fill)."""
    have = {name: value for name, _, value in record.genes}
    missing = [g for g in table if g.name not in have]
    if not missing or any(g.default is None for g in missing) or set(have) - {g.name for g in table}:
        return None
    return {**have, **{g.name: g.default for g in missing}}
