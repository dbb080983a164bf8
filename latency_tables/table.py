"""Key folders and tables: write the key graphs (ONNX + manifest), and assemble measurements into a table.

A key folder holds one ONNX graph per distinct key structure (`graphs/<key id>.onnx`, shared by keys that differ
only in stage or block role; the manifest names each key's file), one empty graph per I/O signature
(`empty/<signature>.onnx`) and `manifest.json`. After `latency_tables.measure.measure_keys`, `assemble` writes
`table.csv` (one row per key: key fields, latency_ms = median minus the empty graph's median, p10/p90 shifted the
same way, cv, n, raw and overhead medians) and `table.json` (provenance: backend, versions, device, threads,
precision, resolution, batch, step iterations, date, toolkit version). Only `write_key_graphs` needs torch.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

from flownas.fileio import atomic_write_text
from flownas.provenance import provenance

from .keys import DEFAULT_PRECISION, Key, with_precision
from .measure import (LatencyTableError, measurements_path, read_manifest, read_measurements, sidecar_path, MANIFEST)

TABLE_CSV, TABLE_JSON = "table.csv", "table.json"
KEY_FIELDS = tuple(Key.__dataclass_fields__)
TABLE_COLUMNS = ("id",) + KEY_FIELDS + ("latency_ms", "p10_ms", "p90_ms", "cv", "n", "raw_ms", "overhead_ms")


def _table_geometry(keys: Sequence[Key]) -> tuple[list[int], int]:
    """(resolution [H, W], batch B) shared by all keys: the image size of stems and decoder keys."""
    outer = {(k.height, k.width, k.batch if k.encoder != "fnet" else k.batch // 2) for k in keys
             if k.kind in ("stem", "prologue", "step")}
    if len(outer) != 1:
        raise ValueError(f"keys of one table must share one resolution and batch, got {sorted(outer)}")
    h, w, b = outer.pop()
    return [h, w], b


def write_key_graphs(keys: Sequence[Key], out_dir: str | os.PathLike, decoder: Any = None, space: Any = None,
                     seed: int = 0, plan: Any = None, int8_format: str = "tensorrt") -> Path:
    """One ONNX graph per key plus the empty graph of each I/O signature, and `manifest.json`; returns the folder.

    `decoder`: the DecoderSpec of the decoder keys (default RAFT large); `space`: the SearchSpace the keys come
    from, stored so that the table can predict for its architectures; `plan`: an `export.precision_plan.
    PrecisionPlan` (None: fp32) -- each key's graph is lowered by it (`latency_tables.lowering`) and each key's
    precision field set from it, INT8 written in `int8_format` (export.quantize.INT8_FORMATS). Graphs already written are kept (each is written atomically), so an interrupted
    run resumes. The keys must include a stem or decoder key (resolution).
    """
    from flownas.models import RAFT_LARGE  # torch: only this step of a table build needs it

    from . import graphs

    decoder = decoder or RAFT_LARGE
    out = Path(out_dir)
    resolution, batch = _table_geometry(keys)
    groups = _lowered_groups(plan)
    label = plan.name if groups else DEFAULT_PRECISION
    int8_format = int8_format if groups and "int8" in groups.values() else None
    _check_reuse(out, decoder.to_dict(), resolution, batch, groups, int8_format)
    keys = with_precision(keys, groups)
    entries, empties, files = [], {}, {}
    for key in dict.fromkeys(keys):  # distinct, in order
        # Keys with the same structure (differing only in stage or block role) share the first one's graph file,
        # which is exported and measured once (measure_keys times each file once).
        file = files.setdefault(graphs.structure(key), f"graphs/{key.id}.onnx")
        empty = graphs.empty_signature(key)
        if not (out / file).is_file():
            _export_key(key, out / file, decoder, seed, groups, int8_format)
        if empty not in empties:
            empties[empty] = f"empty/{empty}.onnx"
            if not (out / empties[empty]).is_file():
                graphs.export_empty(key, out / empties[empty])
        entries.append({"id": key.id, "file": file, "empty": empty, "key": key.to_dict()})
    record = provenance("latency-keys", resolution=resolution, precision=label, backend="onnx", extra={
        "precision_plan": groups, "int8_format": int8_format, "batch": batch, "space": space.to_dict() if space is not None else None, "decoder": decoder.to_dict(),
        "base_iters": graphs.BASE_ITERS, "step_span": graphs.STEP_SPAN, "opset": graphs.OPSET,
        "graphs": entries, "empties": empties})
    atomic_write_text(out / MANIFEST, json.dumps(record, indent=1))
    return out


def _lowered_groups(plan: Any) -> dict[str, str] | None:
    """The plan's groups when it lowers anything (None for fp32: such tables are as before precision existed)."""
    if plan is None or plan.precisions() == {DEFAULT_PRECISION}:
        return None
    from export.quantize import check_plan_writable

    check_plan_writable(plan)  # bf16 is refused before any export
    return dict(plan.groups)


def _export_key(key: Key, path: Path, decoder: Any, seed: int, groups: dict[str, str] | None,
                int8_format: str | None) -> None:
    """The key's FP32 graph, lowered by the plan when the key's precision is not fp32."""
    from . import graphs

    if key.precision == DEFAULT_PRECISION:
        graphs.export_key(key, path, decoder, seed)
        return
    from .lowering import lower_key_graph

    fp32 = path.with_name(path.stem + ".fp32-source.onnx")
    graphs.export_key(key, fp32, decoder, seed)
    lower_key_graph(fp32, path, key, groups or {}, seed, int8_format or "tensorrt")
    fp32.unlink()


def _check_reuse(out: Path, decoder: dict[str, Any], resolution: list[int], batch: int,
                 groups: dict[str, str] | None = None, int8_format: str | None = None) -> None:
    """Graphs already in `out` are reused, so they must come from the same decoder, resolution, batch and
    precision plan."""
    if not (out / MANIFEST).is_file():
        return
    old = read_manifest(out)
    for field, value in (("decoder", decoder), ("resolution", resolution), ("batch", batch),
                         ("precision_plan", groups), ("int8_format", int8_format)):
        if old.get(field) != value:
            raise LatencyTableError(f"{out / MANIFEST}: the folder holds key graphs for {field}={old.get(field)!r}, "
                                    f"not {value!r}; write these keys to another folder")


def _shifted(raw: dict[str, float], overhead: float) -> dict[str, float]:
    # Overhead subtraction can leave a unit faster than an empty call by noise: clamp at 0, keep raw_ms.
    return {c: max(0.0, raw[c] - overhead) for c in ("median_ms", "p10_ms", "p90_ms")}


def _decoder_rows(rows: dict[str, dict[str, Any]], base_iters: int, span: int) -> None:
    """Replace the two decoder graphs' timings by the prologue and one step (see latency_tables.graphs)."""
    pro = next((r for r in rows.values() if r["kind"] == "prologue"), None)
    step = next((r for r in rows.values() if r["kind"] == "step"), None)
    if pro is None or step is None:
        return
    one = {c: max(0.0, (step["_raw"][c] - pro["_raw"][c]) / span) for c in ("median_ms", "p10_ms", "p90_ms")}
    step.update(latency_ms=one["median_ms"], p10_ms=one["p10_ms"], p90_ms=one["p90_ms"])
    overhead = pro["overhead_ms"]
    for c, out in (("median_ms", "latency_ms"), ("p10_ms", "p10_ms"), ("p90_ms", "p90_ms")):
        pro[out] = max(0.0, pro["_raw"][c] - overhead - base_iters * one[c])
    # Differences of percentiles are not percentiles: keep them as a spread around the median, in order.
    for row in (pro, step):
        row["p10_ms"], row["p90_ms"] = sorted((row["p10_ms"], row["p90_ms"]))
    step["cv"] = pro["cv"] = max(step["cv"], pro["cv"])
    step["n"] = pro["n"] = min(step["n"], pro["n"])


def assemble(key_dir: str | os.PathLike, backend: str = "ort-cpu", out_dir: str | os.PathLike | None = None) -> Path:
    """`table.csv` + `table.json` from the measurements of `key_dir` on `backend` (into `out_dir`, default
    `key_dir`); every key must be measured. Returns the table folder (load it with `LatencyTable.load`)."""
    key_dir = Path(key_dir)
    out = Path(out_dir) if out_dir is not None else key_dir
    manifest = read_manifest(key_dir)
    measured = read_measurements(measurements_path(key_dir, backend))
    missing = [g["id"] for g in manifest["graphs"] if g["id"] not in measured]
    missing += [e for e in manifest["empties"] if e not in measured]
    if missing:
        raise LatencyTableError(f"{measurements_path(key_dir, backend)}: {len(missing)} graphs not measured yet "
                                f"(first: {missing[0]}); run the measurement again to finish it")
    rows = {}
    for g in manifest["graphs"]:
        raw, overhead = measured[g["id"]], measured[g["empty"]]["median_ms"]
        shifted = _shifted(raw, overhead)
        rows[g["id"]] = {**g["key"], "latency_ms": shifted["median_ms"], "p10_ms": shifted["p10_ms"],
                         "p90_ms": shifted["p90_ms"], "cv": raw["cv"], "n": int(raw["n"]),
                         "raw_ms": raw["median_ms"], "overhead_ms": overhead, "_raw": raw}
    _decoder_rows(rows, manifest["base_iters"], manifest["step_span"])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, TABLE_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows.values())
    measure = json.loads(sidecar_path(key_dir, backend).read_text())
    record = provenance("latency-table", resolution=manifest["resolution"], precision=measure["precision"],
                        backend=backend, device=measure["device"], extra={
                            "precision_plan": manifest.get("precision_plan"),
                            "int8_format": manifest.get("int8_format"), "batch": manifest["batch"],
                            "threads": measure["threads"], "cpu": measure["cpu"],
                            "measured": measure["created"], "measure_versions": measure["versions"],
                            "timing_config": measure["timing_config"], "space": manifest["space"],
                            "decoder": manifest["decoder"], "base_iters": manifest["base_iters"],
                            "step_span": manifest["step_span"], "keys": len(rows)})
    atomic_write_text(out / TABLE_CSV, buffer.getvalue())
    atomic_write_text(out / TABLE_JSON, json.dumps(record, indent=1))
    return out
