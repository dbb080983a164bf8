"""Predict a FlowNAS network's latency from a measured table: sum of its keys + prologue + iters x step.

    table = LatencyTable.load("tables/ort-cpu-384x512", backend="ort-cpu", resolution=(384, 512))
    table.predict(arch, iters=12)          # ms
    table.breakdown(arch, iters=12)        # ms per component: fnet.stem, fnet.stage0, ..., prologue, steps

Calibration: when `table.json` holds `"calibration": {"scale": a, "offset_ms": b, ...}` (fitted on measured whole
networks by `latency_tables.validate`), `predict` returns a x raw + b and `breakdown` adds a "calibration" part
(= calibrated - raw) so the parts still sum to the total; `calibrated=False` gives the raw sum of the keys.

A table measured for another backend, device, precision or resolution is refused unless `force=True` (precision:
"fp32", "int8", "fp16", or a plan's label such as "mixed"; each row's precision must agree with the manifest's
plan); a key the
architecture needs but the table lacks raises naming the key (never skipped). No torch.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

from flownas.arch import ArchConfig, SearchSpace

from .keys import Key, encoder_keys, key_precision
from .measure import LatencyTableError
from .table import TABLE_CSV, TABLE_JSON

CHECKED_FIELDS = ("backend", "device", "precision", "resolution")


class LatencyTable:
    """Per-key latencies (ms) and the manifest they were measured under."""

    def __init__(self, path: Path, manifest: dict[str, Any], latencies: dict[str, float]) -> None:
        self.path, self.manifest, self.latencies = path, manifest, latencies
        self.space = SearchSpace.from_dict(manifest["space"]) if manifest.get("space") else SearchSpace.flownas()
        d = manifest["decoder"]
        self.decoder = SimpleNamespace(feature_dim=d["feature_dim"], hidden_dim=d["hidden_dim"],
                                       context_dim=d["context_dim"])
        self.height, self.width = manifest["resolution"]
        self.batch = int(manifest["batch"])
        self._kinds: dict[str, str] = {}  # "prologue"/"step" -> key id
        self.calibration = _calibration(manifest, path)

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str | None = None, device: str | None = None,
             precision: str | None = None, resolution: Sequence[int] | None = None,
             force: bool = False) -> "LatencyTable":
        """Read `table.json` + `table.csv`; a requested field the manifest contradicts raises unless `force`."""
        path = Path(path)
        manifest_path, csv_path = path / TABLE_JSON, path / TABLE_CSV
        for file in (manifest_path, csv_path):
            if not file.is_file():
                raise LatencyTableError(f"{file}: latency table file not found (assemble the table first)")
        manifest = json.loads(manifest_path.read_text())
        wanted = {"backend": backend, "device": device, "precision": precision,
                  "resolution": [int(v) for v in resolution] if resolution is not None else None}
        for field in CHECKED_FIELDS:
            if wanted[field] is not None and manifest.get(field) != wanted[field] and not force:
                raise LatencyTableError(f"{manifest_path}: table {field} is {manifest.get(field)!r}, requested "
                                        f"{wanted[field]!r} (pass force to use it anyway)")
        table = cls(path, manifest, {})
        table._read_rows(csv_path)
        return table

    @classmethod
    def from_latencies(cls, manifest: dict[str, Any], latencies: dict[Key, float],
                       path: str | os.PathLike = "<memory>") -> "LatencyTable":
        """A table held in memory: `manifest` as in table.json (resolution, batch, decoder, space[, calibration]),
        latency (ms) per key. For benchmarks and what-if tables; measured tables come from `load`."""
        table = cls(Path(path), manifest, {key.unit_id: float(ms) for key, ms in latencies.items()})
        table._kinds = {k.kind: k.unit_id for k in latencies if k.kind in ("prologue", "step")}
        return table

    @property
    def plan_groups(self) -> dict[str, str] | None:
        """The precision plan (group -> precision) the keys were lowered with; None for an fp32 table."""
        return self.manifest.get("precision_plan")

    def _read_rows(self, csv_path: Path) -> None:
        """Rows by unit id (an architecture's keys are named without precision). Every row must hold the
        precision the manifest's plan gives its kind: a table never mixes measurements of two plans."""
        plan = self.plan_groups or {}
        for line, row in enumerate(csv.DictReader(io.StringIO(csv_path.read_text())), start=2):
            key = Key.from_dict(row)
            expected = key_precision(key.kind, plan)
            if key.precision != expected:
                raise LatencyTableError(f"{csv_path}:{line}: key {key.id} was measured at {key.precision}, but the "
                                        f"table's manifest says {expected} ({self.manifest.get('precision')!r} "
                                        "table); rebuild the table")
            self.latencies[key.unit_id] = float(row["latency_ms"])
            if key.kind in ("prologue", "step"):
                self._kinds[key.kind] = key.unit_id

    def _lookup(self, key_id: str, arch: ArchConfig | None) -> float:
        try:
            return self.latencies[key_id]
        except KeyError:
            needed = f" (needed by {arch.id})" if arch is not None else ""
            raise LatencyTableError(f"{self.path}: the table has no key {key_id}{needed}; rebuild it with keys "
                                    "covering this architecture") from None

    def _fixed_ms(self, kind: str) -> float:
        if kind not in self._kinds:
            raise LatencyTableError(f"{self.path}: the table has no {kind} key (decoder keys were not measured)")
        return self._lookup(self._kinds[kind], None)

    def keys(self, arch: ArchConfig) -> list[Key]:
        """The encoder keys of `arch` at this table's resolution and batch."""
        return encoder_keys(arch, self.space, self.height, self.width, self.batch, self.decoder)

    def calibrate(self, raw_ms: Any) -> Any:
        """a x raw + b for the table's calibration (identity without one); works on floats and numpy arrays."""
        if self.calibration is None:
            return raw_ms
        scale, offset = self.calibration
        return scale * raw_ms + offset

    def breakdown(self, arch: ArchConfig, iters: int, calibrated: bool = True) -> dict[str, float]:
        """ms per component, in execution order: `<enc>.stem`, `<enc>.stage<i>`, `<enc>.head` for fnet and cnet,
        then `prologue` and `steps` (= iters x one step), then `calibration` (calibrated - raw total) when the
        table has a calibration and `calibrated`. Their sum is `predict(arch, iters, calibrated)`."""
        if iters < 1:
            raise ValueError(f"iters must be at least 1, got {iters}")
        parts: dict[str, float] = {}
        for key in self.keys(arch):
            name = f"{key.encoder}.{key.kind}" if key.kind != "block" else f"{key.encoder}.stage{key.stage}"
            parts[name] = parts.get(name, 0.0) + self._lookup(key.id, arch)
        parts["prologue"] = self._fixed_ms("prologue")
        parts["steps"] = iters * self._fixed_ms("step")
        if calibrated and self.calibration is not None:
            raw = sum(parts.values())
            parts["calibration"] = self.calibrate(raw) - raw
        return parts

    def predict(self, arch: ArchConfig, iters: int, calibrated: bool = True) -> float:
        """Predicted latency (ms) of the whole network for `arch` at `iters` update iterations: the raw sum of its
        keys, then the table's calibration a x raw + b unless `calibrated=False`."""
        parts = self.breakdown(arch, iters, calibrated=False)
        raw = sum(parts.values())
        return float(self.calibrate(raw)) if calibrated else raw


def _calibration(manifest: dict[str, Any], path: Path) -> tuple[float, float] | None:
    """(scale, offset_ms) of the manifest's "calibration" entry, or None when it has none."""
    entry = manifest.get("calibration")
    if entry is None:
        return None
    try:
        return float(entry["scale"]), float(entry["offset_ms"])
    except (TypeError, KeyError, ValueError):
        raise LatencyTableError(f"{path / TABLE_JSON}: calibration must be an object with numeric scale and "
                                f"offset_ms, got {entry!r}") from None
