"""Named models and architectures, timm-style and read-only.

`list_models()` names every registered model, `model_entry(name)` describes one (family, the config
`flownas.weights.build_model` takes, tags) and `create_model(name, seed=0)` builds it untrained and
seeded. Registered: the published RAFT models (`raft`, alias `raft-large`; `raft-small`), the published
FlowNAS subnets (`raft-s`, `raft-k`), the FlowNAS space's extremes (`largest`, `smallest`), the whole
FlowNAS supernet (`flownas-supernet`) and tiny test configurations on `TINY_SPACE` with `TINY_DECODER`
(`tiny-flownas`, `tiny-flownas-smallest`, `tiny-supernet`; tag "test") that tests parametrise over.

The table is fixed at import (a `MappingProxyType`): library code never registers at runtime, so a name
means the same model in every process. Tests may build their own `ModelRegistry`.
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional

from .arch import SearchSpace, resolve_arch
from .errors import ToolkitError
from .genes import STAGE, Gene
from .models import TINY_DECODER

if TYPE_CHECKING:
    from .models import FlowModel

# 3 stages, 256 architectures: stem stride 2 then strides 1, 2, 2 keep the encoders' 1/8 output. Stage 0
# has only expand 1 (no expand conv, as FlowNAS stage 0); kernel and expand choices exercise slicing.
TINY_SPACE = SearchSpace(
    genes=(
        Gene("width", "w", STAGE, ((16,), (16, 24), (24, 32))),
        Gene("kernel_size", "k", STAGE, ((3,), (3, 5), (3, 5))),
        Gene("depth", "d", STAGE, ((1,), (1, 2), (1, 2))),
        Gene("expand_ratio", "e", STAGE, ((1,), (2, 3), (2, 3))),
    ),
    strides=(1, 2, 2),
    stem_channels=16,
    head_channels=64,
)


class UnknownModelError(ToolkitError, ValueError):
    """A model name that is not registered; the message lists the registered names."""


def _freeze(value: Any) -> Any:
    # Nested read-only copy: an entry handed out can never change the registry.
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value  # ints, floats, strings, bools: immutable


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: `config` is what `flownas.weights.build_model` takes (read-only here;
    `config_dict()` gives a plain, JSON-able copy)."""

    name: str
    family: str  # "raft", "flownas" or "flownas-supernet"
    config: Mapping[str, Any]
    description: str
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.config.get("family") != self.family:
            raise ValueError(f"model entry {self.name!r}: config family {self.config.get('family')!r} "
                             f"is not {self.family!r}")
        object.__setattr__(self, "config", _freeze(self.config))
        object.__setattr__(self, "tags", tuple(self.tags))

    def config_dict(self) -> dict[str, Any]:
        """A fresh JSON-able copy of `config` (dicts and lists)."""
        return _thaw(self.config)


class ModelRegistry:
    """A read-only table of `ModelEntry`s plus aliases (alias -> registered name)."""

    def __init__(self, entries: Iterable[ModelEntry], aliases: Mapping[str, str] | None = None) -> None:
        table = {}
        for entry in entries:
            if entry.name in table:
                raise ValueError(f"model {entry.name!r} registered twice")
            table[entry.name] = entry
        aliases = dict(aliases or {})
        for alias, target in aliases.items():
            if target not in table or alias in table:
                raise ValueError(f"alias {alias!r} -> {target!r} must name a registered model and not shadow one")
        self.entries: Mapping[str, ModelEntry] = MappingProxyType(table)
        self.aliases: Mapping[str, str] = MappingProxyType(aliases)

    def names(self, pattern: str | None = None, tag: str | None = None, aliases: bool = False) -> list[str]:
        """Sorted registered names matching the fnmatch `pattern` (e.g. "tiny-*") and carrying `tag`."""
        names = [n for n, e in self.entries.items() if tag is None or tag in e.tags]
        if aliases:
            names += [a for a, n in self.aliases.items() if tag is None or tag in self.entries[n].tags]
        return sorted(n for n in names if pattern is None or fnmatch.fnmatchcase(n, pattern))

    def find(self, name: str) -> Optional[ModelEntry]:
        """The entry called `name` (or aliased so), None when there is none."""
        return self.entries.get(self.aliases.get(name, name))

    def entry(self, name: str) -> ModelEntry:
        """The entry called `name`; `UnknownModelError` listing the names (and the closest) otherwise."""
        found = self.find(name)
        if found is None:
            raise UnknownModelError(f"unknown model {name!r} (registered: {', '.join(self.names(aliases=True))})"
                                    f"{self.suggest(name)}")
        return found

    def suggest(self, name: str) -> str:
        """`"; did you mean 'x'?"` for the closest registered name, or "" when none is close."""
        close = difflib.get_close_matches(str(name), self.names(aliases=True), n=1)
        return f"; did you mean {close[0]!r}?" if close else ""

    def create(self, name: str, *, seed: int = 0) -> "FlowModel":
        """The model `name`, untrained, in eval mode, its weights drawn from torch seed `seed`.

        The global torch RNG is left as it was (the draw happens in a forked RNG state).
        """
        import torch

        from .weights import build_model

        config = self.entry(name).config_dict()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_model(config, source=f"model {name!r}").eval()


def _flownas_entry(name: str, arch_spec: str, space: SearchSpace, description: str, tags: tuple[str, ...],
                   decoder: Any = None) -> ModelEntry:
    config: dict[str, Any] = {"family": "flownas", "arch": resolve_arch(arch_spec, space).to_dict(),
                              "space": space.to_dict()}
    if decoder is not None:
        config["decoder"] = decoder.to_dict()
    return ModelEntry(name, "flownas", config, description, tags)


def _default_entries() -> list[ModelEntry]:
    flownas = SearchSpace.flownas()
    tiny_decoder = TINY_DECODER.to_dict()
    return [
        ModelEntry("raft", "raft", {"family": "raft", "variant": "large"},
                   "RAFT large (Teed & Deng 2020), 5.3M parameters", ("published",)),
        ModelEntry("raft-small", "raft", {"family": "raft", "variant": "small"},
                   "RAFT small (Teed & Deng 2020), 1.0M parameters", ("published",)),
        _flownas_entry("raft-s", "raft-s", flownas, "FlowNAS-RAFT-S: the released subnet (FACTS §1)", ("published",)),
        _flownas_entry("raft-k", "raft-k", flownas, "FlowNAS-RAFT-K: the released subnet (FACTS §1)", ("published",)),
        _flownas_entry("largest", "largest", flownas, "the largest subnet of the FlowNAS space", ("space",)),
        _flownas_entry("smallest", "smallest", flownas, "the smallest subnet of the FlowNAS space", ("space",)),
        ModelEntry("flownas-supernet", "flownas-supernet", {"family": "flownas-supernet", "space": flownas.to_dict()},
                   "the FlowNAS weight-sharing supernet (released layout)", ("supernet",)),
        _flownas_entry("tiny-flownas", "largest", TINY_SPACE, "largest subnet of the tiny test space, tiny decoder",
                       ("test",), TINY_DECODER),
        _flownas_entry("tiny-flownas-smallest", "smallest", TINY_SPACE,
                       "smallest subnet of the tiny test space, tiny decoder", ("test",), TINY_DECODER),
        ModelEntry("tiny-supernet", "flownas-supernet",
                   {"family": "flownas-supernet", "space": TINY_SPACE.to_dict(), "decoder": tiny_decoder},
                   "supernet over the tiny test space, tiny decoder", ("test", "supernet")),
    ]


MODELS = ModelRegistry(_default_entries(), aliases={"raft-large": "raft"})


def list_models(pattern: str | None = None, tag: str | None = None) -> list[str]:
    """Sorted registered model names (aliases left out), filtered by fnmatch `pattern` and `tag`."""
    return MODELS.names(pattern, tag)


def model_entry(name: str) -> ModelEntry:
    """The registered entry for `name` (an alias such as `raft-large` gives its model's entry)."""
    return MODELS.entry(name)


def create_model(name: str, *, seed: int = 0) -> "FlowModel":
    """The registered model `name`, untrained and seeded, in eval mode."""
    return MODELS.create(name, seed=seed)
