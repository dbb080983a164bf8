"""Latency tables as the search's `LatencyFn`: vectorised prediction, the `iters` and precision genes honoured.

    latency = TableLatency(LatencyTable.load(DIR, backend="ort-cpu"), default_iters=12)
    latency([arch1, arch2])          # ms per architecture, one numpy call per table

An architecture searched with an iteration gene (`...-i8`) is predicted at its own iteration count (the table's
step key times iters); one without it at `default_iters`. With tables of several precisions
(`TableLatency(fp32_table, precision_tables={"int8": int8_table})`) the space gets a precision gene (`bits`,
`...-q8`: 32 fp32, 16 fp16, 8 int8) and each architecture is predicted on its precision's table. Tables that
disagree on space, resolution, batch or backend, or whose manifest holds another precision than the one they are
given for, are refused: a search must never compare latencies measured two ways. The encoders' genes must
belong to the table's space.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from flownas.arch import ArchConfig
from flownas.genes import Gene

from .measure import LatencyTableError
from .predictor import LatencyTable
from .vectorized import VectorPredictor

PRECISION_BITS = {"fp32": 32, "fp16": 16, "int8": 8}
PRECISION_OF_BITS = {bits: name for name, bits in PRECISION_BITS.items()}
PRECISION_GENE = "bits"
_SHARED = ("backend", "device", "resolution", "batch")


def precision_gene(precisions: Sequence[str]) -> Gene:
    """The global gene `bits` (id prefix `q`) over `precisions` (fp32, fp16, int8); archs without it are fp32."""
    unknown = [p for p in precisions if p not in PRECISION_BITS]
    if unknown:
        raise LatencyTableError(f"precision {unknown[0]!r} cannot be a search gene: choose from "
                                f"{', '.join(PRECISION_BITS)} (one table per precision)")
    bits = tuple(sorted({PRECISION_BITS[p] for p in precisions}))
    return Gene(PRECISION_GENE, "q", "global", bits, default=32 if 32 in bits else None)


def precision_of(arch: ArchConfig, default: str = "fp32") -> str:
    """The precision an architecture of a space with a `bits` gene runs in (`default` without the gene)."""
    bits = arch.to_dict().get(PRECISION_GENE)
    return default if bits is None else PRECISION_OF_BITS[int(bits)]


class TableLatency:
    """`LatencyFn` over one table per precision (see module doc); `calls` and `predicted` count the work done."""

    def __init__(self, table: LatencyTable, default_iters: int = 12,
                 precision_tables: Mapping[str, LatencyTable] | None = None) -> None:
        self.table, self.default_iters = table, int(default_iters)
        self.default_precision = str(table.manifest.get("precision", "fp32"))
        self.tables = {self.default_precision: table, **dict(precision_tables or {})}
        for precision, other in self.tables.items():
            _check_compatible(table, other, precision)
        self.predictors = {precision: VectorPredictor(t) for precision, t in self.tables.items()}
        self.predictor = self.predictors[self.default_precision]
        self.calls = self.predicted = 0

    @property
    def precisions(self) -> list[str]:
        return list(self.tables)

    def iters_of(self, arch: ArchConfig) -> int:
        return int(arch.to_dict().get("iters", self.default_iters))

    def __call__(self, archs: Sequence[ArchConfig]) -> list[float]:
        if not archs:
            return []
        out = np.empty(len(archs))
        precisions = [precision_of(a, self.default_precision) for a in archs]
        for precision in dict.fromkeys(precisions):
            if precision not in self.predictors:
                raise LatencyTableError(f"no latency table for precision {precision} (tables: "
                                        f"{', '.join(self.tables)})")
            index = [i for i, p in enumerate(precisions) if p == precision]
            encoders = [self.table.space.restrict(archs[i]) for i in index]
            iters = np.array([self.iters_of(archs[i]) for i in index])
            out[index] = self.predictors[precision].predict_many(encoders, iters)
        self.calls += 1
        self.predicted += len(archs)
        return out.tolist()


def _check_compatible(base: LatencyTable, other: LatencyTable, precision: str) -> None:
    """`other` is given as the `precision` table of a search whose fp32 table is `base`."""
    held = other.manifest.get("precision", "fp32")
    if held != precision:
        raise LatencyTableError(f"{other.path}: table precision is {held!r}, but it was given as the {precision} "
                                "table (build it with lut build --precision)")
    for field in _SHARED:
        if base.manifest.get(field) != other.manifest.get(field):
            raise LatencyTableError(f"{other.path}: {field} {other.manifest.get(field)!r} differs from "
                                    f"{base.manifest.get(field)!r} of {base.path}: tables of one search must be "
                                    "measured the same way")
    if other.space.to_dict() != base.space.to_dict():
        raise LatencyTableError(f"{other.path}: built for another search space than {base.path}")
