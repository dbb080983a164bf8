"""Benchmark reports: `results.csv`, `report.md`, `latency.png` and `results.json` (raw samples included).

Ratios are taken only between results measured interleaved in one run (same `run_id`): ratios across runs
mix in whatever changed on the machine between them. "Speed-up vs X" is X's median over this median, so
above 1 means faster than X. A run whose 1-minute load average (at its start or end) exceeded the CPUs it
could use shared them with other work: it is flagged and its ratios are marked as not findings.

Traceability: the report opens with the command that produced it and lists the files measured with their size
and SHA-256; a file exported into a scratch folder for the run is named "(exported for this run, not kept)",
never by its (deleted) path. The four files are written into a staging folder and swapped in together.
"""
from __future__ import annotations

import csv
import io
import json
import os
import textwrap
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np

from flownas.fileio import atomic_path, atomic_write_text, file_record, is_scratch_path, parse_resolution, staged_dir
from flownas.provenance import command_line, provenance

from .protocol import BenchResult

Results = Union[Sequence[BenchResult], Mapping[str, BenchResult]]
STAT_COLUMNS = ["min_ms", "mean_ms", "median_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "std_ms", "cv",
                "throughput_per_s"]
CSV_COLUMNS = (["name", "model", "backend", "precision", "device", "threads", "resolution", "iters", "batch", "runs"]
               + STAT_COLUMNS + ["pairs_per_s", "gmacs", "peak_host_mb", "peak_device_mb","h2d_median_ms", "compute_median_ms", "d2h_median_ms", "host_median_ms", "baseline",
                                 "speedup_vs_baseline", "max_abs_diff_vs_baseline", "speedup_vs_first_model", "run_id",
                                 "machine_loaded", "warnings"])
REPORT_FILES = ("results.csv", "report.md", "latency.png", "results.json")
FILE_KEYS = ("onnx", "engine", "weights", "checkpoint")  # runner-description keys that name a file measured
NOT_KEPT = "(exported for this run, not kept)"
LOADED = "(machine loaded: not a finding)"
PathLike = Union[str, "os.PathLike[str]"]


def _as_list(results: Results) -> list[BenchResult]:
    items = list(results.values()) if isinstance(results, Mapping) else list(results)
    if not items:
        raise ValueError("no benchmark results to report")
    return items


def default_baseline(results: Results) -> str:
    """The first PyTorch backend among the results, else the first result's backend."""
    items = _as_list(results)
    return next((r.backend for r in items if r.backend.startswith("torch")), items[0].backend)


def _pick(candidates: Iterable[BenchResult], reference: BenchResult) -> BenchResult | None:
    """The candidate measured in the same run as `reference`, preferring fp32, then the first."""
    same_run = [c for c in candidates if c.run_id == reference.run_id]
    return next((c for c in same_run if c.precision == "fp32"), same_run[0] if same_run else None)


def ratio_table(results: Results, baseline: str | None = None) -> list[dict[str, Any]]:
    """Per result: its median, the baseline backend's result of the same model and the speed-up over it,
    the largest output difference to it, and the speed-up over the first model on the same backend/precision.
    Ratios are None where the two were not measured in the same run (or no baseline exists for the model).
    """
    items = _as_list(results)
    baseline = baseline or default_baseline(items)
    first_model = items[0].model
    rows = []
    for r in items:
        base = _pick((c for c in items if c.model == r.model and c.backend == baseline), r)
        first = _pick((c for c in items if c.model == first_model and c.backend == r.backend
                       and c.precision == r.precision), r)
        rows.append({"name": r.name, "model": r.model, "backend": r.backend, "precision": r.precision,
                     "median_ms": r.stats.median_ms, "baseline": base.name if base else None,
                     "speedup_vs_baseline": base.stats.median_ms / r.stats.median_ms if base else None,
                     "max_abs_diff_vs_baseline": _max_abs_diff(r, base) if base else None,
                     "speedup_vs_first_model": first.stats.median_ms / r.stats.median_ms if first else None})
    return rows


def _max_abs_diff(result: BenchResult, base: BenchResult) -> float | None:
    """Largest |difference| over the outputs both produced (same names and shapes), or None."""
    if result.outputs is None or base.outputs is None:
        return None
    diffs = [float(np.abs(np.asarray(result.outputs[k], np.float64) - base.outputs[k]).max())
             for k in result.outputs if k in base.outputs and np.shape(result.outputs[k]) == np.shape(base.outputs[k])]
    return max(diffs) if diffs else None


# ------------------------------------------------------------------------------------------- machine load
# The run's own threads count in the load average (2 threads on 2 CPUs read 2.0-2.1 on a quiet machine), so a
# load a little above the CPU count is the run itself; another busy thread adds about 1.
LOAD_SLACK = 0.25


def load_assessment(results: Results) -> dict[str, dict[str, Any]]:
    """Per run_id: the 1-minute load average at the start and end of the measurement, the CPUs the run could use
    and whether the load exceeded them (`loaded`). Then the runners shared the CPUs with other work: timings
    include waiting, and the ratios between runners depend on who waited, so they are not findings.

    The end sample is the environment's `load_average_1min_end` (bench.protocol.compare records it); results
    without one get a sample taken now, marked `end_sampled: "report"`.
    """
    items = _as_list(results)
    runs: dict[str, dict[str, Any]] = {}
    for run_id in dict.fromkeys(r.run_id for r in items):
        group = [r for r in items if r.run_id == run_id]
        env = group[0].environment
        end, sampled = env.get("load_average_1min_end"), "measurement"
        if end is None and hasattr(os, "getloadavg"):
            end, sampled = round(os.getloadavg()[0], 2), "report"
        threads = [t for r in group if isinstance(t := r.runner.get("threads"), int)]
        cpus = env.get("usable_cpus") or (max(threads) if threads else None)
        loads = [v for v in (env.get("load_average_1min"), end) if v is not None]
        runs[run_id] = {"load_start": env.get("load_average_1min"), "load_end": end, "end_sampled": sampled,
                        "cpus": cpus, "loaded": bool(loads and cpus and max(loads) > cpus + LOAD_SLACK)}
    return runs


def _load_warnings(load: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return [f"machine loaded: 1-min load average {a['load_start']} at the start and {a['load_end']} at the end "
            f"exceeds the {a['cpus']} CPU(s) the run could use{f' (run {run_id})' if len(load) > 1 else ''}: "
            "the runners waited for the CPU, so their ratios are not findings (re-run on a quiet machine)"
            for run_id, a in load.items() if a["loaded"]]


def _ratio_cell(value: float | None, loaded: bool, spec: str = ".2f") -> str:
    text = _fmt(value, spec, "x")
    return f"{text} {LOADED}" if loaded and value is not None else text


# ------------------------------------------------------------------------------------------ files measured
def _under(path: Path, folders: Sequence[PathLike]) -> bool:
    return any(path.absolute().is_relative_to(Path(f).absolute()) for f in folders)


def measured_files(results: Results, files: Sequence[PathLike] | None = None,
                   scratch: Sequence[PathLike] = ()) -> dict[str, dict[str, Any]]:
    """`{"path", "size_bytes", "sha256"}` per distinct file: `files` first, then the files the runners name
    (`FILE_KEYS` of their descriptions). A file in a scratch folder (`scratch`, or see
    `flownas.fileio.is_scratch_path`) is named "<name> (exported for this run, not kept)" instead of its path;
    hash it while it exists (before the scratch folder goes). A file already gone keeps size and hash None.
    Keyed by absolute path (to match runner descriptions); the values are what reports show."""
    paths = [Path(p) for p in files or ()]
    paths += [Path(r.runner[k]) for r in _as_list(results) for k in FILE_KEYS if isinstance(r.runner.get(k), str)]
    records: dict[str, dict[str, Any]] = {}
    for path in paths:
        key = os.path.abspath(path)
        if key in records:
            continue
        try:
            record = file_record(path)
        except FileNotFoundError:
            record = {"path": str(path), "size_bytes": None, "sha256": None}
        if is_scratch_path(path) or _under(path, scratch):
            record["path"] = f"{path.name} {NOT_KEPT}"
        records[key] = record
    return records


def _public_runner(runner: Mapping[str, Any], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The runner description with scratch paths replaced by their label, and each file's SHA-256 beside it."""
    out = dict(runner)
    for key in FILE_KEYS:
        record = records.get(os.path.abspath(runner[key])) if isinstance(runner.get(key), str) else None
        if record is not None:
            out[key], out[f"{key}_sha256"] = record["path"], record["sha256"]
    return out


# ------------------------------------------------------------------------------------------------ tables
def csv_rows(results: Results, baseline: str | None = None,
             load: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per model x backend x precision: the description, stats in ms, phase medians and ratios."""
    items = _as_list(results)
    load = load if load is not None else load_assessment(items)
    rows = []
    for r, ratio in zip(items, ratio_table(items, baseline)):
        row = {"name": r.name, "model": r.model, "backend": r.backend, "precision": r.precision,
               "device": r.runner.get("gpu") or r.runner.get("device"), "threads": r.runner.get("threads"),
               "resolution": r.meta.get("resolution"), "iters": r.meta.get("iters", r.runner.get("iters")),
               "batch": batch_of(r), "runs": r.stats.count,
               **{k: v for k, v in r.stats.to_dict().items() if k in STAT_COLUMNS}, **cost_of(r),
               "run_id": r.run_id, "machine_loaded": load[r.run_id]["loaded"], "warnings": " | ".join(r.warnings)}
        for phase in ("h2d", "compute", "d2h", "host"):
            stats = r.phases.get(f"{phase}_ms")
            row[f"{phase}_median_ms"] = stats.median_ms if stats else None
        row.update({k: ratio[k] for k in ("baseline", "speedup_vs_baseline", "max_abs_diff_vs_baseline",
                                          "speedup_vs_first_model")})
        rows.append(row)
    return rows


def batch_of(result: BenchResult) -> int:
    return int(result.meta.get("batch") or 1)


def cost_of(result: BenchResult) -> dict[str, Any]:
    """Pairs per second (batch / median), GMACs per inference, peak host and device memory (MB)."""
    macs = result.meta.get("macs")
    return {"pairs_per_s": batch_of(result) * 1e3 / result.stats.median_ms,
            "gmacs": None if macs is None else macs / 1e9,
            "peak_host_mb": result.memory.get("host_peak_increase_mb"),
            "peak_device_mb": result.memory.get("device_peak_mb")}


def _fmt(value: Any, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def _environment_block(env: Mapping[str, Any], load: Mapping[str, Any]) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
    end = f"{load['load_end']} at the end" + (" (sampled when the report was written)"
                                               if load["end_sampled"] == "report" else "")
    isa = f", ISA: {env['cpu_isa']}" if env.get("cpu_isa") else ""
    return [f"- CPU: {env.get('cpu')}{isa} ({env.get('usable_cpus')} usable of {env.get('logical_cpus')} logical CPUs, "
            f"1-min load {env.get('load_average_1min')} at the start, {end})",
            f"- GPU: {env.get('gpu') or 'none'}", f"- OS: {env.get('os')}, Python {env.get('python')}",
            f"- Libraries: {versions}", f"- Date (UTC): {env.get('date')}"]


def _files_block(records: Sequence[Mapping[str, Any]]) -> list[str]:
    if not records:
        return []
    return (["## Files measured", "", "| file | size (bytes) | SHA-256 |", "|---|---|---|"]
            + [f"| {f['path']} | {_fmt(f['size_bytes'], 'd')} | {f['sha256'] or 'n/a (gone before the report)'} |"
               for f in records] + [""])


def markdown(results: Results, title: str, baseline: str | None = None, notes: Sequence[str] = (), *,
             command: str | None = None, files: Sequence[PathLike] | None = None,
             scratch: Sequence[PathLike] = ()) -> str:
    """The report: the command, environment, files measured, latency table with ratios, models side by side,
    GPU phases, warnings, method. `command` defaults to the running command line."""
    items = _as_list(results)
    records = list(measured_files(items, files, scratch).values())
    return _render(items, title, baseline or default_baseline(items), notes,
                   command if command is not None else command_line(), records, load_assessment(items))


def _render(items: list[BenchResult], title: str, baseline: str, notes: Sequence[str], command: str,
            records: Sequence[Mapping[str, Any]], load: Mapping[str, Mapping[str, Any]]) -> str:
    lines = [f"# {title}", "", "```", command, "```", "", "## Environment", "",
             *_environment_block(items[0].environment, load[items[0].run_id]), ""]
    lines += [f"- {note}" for note in notes] + ([""] if notes else []) + _files_block(records)
    lines += ["## Latency (ms per inference)", "",
              f"| model | backend | precision | threads | batch | median | p90 | p99 | CV | pairs/s | GMACs | "
              f"peak host MB | speed-up vs {baseline} | max abs diff vs {baseline} |", "|" + "---|" * 14]
    for r, ratio in zip(items, ratio_table(items, baseline)):
        s, cost = r.stats, cost_of(r)
        device_mb = f" (+{cost['peak_device_mb']:.0f} GPU)" if cost["peak_device_mb"] is not None else ""
        lines.append(f"| {r.model} | {r.backend} | {r.precision} | {r.runner.get('threads')} | {batch_of(r)} | "
                     f"{s.median_ms:.2f} | {s.p90_ms:.2f} | {s.p99_ms:.2f} | {s.cv:.1%} | {cost['pairs_per_s']:.2f} | "
                     f"{_fmt(cost['gmacs'], '.2f')} | {_fmt(cost['peak_host_mb'], '.0f')}{device_mb} | "
                     f"{_ratio_cell(ratio['speedup_vs_baseline'], load[r.run_id]['loaded'])} | "
                     f"{_fmt(ratio['max_abs_diff_vs_baseline'], '.1e')} |")
    lines += _precision_table(items) + _models_table(items, load) + _phases_table(items)
    warnings = _load_warnings(load) + [w for r in items for w in r.warnings]
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    lines += ["", "## Method", "", _method(items[0])]
    return "\n".join(lines) + "\n"


def _precision_table(items: list[BenchResult]) -> list[str]:
    """Per model and backend, each precision's median with its speed-up over fp32 of the same backend and run."""
    precisions = list(dict.fromkeys(r.precision for r in items))
    if len(precisions) < 2:
        return []
    lines = ["", "## Precisions side by side (median ms; speed-up vs fp32 on the same backend, same run)", "",
             "| model | backend | " + " | ".join(precisions) + " |", "|---|---|" + "---|" * len(precisions)]
    for model, backend in dict.fromkeys((r.model, r.backend) for r in items):
        group = {r.precision: r for r in items if (r.model, r.backend) == (model, backend)}
        base = group.get("fp32")
        cells = []
        for precision in precisions:
            r = group.get(precision)
            if r is None:
                cells.append("-")
                continue
            same_run = base is not None and base.run_id == r.run_id
            ratio = f" ({base.stats.median_ms / r.stats.median_ms:.2f}x)" if same_run else ""
            cells.append(f"{r.stats.median_ms:.2f}{ratio}")
        lines.append(f"| {model} | {backend} | " + " | ".join(cells) + " |")
    return lines


def _models_table(items: list[BenchResult], load: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Models as rows, backend/precision as columns (medians), with the speed-up over the first model."""
    models = list(dict.fromkeys(r.model for r in items))
    columns = list(dict.fromkeys((r.backend, r.precision) for r in items))
    if len(models) < 2:
        return []
    ratios = {r.name: row for r, row in zip(items, ratio_table(items))}
    lines = ["", f"## Models side by side (median ms; speed-up vs {models[0]} on the same backend)", "",
             "| model | " + " | ".join(f"{b} {p}" for b, p in columns) + " |", "|---|" + "---|" * len(columns)]
    for model in models:
        cells = []
        for backend, precision in columns:
            match = next((r for r in items if (r.model, r.backend, r.precision) == (model, backend, precision)), None)
            if match is None:
                cells.append("-")
                continue
            ratio = _ratio_cell(ratios[match.name]["speedup_vs_first_model"], load[match.run_id]["loaded"])
            cells.append(f"{match.stats.median_ms:.1f} ({ratio})")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def _phases_table(items: list[BenchResult]) -> list[str]:
    timed = [r for r in items if "compute_ms" in r.phases]
    if not timed:
        return []
    lines = ["", "## GPU phases (median ms, CUDA events)", "",
             "| name | H2D | compute | D2H | latency | host wall | compute CV |", "|---|---|---|---|---|---|---|"]
    for r in timed:
        p = r.phases
        lines.append(f"| {r.name} | {p['h2d_ms'].median_ms:.3f} | {p['compute_ms'].median_ms:.3f} | "
                     f"{p['d2h_ms'].median_ms:.3f} | {r.stats.median_ms:.3f} | {p['host_ms'].median_ms:.3f} | "
                     f"{p['compute_ms'].cv:.2%} |")
    return lines


def _method(result: BenchResult) -> str:
    c = result.config
    return (f"Each runner warmed up for at least {c['warmup_runs']} run(s) and {c['warmup_s']:g} s, then all "
            f"runners were measured in alternation (round-robin) for at least {c['runs']} round(s) and "
            f"{c['duration_s']:g} s, "
            "so ratios come from one run. Latency is end to end with numpy inputs and outputs: host perf_counter "
            "on the CPU; CUDA events (H2D + compute + D2H, as trtexec's Latency) for GPU runners. Percentiles use "
            "linear interpolation; CV = sample standard deviation / mean; pairs/s = batch x 1000 / median. Peak host "
            "MB: the rise of the process's resident memory over the runner's activation and warm-up (sampled every "
            "2 ms; runners are loaded one after another), GPU MB: torch.cuda.max_memory_allocated (torch-cuda only). "
            "GMACs: Conv/MatMul/Gemm multiply-accumulates per inference (bench.cost). Flagged "
            "when CV exceeds 5% (host timing) or 1% (GPU compute, trtexec's threshold), and the run when its 1-min "
            "load average at start or end exceeds the CPUs it could use (its ratios are then not findings). Raw "
            "samples are in results.json.")


def plot(results: Results, path: str | Path, title: str) -> Path:
    """Box plots of the raw latency samples per backend, one panel per model (matplotlib, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    items = _as_list(results)
    models = list(dict.fromkeys(r.model for r in items))
    fig = Figure(figsize=(max(5.0, 3.2 * len(models)), 4.2), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, model in zip(axes, models):
        group = [r for r in items if r.model == model]
        labels = [r.backend if r.precision == "fp32" else f"{r.backend}\n{r.precision}" for r in group]
        ax.boxplot([r.samples["latency_ms"] for r in group], whis=(0, 100), widths=0.5)
        ax.set_xticks(range(1, len(group) + 1), labels, fontsize=8)
        for i, r in enumerate(group, start=1):
            ax.text(i + 0.28, r.stats.median_ms, f"{r.stats.median_ms:.1f}", fontsize=7, va="center")  # beside box
        ax.set_title(model, fontsize=10)
        ax.set_ylabel("latency (ms)")
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
    caption = textwrap.fill(title, width=int(fig.get_figwidth() * 11))  # long titles wrap instead of clipping
    fig.suptitle(f"{caption}\nbox: quartiles, whiskers: min-max, {items[0].stats.count} runs each", fontsize=9)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def write_reports(results: Results, out_dir: str | Path, title: str = "Benchmark", baseline: str | None = None,
                  notes: Sequence[str] = (), *, command: str | None = None, files: Sequence[PathLike] | None = None,
                  scratch: Sequence[PathLike] = (), staged: bool = True) -> dict[str, Path]:
    """Write results.csv, report.md, latency.png and results.json into `out_dir`; their final paths.

    `command`: the command line echoed at the top (default: the running one). `files`: the files measured
    (recorded with size and SHA-256, as are the files the runners name); `scratch`: folders deleted after the run,
    whose files are named "(exported for this run, not kept)". Call it while scratch files still exist.
    `staged`: the files are written into a staging folder that replaces the report files of `out_dir` in one
    swap (`flownas.fileio.staged_dir`; other entries of `out_dir` are kept); False writes straight into
    `out_dir`, for a caller that already stages the folder.
    """
    items = _as_list(results)
    baseline = baseline or default_baseline(items)
    command = command if command is not None else command_line()
    records = measured_files(items, files, scratch)
    load = load_assessment(items)
    out = Path(out_dir)
    if not staged:
        return _write_all(items, out, title, baseline, notes, command, records, load)
    with staged_dir(out, owned=REPORT_FILES) as stage:
        names = {k: p.name for k, p in _write_all(items, stage, title, baseline, notes, command, records, load).items()}
    return {k: out / name for k, name in names.items()}


def _write_all(items: list[BenchResult], out: Path, title: str, baseline: str, notes: Sequence[str], command: str,
               records: dict[str, dict[str, Any]], load: dict[str, dict[str, Any]]) -> dict[str, Path]:
    paths = {key: out / name for key, name in zip(("csv", "markdown", "plot", "json"), REPORT_FILES)}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(csv_rows(items, baseline, load))
    atomic_write_text(paths["csv"], buffer.getvalue())
    atomic_write_text(paths["markdown"], _render(items, title, baseline, notes, command,
                                                          list(records.values()), load))
    try:
        plot(items, paths["plot"], title)
    except ImportError:  # deployment targets may lack matplotlib: the tables are the results, the plot a view
        paths.pop("plot")
    atomic_write_text(paths["json"], json.dumps(_json_record(items, title, baseline, notes, command, records, load),
                                                indent=2, default=str))
    return paths


def _json_record(items: list[BenchResult], title: str, baseline: str, notes: Sequence[str], command: str,
                 records: dict[str, dict[str, Any]], load: dict[str, dict[str, Any]]) -> dict[str, Any]:
    one_run = len(load) == 1  # else each result keeps the environment it was measured in
    ratios = [{**row, "finding": not load[r.run_id]["loaded"]} for r, row in zip(items, ratio_table(items, baseline))]
    results = [{**r.to_dict(environment=not one_run), "runner": _public_runner(r.runner, records)} for r in items]
    return {"title": title, "command": command, "provenance": _provenance(items, command), "baseline": baseline,
            "notes": list(notes), "environment": items[0].environment, "load": load, "files": list(records.values()),
            "warnings": _load_warnings(load), "ratios": ratios, "results": results}


def _provenance(items: list[BenchResult], command: str) -> dict[str, Any]:
    """The toolkit's provenance record (kind "bench-report") for the run(s) in the report."""
    def unique(values: Iterable[Any]) -> Any:
        found = list(dict.fromkeys(v for v in values if v is not None))
        return found[0] if len(found) == 1 else None

    resolution = _resolution(unique(r.meta.get("resolution") for r in items))
    env = items[0].environment
    return provenance("bench-report", resolution=resolution, iters=unique(r.meta.get("iters") for r in items),
                      precision=",".join(dict.fromkeys(r.precision for r in items)),
                      backend=",".join(dict.fromkeys(r.backend for r in items)),
                      device=env.get("gpu") or env.get("cpu"), command=command,
                      extra={"run_ids": list(dict.fromkeys(r.run_id for r in items))})


def _resolution(text: Any) -> tuple[int, int] | None:
    try:
        return parse_resolution(text) if isinstance(text, str) else None
    except ValueError:
        return None
