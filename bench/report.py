"""Benchmark reports: `results.csv`, `report.md`, `latency.png` and `results.json` (raw samples included).

Ratios are taken only between results measured interleaved in one run (same `run_id`): ratios across runs
mix in whatever changed on the machine between them. "Speed-up vs X" is X's median over this median, so
above 1 means faster than X.
"""
from __future__ import annotations

import csv
import io
import json
import textwrap
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np

from flownas.fileio import atomic_path, atomic_write_text

from .protocol import BenchResult

Results = Union[Sequence[BenchResult], Mapping[str, BenchResult]]
STAT_COLUMNS = ["min_ms", "mean_ms", "median_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "std_ms", "cv",
                "throughput_per_s"]
CSV_COLUMNS = (["name", "model", "backend", "precision", "device", "threads", "resolution", "iters", "runs"]
               + STAT_COLUMNS + ["h2d_median_ms", "compute_median_ms", "d2h_median_ms", "host_median_ms", "baseline",
                                 "speedup_vs_baseline", "max_abs_diff_vs_baseline", "speedup_vs_first_model", "run_id",
                                 "warnings"])


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


def csv_rows(results: Results, baseline: str | None = None) -> list[dict[str, Any]]:
    """One row per model x backend x precision: the description, stats in ms, phase medians and ratios."""
    items = _as_list(results)
    rows = []
    for r, ratio in zip(items, ratio_table(items, baseline)):
        row = {"name": r.name, "model": r.model, "backend": r.backend, "precision": r.precision,
               "device": r.runner.get("gpu") or r.runner.get("device"), "threads": r.runner.get("threads"),
               "resolution": r.meta.get("resolution"), "iters": r.meta.get("iters", r.runner.get("iters")),
               "runs": r.stats.count, **{k: v for k, v in r.stats.to_dict().items() if k in STAT_COLUMNS},
               "run_id": r.run_id, "warnings": " | ".join(r.warnings)}
        for phase in ("h2d", "compute", "d2h", "host"):
            stats = r.phases.get(f"{phase}_ms")
            row[f"{phase}_median_ms"] = stats.median_ms if stats else None
        row.update({k: ratio[k] for k in ("baseline", "speedup_vs_baseline", "max_abs_diff_vs_baseline",
                                          "speedup_vs_first_model")})
        rows.append(row)
    return rows


def _fmt(value: Any, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def _environment_block(env: Mapping[str, Any]) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
    return [f"- CPU: {env.get('cpu')} ({env.get('usable_cpus')} usable of {env.get('logical_cpus')} logical CPUs, "
            f"1-min load {env.get('load_average_1min')})",
            f"- GPU: {env.get('gpu') or 'none'}", f"- OS: {env.get('os')}, Python {env.get('python')}",
            f"- Libraries: {versions}", f"- Date (UTC): {env.get('date')}"]


def markdown(results: Results, title: str, baseline: str | None = None, notes: Sequence[str] = ()) -> str:
    """The report: environment, latency table with ratios, models side by side, GPU phases, warnings, method."""
    items = _as_list(results)
    baseline = baseline or default_baseline(items)
    lines = [f"# {title}", "", "## Environment", "", *_environment_block(items[0].environment), ""]
    lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    lines += ["## Latency (ms per inference)", "",
              f"| model | backend | precision | threads | median | p90 | p99 | CV | throughput /s | "
              f"speed-up vs {baseline} | max abs diff vs {baseline} |", "|" + "---|" * 11]
    for r, ratio in zip(items, ratio_table(items, baseline)):
        s = r.stats
        lines.append(f"| {r.model} | {r.backend} | {r.precision} | {r.runner.get('threads')} | {s.median_ms:.2f} | "
                     f"{s.p90_ms:.2f} | {s.p99_ms:.2f} | {s.cv:.1%} | {s.throughput_per_s:.2f} | "
                     f"{_fmt(ratio['speedup_vs_baseline'], '.2f', 'x')} | "
                     f"{_fmt(ratio['max_abs_diff_vs_baseline'], '.1e')} |")
    lines += _models_table(items) + _phases_table(items)
    warnings = [w for r in items for w in r.warnings]
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    lines += ["", "## Method", "", _method(items[0])]
    return "\n".join(lines) + "\n"


def _models_table(items: list[BenchResult]) -> list[str]:
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
            cells.append("-" if match is None else f"{match.stats.median_ms:.1f} "
                         f"({_fmt(ratios[match.name]['speedup_vs_first_model'], '.2f', 'x')})")
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
            "linear interpolation; CV = sample standard deviation / mean; throughput = 1000 / median. Flagged "
            "when CV exceeds 5% (host timing) or 1% (GPU compute, trtexec's threshold). Raw samples are in "
            "results.json.")


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
                  notes: Sequence[str] = ()) -> dict[str, Path]:
    """Write results.csv, report.md, latency.png and results.json into `out_dir` (atomically); their paths."""
    items = _as_list(results)
    baseline = baseline or default_baseline(items)
    out = Path(out_dir)
    paths = {"csv": out / "results.csv", "markdown": out / "report.md", "plot": out / "latency.png",
             "json": out / "results.json"}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(csv_rows(items, baseline))
    atomic_write_text(paths["csv"], buffer.getvalue())
    atomic_write_text(paths["markdown"], markdown(items, title, baseline, notes))
    try:
        plot(items, paths["plot"], title)
    except ImportError:  # deployment targets may lack matplotlib: the tables are the results, the plot a view
        paths.pop("plot")
    one_run = len({r.run_id for r in items}) == 1  # else each result keeps the environment it was measured in
    record = {"title": title, "baseline": baseline, "notes": list(notes), "environment": items[0].environment,
              "ratios": ratio_table(items, baseline), "results": [r.to_dict(environment=not one_run) for r in items]}
    atomic_write_text(paths["json"], json.dumps(record, indent=2, default=str))
    return paths
