"""Time the key graphs of a latency table on one backend; needs only that backend's runtime.

`measure_keys(dir, backend)` reads the `manifest.json` that `latency_tables.table.write_key_graphs` wrote, times
every empty graph (per-call overhead of one I/O signature) and every key graph with the backend's runner
(`latency_tables.key_runners`: ONNX Runtime on the ONNX file, a TensorRT engine built from it, or the PyTorch
module rebuilt from the manifest) through `bench.protocol.benchmark`, and appends one CSV row per graph as soon as
it is measured. Keys sharing one graph file (same structure) are timed once and get the same row. A run that is
interrupted resumes where it stopped: graphs already in the CSV are never measured again (a torn last line from a
killed writer is dropped and the file rewritten atomically before appending). `assemble` (latency_tables.table)
subtracts the overhead and writes the table. ort-* backends import no torch; trt imports no torch either.

Timing: `DEFAULT_CONFIG` is short (at least 10 runs and 0.2 s per graph, after 2 runs and 0.05 s of warm-up):
hundreds of graphs are timed per table, a median of 10 runs is already steady to a few percent, and any graph
whose CV exceeds `REMEASURE_CV` is timed once more and the steadier result kept.
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
from flownas.errors import ToolkitError
from flownas.fileio import atomic_write_text
from flownas.provenance import cpu_model, provenance

from .key_runners import BACKENDS, CPU_BACKENDS, ORT_BACKENDS, TORCH_BACKENDS, RunnerFactory, check_backend, \
    runner_factory

__all__ = ["BACKENDS", "COLUMNS", "DEFAULT_CONFIG", "LatencyTableError", "MANIFEST", "ORT_BACKENDS", "REMEASURE_CV",
           "TORCH_BACKENDS", "measure_keys", "measurements_path", "read_manifest", "read_measurements",
           "sidecar_path"]

MANIFEST = "manifest.json"
COLUMNS = ("graph", "role", "median_ms", "p10_ms", "p90_ms", "cv", "n")
DEFAULT_CONFIG = TimingConfig(warmup_runs=2, warmup_s=0.05, runs=10, duration_s=0.2)
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


def _time_graph(runner: Any, config: TimingConfig) -> dict[str, float]:
    """Median, p10, p90 (ms), CV and run count of one graph's runner, measured by the timing protocol (host clock,
    or CUDA events end to end for runners with a device clock)."""
    specs = runner.input_specs()
    feeds = generate_inputs(specs, resolve_shapes(specs))
    result = benchmark(runner, feeds, config, name=runner.name)
    samples = result.samples["latency_ms"]
    return {"median_ms": result.stats.median_ms, "p10_ms": float(np.percentile(samples, 10)),
            "p90_ms": result.stats.p90_ms, "cv": result.stats.cv, "n": result.stats.count}


def _measure_steady(runner: Any, config: TimingConfig, remeasure_cv: float | None) -> dict[str, float]:
    stats = _time_graph(runner, config)
    if remeasure_cv is not None and stats["cv"] > remeasure_cv:
        again = _time_graph(runner, config)
        stats = min(stats, again, key=lambda s: s["cv"])
    return stats


def _device(backend: str, facts: dict[str, Any]) -> str:
    if backend in CPU_BACKENDS:
        return cpu_model()
    return (facts.get("gpu") or {}).get("name") or environment().get("gpu") or "unknown GPU"


def _check_sidecar(key_dir: Path, backend: str, threads: int | None, config: TimingConfig,
                   facts: dict[str, Any], precision: str = "fp32") -> None:
    """Record how this folder is measured (backend, device, precision, threads); a resumed run must measure the
    same way."""
    path = sidecar_path(key_dir, backend)
    device = _device(backend, facts)
    if path.is_file():
        old = json.loads(path.read_text())
        for field, value in (("threads", threads), ("timing_config", config.to_dict()), ("device", device)):
            if old.get(field) != value:
                raise LatencyTableError(f"{path}: measurement was started with {field}={old.get(field)!r}, this run "
                                        f"has {value!r}; resume with the same settings or delete {path.name} and "
                                        f"{measurements_path(key_dir, backend).name}")
        return
    # threads None leaves the runtime's own choice: record it where the runtime tells (torch's default count).
    effective = threads if threads is not None else facts.get("torch_default_threads")
    extra = {"threads": threads, "effective_threads": effective, "timing_config": config.to_dict(),
             "cpu": cpu_model(), "tf32": False}
    if backend == "trt":
        extra["tensorrt"] = facts["gpu"].get("tensorrt")
        extra["timing_clock"] = "CUDA events (H2D + compute + D2H)"
    record = provenance("latency-measurements", backend=backend, device=device, precision=precision, extra=extra)
    atomic_write_text(path, json.dumps(record, indent=1))


def _todo(manifest: dict[str, Any]) -> list[tuple[str, str, str, Any]]:
    """(graph id, role, file, a manifest entry using it) for every empty graph, then every key."""
    first_user = {}
    for g in manifest["graphs"]:
        first_user.setdefault(g["empty"], g)
    todo = [(name, "empty", file, first_user.get(name)) for name, file in manifest["empties"].items()]
    return todo + [(g["id"], "key", g["file"], g) for g in manifest["graphs"]]


def measure_keys(key_dir: str | os.PathLike, backend: str = "ort-cpu", config: TimingConfig = DEFAULT_CONFIG,
                 threads: int | None = None, remeasure_cv: float | None = REMEASURE_CV,
                 progress: Callable[[str, dict[str, float]], None] | None = None) -> Path:
    """Time every empty and key graph of `key_dir` not yet measured on `backend`; returns the measurements CSV.

    `backend`: one of BACKENDS. Latencies are per call of one graph (ms), inputs and outputs as numpy: host-timed
    on ort-* and torch-cpu, CUDA events around H2D + compute + D2H on trt and torch-cuda. `threads`: ONNX
    Runtime's intra-op threads or torch.set_num_threads (None: the runtime's default). A backend whose runtime or
    device is missing raises MissingDependencyError before any file is written.
    """
    if backend not in BACKENDS:
        raise LatencyTableError(f"backend {backend!r} cannot measure key graphs: choose from {', '.join(BACKENDS)}")
    key_dir = Path(key_dir)
    manifest = read_manifest(key_dir)
    precision = manifest.get("precision", "fp32")
    if precision != "fp32" and backend in TORCH_BACKENDS:
        raise LatencyTableError(f"{key_dir / MANIFEST}: the keys are {precision} graphs; backend {backend} times the "
                                "PyTorch modules in fp32: measure them with an ort-* backend or trt")
    facts = check_backend(backend)
    _check_sidecar(key_dir, backend, threads, config.validate(), facts, precision)
    path = measurements_path(key_dir, backend)
    done = read_measurements(path)
    _repair(path, done)
    make_runner = runner_factory(backend, key_dir, manifest, threads, facts)
    _measure_all(_todo(manifest), done, path, make_runner, config, remeasure_cv, progress)
    return path


def _measure_all(todo: list[tuple[str, str, str, Any]], done: dict[str, dict[str, Any]], path: Path,
                 make_runner: RunnerFactory, config: TimingConfig, remeasure_cv: float | None,
                 progress: Callable[[str, dict[str, float]], None] | None) -> None:
    """Measure each graph not in `done`; a file already timed for another graph id is not timed again."""
    by_file = {file: done[graph] for graph, _, file, _ in todo if graph in done}
    for graph, role, file, entry in todo:
        if graph in done:
            continue
        stats = by_file.get(file)
        if stats is None:
            stats = _measure_steady(make_runner(graph, role, file, entry), config, remeasure_cv)
            by_file[file] = stats
        stats = {c: stats[c] for c in COLUMNS[2:]}
        _append(path, _format_row(graph, role, stats))
        done[graph] = {"role": role, **stats}
        if progress is not None:
            progress(graph, stats)
