"""Time the key graphs of a latency table on one backend; needs only the runtime (no torch).

`measure_keys(dir, backend)` reads the `manifest.json` that `latency_tables.table.write_key_graphs` wrote, times
every empty graph (per-call overhead of one I/O signature) and every key graph with `export.runners.OrtRunner`
and `bench.protocol.benchmark`, and appends one CSV row per graph as soon as it is measured. A run that is
interrupted resumes where it stopped: graphs already in the CSV are never measured again (a torn last line from a
killed writer is dropped and the file rewritten atomically before appending). `assemble` (latency_tables.table)
subtracts the overhead and writes the table.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.protocol import TimingConfig, benchmark, environment
from export.inputs import generate_inputs, resolve_shapes
from export.runners import OrtRunner
from flownas.errors import ToolkitError
from flownas.fileio import atomic_write_text
from flownas.provenance import cpu_model, provenance

MANIFEST = "manifest.json"
COLUMNS = ("graph", "role", "median_ms", "p10_ms", "p90_ms", "cv", "n")
ORT_BACKENDS = {"ort-cpu": "cpu", "ort-cuda": "cuda", "ort-trt": "tensorrt"}
DEFAULT_CONFIG = TimingConfig(warmup_runs=3, warmup_s=0.2, runs=30, duration_s=0.3)
REMEASURE_CV = 0.10  # a graph whose CV exceeds this is timed once more; the steadier result is kept


class LatencyTableError(ToolkitError, ValueError):
    """A latency table or key folder is missing, mismatched or incomplete; one line naming file, key or field."""


def read_manifest(key_dir: Path) -> dict[str, Any]:
    """The key folder's manifest (graphs, empties, resolution, batch, space, decoder)."""
    path = Path(key_dir) / MANIFEST
    if not path.is_file():
        raise LatencyTableError(f"{path}: key manifest not found (write the key graphs first)")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise LatencyTableError(f"{path}: not valid JSON ({exc})") from None


def measurements_path(key_dir: Path, backend: str) -> Path:
    return Path(key_dir) / f"measurements-{backend}.csv"


def sidecar_path(key_dir: Path, backend: str) -> Path:
    return Path(key_dir) / f"measurements-{backend}.json"


def read_measurements(path: Path) -> dict[str, dict[str, Any]]:
    """Rows by graph id; rows that do not parse (a torn last line) are left out."""
    if not path.is_file():
        return {}
    rows = {}
    for row in csv.DictReader(io.StringIO(path.read_text())):
        try:
            rows[row["graph"]] = {"role": row["role"], **{c: float(row[c]) for c in COLUMNS[2:]}}
        except (TypeError, ValueError, KeyError):
            continue
    return rows


def _format_row(graph: str, role: str, stats: dict[str, float]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(
        [graph, role] + [repr(float(stats[c])) if c != "n" else int(stats[c]) for c in COLUMNS[2:]])
    return buffer.getvalue()


def _repair(path: Path, rows: dict[str, dict[str, Any]]) -> None:
    """Start the CSV with its header, or rewrite it atomically with only its valid rows when a line is torn."""
    header = ",".join(COLUMNS) + "\n"
    if not path.is_file():
        atomic_write_text(path, header)
        return
    text = path.read_text()
    lines = text.splitlines()
    if text.endswith("\n") and lines and lines[0] + "\n" == header and len(lines) == len(rows) + 1:
        return
    atomic_write_text(path, header + "".join(_format_row(g, r["role"], r) for g, r in rows.items()))


def _append(path: Path, line: str) -> None:
    with open(path, "a") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())  # a row on disk is a graph never measured again


def _time_graph(onnx_path: Path, backend: str, config: TimingConfig, threads: int | None) -> dict[str, float]:
    """Median, p10, p90 (ms), CV and run count of one graph, measured by the timing protocol."""
    runner = OrtRunner(onnx_path, ORT_BACKENDS[backend], threads=threads)
    specs = runner.input_specs()
    feeds = generate_inputs(specs, resolve_shapes(specs))
    result = benchmark(runner, feeds, config, name=onnx_path.stem)
    samples = result.samples["latency_ms"]
    return {"median_ms": result.stats.median_ms, "p10_ms": float(np.percentile(samples, 10)),
            "p90_ms": result.stats.p90_ms, "cv": result.stats.cv, "n": result.stats.count}


def _measure_steady(onnx_path: Path, backend: str, config: TimingConfig, threads: int | None,
                    remeasure_cv: float | None) -> dict[str, float]:
    stats = _time_graph(onnx_path, backend, config, threads)
    if remeasure_cv is not None and stats["cv"] > remeasure_cv:
        again = _time_graph(onnx_path, backend, config, threads)
        stats = min(stats, again, key=lambda s: s["cv"])
    return stats


def _check_sidecar(key_dir: Path, backend: str, threads: int | None, config: TimingConfig) -> None:
    """Record how this folder is measured; a resumed run must measure the same way."""
    path = sidecar_path(key_dir, backend)
    device = cpu_model() if backend == "ort-cpu" else (environment().get("gpu") or "unknown GPU")
    if path.is_file():
        old = json.loads(path.read_text())
        for field, value in (("threads", threads), ("timing_config", config.to_dict()), ("device", device)):
            if old.get(field) != value:
                raise LatencyTableError(f"{path}: measurement was started with {field}={old.get(field)!r}, this run "
                                        f"has {value!r}; resume with the same settings or delete {path.name} and "
                                        f"{measurements_path(key_dir, backend).name}")
        return
    record = provenance("latency-measurements", backend=backend, device=device, precision="fp32",
                        extra={"threads": threads, "timing_config": config.to_dict(), "cpu": cpu_model()})
    atomic_write_text(path, json.dumps(record, indent=1))


def measure_keys(key_dir: str | os.PathLike, backend: str = "ort-cpu", config: TimingConfig = DEFAULT_CONFIG,
                 threads: int | None = None, remeasure_cv: float | None = REMEASURE_CV,
                 progress: Callable[[str, dict[str, float]], None] | None = None) -> Path:
    """Time every empty and key graph of `key_dir` not yet measured; returns the measurements CSV path.

    Latencies are host-timed (ms) per call of one graph, inputs and outputs as numpy; `threads` None leaves ONNX
    Runtime's default intra-op thread count.
    """
    if backend not in ORT_BACKENDS:
        raise LatencyTableError(f"backend {backend!r} cannot measure key graphs yet: choose from "
                                f"{', '.join(ORT_BACKENDS)}")
    key_dir = Path(key_dir)
    manifest = read_manifest(key_dir)
    _check_sidecar(key_dir, backend, threads, config.validate())
    path = measurements_path(key_dir, backend)
    done = read_measurements(path)
    _repair(path, done)
    todo = [(name, "empty", file) for name, file in manifest["empties"].items()]
    todo += [(g["id"], "key", g["file"]) for g in manifest["graphs"]]
    for graph, role, file in todo:
        if graph in done:
            continue
        stats = _measure_steady(key_dir / file, backend, config, threads, remeasure_cv)
        _append(path, _format_row(graph, role, stats))
        done[graph] = {"role": role, **stats}
        if progress is not None:
            progress(graph, stats)
    return path
