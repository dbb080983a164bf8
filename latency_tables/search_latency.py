"""A latency table as the search's `LatencyFn`: vectorised prediction, the `iters` gene honoured.

    latency = TableLatency(LatencyTable.load(DIR, backend="ort-cpu"), default_iters=12)
    latency([arch1, arch2])          # ms per architecture, one numpy call

An architecture searched with an iteration gene (`...-i8`) is predicted at its own iteration count (the table's
step key times iters); one without it at `default_iters`. The encoders' genes must belong to the table's space.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from flownas.arch import ArchConfig

from .predictor import LatencyTable
from .vectorized import VectorPredictor


class TableLatency:
    """`LatencyFn` over one table (see module doc); `calls` and `predicted` count the work done."""

    def __init__(self, table: LatencyTable, default_iters: int = 12) -> None:
        self.table, self.default_iters = table, int(default_iters)
        self.predictor = VectorPredictor(table)
        self.calls = self.predicted = 0

    def iters_of(self, arch: ArchConfig) -> int:
        return int(arch.to_dict().get("iters", self.default_iters))

    def __call__(self, archs: Sequence[ArchConfig]) -> list[float]:
        if not archs:
            return []
        encoders = [self.table.space.restrict(a) for a in archs]
        iters = np.array([self.iters_of(a) for a in archs])
        self.calls += 1
        self.predicted += len(archs)
        return self.predictor.predict_many(encoders, iters).tolist()
