"""Latency tables as library calls: write the keys of a space, build a table, summarise it, predict an arch.

    build_keys(space, 384, 512, "tables/k")                # key graphs + manifest (needs torch)
    build_table(space, 384, 512, "tables/k")               # keys -> measure -> assemble; re-run to resume
    show_table("tables/k", arch="raft-s")                  # counts, slowest keys, breakdown of an arch
    predict_arch("tables/k", "raft-s", 12, backend="ort-cpu")

Every file is written atomically by the step that writes it (latency_tables.table / measure, fileio); a build that
is interrupted continues where it stopped: graphs already written and graphs already measured are kept.
"""
from __future__ import annotations

import csv
import io
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from flownas.arch import ArchConfig, SearchSpace, resolve_arch
from flownas.fileio import save_figure
from flownas.provenance import cpu_int8_note

from bench.protocol import TimingConfig

from .keys import all_keys
from .measure import DEFAULT_CONFIG, LatencyTableError, measure_keys
from .predictor import LatencyTable
from .table import TABLE_CSV, assemble, write_key_graphs

SLOWEST = 10


def build_keys(space: SearchSpace | None, height: int, width: int, out_dir: str | os.PathLike, batch: int = 1,
               decoder: Any = None, precision: Any = None, int8_format: str = "tensorrt") -> Path:
    """Every key of `space` (default FlowNAS) at `height` x `width` and `batch`, as ONNX graphs + manifest.json in
    `out_dir`; `decoder` a DecoderSpec (default RAFT large); `precision`: "fp32" (default), "fp16", "int8", a
    plan file or an `export.precision_plan.PrecisionPlan` -- the keys' graphs are lowered by it, INT8 written in
    `int8_format` (export.quantize.INT8_FORMATS). Returns the key folder. Needs torch."""
    space = space or SearchSpace.flownas()
    if decoder is None:
        from flownas.models import RAFT_LARGE  # torch: exporting the graphs needs it anyway

        decoder = RAFT_LARGE
    keys = all_keys(space, height, width, batch, decoder)
    return write_key_graphs(keys, out_dir, decoder, space, plan=as_plan(precision), int8_format=int8_format)


def as_plan(precision: Any) -> Any:
    """A PrecisionPlan from "fp32"/"fp16"/"int8", a plan .json path or a plan (None stays None: fp32)."""
    if precision is None or not isinstance(precision, (str, os.PathLike)):
        return precision
    from export.precision_plan import parse_precision

    return parse_precision(str(precision))


def build_table(space: SearchSpace | None, height: int, width: int, out_dir: str | os.PathLike,
                backend: str = "ort-cpu", config: TimingConfig | None = None, threads: int | None = None,
                log: Callable[[str], None] | None = None, batch: int = 1, decoder: Any = None,
                precision: Any = None) -> Path:
    """`build_keys` (at `precision`), `measure_keys` on `backend`, then `assemble`: returns the folder holding
    table.csv/json.

    Resumable: re-running with the same arguments keeps written graphs and measured rows. `log` receives one line
    per step and per measured graph (latencies in ms)."""
    say = log or (lambda line: None)
    from .key_runners import check_backend

    check_backend(backend)  # a missing runtime or device is refused before minutes of exporting
    plan = as_plan(precision)
    if plan is not None and plan.precisions() != {"fp32"} and backend.startswith("torch"):
        raise LatencyTableError(f"--precision {plan.name}: backend {backend} times PyTorch modules in fp32; "
                                "build reduced-precision tables on an ort-* backend or trt")
    from .lowering import int8_format_for

    if plan is not None and "int8" in plan.precisions() and backend == "ort-cpu" and (note := cpu_int8_note()):
        say(f"warning: {note}")
    folder = build_keys(space, height, width, out_dir, batch, decoder, plan, int8_format_for(backend))
    say(f"keys written to {folder}")

    def progress(graph: str, stats: dict[str, float]) -> None:
        say(f"measured {graph}: {stats['median_ms']:.4f} ms (cv {stats['cv']:.3f})")

    measure_keys(folder, backend, config or DEFAULT_CONFIG, threads, progress=progress)
    out = assemble(folder, backend)
    say(f"table assembled in {out}")
    return out


def _rows(table_dir: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((table_dir / TABLE_CSV).read_text())))


def table_arch(table: LatencyTable, arch: ArchConfig | str | Any) -> ArchConfig:
    """`arch` in any form `resolve_arch` takes, read and validated against the table's search space."""
    return resolve_arch(arch, table.space)


def show_table(table_dir: str | os.PathLike, arch: ArchConfig | str | None = None, iters: int = 12,
               **load_kwargs: Any) -> dict[str, Any]:
    """Summary of a table: manifest fields, key counts by kind and by encoder, total, the SLOWEST keys (ms) and,
    for `arch` (any form `resolve_arch` takes), its breakdown at `iters` (`predict_arch`'s record)."""
    table = LatencyTable.load(table_dir, **load_kwargs)
    rows = _rows(table.path)
    slowest = sorted(rows, key=lambda r: float(r["latency_ms"]), reverse=True)[:SLOWEST]
    manifest = table.manifest
    record: dict[str, Any] = {
        "table": str(table.path),
        **{f: manifest.get(f) for f in ("backend", "device", "precision", "resolution", "batch", "threads")},
        "calibration": manifest.get("calibration"),
        "keys": len(rows),
        "by_kind": dict(Counter(r["kind"] for r in rows)),
        "by_encoder": dict(Counter(r["encoder"] for r in rows)),
        "slowest": [{"id": r["id"], "latency_ms": float(r["latency_ms"]), "cv": float(r["cv"])} for r in slowest],
    }
    if arch is not None:
        record["arch"] = breakdown_record(table, table_arch(table, arch), iters)
    return record


def breakdown_record(table: LatencyTable, arch: ArchConfig, iters: int) -> dict[str, Any]:
    """{"arch": id, "iters", "breakdown_ms" (calibration included as a part), "total_ms", "raw_ms"}."""
    parts = table.breakdown(arch, iters)
    return {"arch": arch.id, "iters": iters, "breakdown_ms": parts, "total_ms": sum(parts.values()),
            "raw_ms": table.predict(arch, iters, calibrated=False)}


def predict_arch(table_dir: str | os.PathLike, arch: ArchConfig | str | Any, iters: int = 12,
                 **load_kwargs: Any) -> dict[str, Any]:
    """{"arch": id, "iters", "breakdown_ms": {component: ms}, "total_ms", "raw_ms", "table"}; `load_kwargs` go
    to `LatencyTable.load` (backend, device, precision, resolution, force)."""
    table = LatencyTable.load(table_dir, **load_kwargs)
    return {**breakdown_record(table, table_arch(table, arch), iters), "table": str(table.path)}


def plot_breakdown(table_dir: str | os.PathLike, arch: ArchConfig | str | Any, iters: int,
                   path: str | os.PathLike, **load_kwargs: Any) -> Path:
    """A horizontal bar plot (PNG) of where `arch`'s predicted time goes, one bar per component (ms)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on build machines
    import matplotlib.pyplot as plt

    record = predict_arch(table_dir, arch, iters, **load_kwargs)
    names, values = list(record["breakdown_ms"]), list(record["breakdown_ms"].values())
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(names) + 1.5))
    ax.barh(names[::-1], values[::-1], color="tab:blue")
    ax.set_xlabel("predicted latency (ms)")
    ax.set_title(f"{record['arch']}, {iters} iters: {record['total_ms']:.2f} ms", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path, dpi=100)
    return path
