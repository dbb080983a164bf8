"""Validate a latency table against whole networks measured end to end, and fit its linear calibration.

    report = validate_table("tables/ort-cpu-384x512", samples=30)   # -> <table>/validation/{validation.csv, ...}
    report.passed, report.metrics["mape_pct"]
    fit_calibration("tables/ort-cpu-384x512", samples=5)            # -> table.json "calibration"

`validate_table` samples distinct random architectures of the table's space (seeded, none of those the
calibration was fitted on), builds each untrained `FlowNASNet` with the table's decoder, exports it the way the
model is deployed (`export.onnx_export.ExportSpec`: gather lookup, the table's resolution and batch), measures it
on the table's backend with the timing protocol, and compares with `LatencyTable.predict` (calibrated when the
table has a calibration). Measurement: the networks are timed in interleaved groups of `GROUP` with
`bench.protocol.compare` (A B C D A B C D ...), so a slow drift of the machine (load, clocks) hits every network
of a group alike instead of biasing the ones measured last; a group keeps few sessions in memory at a time. The
thread count is the table's (its keys were measured with it) unless `threads` overrides it, which the report says.

Outputs (one folder, replaced whole and atomically by `flownas.fileio.staged_dir`): `validation.csv` (per arch),
`scatter.png` (predicted vs measured, y = x and the +-10% band), `summary.md` (table manifest, metrics,
thresholds) and `validation.json` (provenance + metrics). Thresholds are the goals of issue 9.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bench.protocol import TimingConfig, compare, make_feeds
from flownas.arch import ArchConfig, SearchSpace
from flownas.fileio import atomic_path, atomic_write_text, scratch_dir, scratch_of, staged_dir
from flownas.provenance import provenance

from .key_runners import ORT_BACKENDS, TORCH_BACKENDS, check_backend
from .measure import LatencyTableError
from .predictor import LatencyTable
from .table import TABLE_JSON

# Pass criteria (issue 9, "Goals"): every network within +-10%, at least 95% within +-5%, ranking kept.
MAX_ABS_PCT = 10.0          # every |error| must be <= this (100% within +-10%)
WITHIN_5_MIN_SHARE = 0.95   # share of networks with |error| <= 5% must be >= this
KENDALL_TAU_MIN = 0.9       # Kendall's tau between predicted and measured must be >= this
THRESHOLDS = {"max_abs_pct": MAX_ABS_PCT, "within_5_min_share": WITHIN_5_MIN_SHARE, "kendall_tau_min": KENDALL_TAU_MIN}

DEFAULT_ITERS = 12          # when the table's manifest records no iteration count
GROUP = 4                   # networks measured interleaved together
VALIDATE_CONFIG = TimingConfig(warmup_runs=3, warmup_s=0.5, runs=15, duration_s=0.0)
CSV_COLUMNS = ("arch_id", "predicted_ms", "predicted_raw_ms", "measured_ms", "cv", "runs", "error_pct")
OUTPUT_FILES = ("validation.csv", "scatter.png", "summary.md", "validation.json")


@dataclass
class ValidationReport:
    """Per-arch rows (CSV_COLUMNS), the metrics, pass/fail per threshold, and where the files went."""

    rows: list[dict[str, Any]]
    metrics: dict[str, float]
    checks: dict[str, bool]
    out: Path
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(self.checks.values())


def sample_archs(space: SearchSpace, n: int, seed: int, exclude: Sequence[str] = ()) -> list[ArchConfig]:
    """`n` distinct architectures drawn uniformly from `space` with `np.random.default_rng(seed)`, skipping
    the ids in `exclude`; raises when the space cannot supply that many."""
    rng, skip, out = np.random.default_rng(seed), set(exclude), {}
    for _ in range(max(100, 50 * n)):
        arch = space.sample(rng)
        if arch.id not in skip and arch.id not in out:
            out[arch.id] = arch
            if len(out) == n:
                return list(out.values())
    raise LatencyTableError(f"could not draw {n} distinct architectures (seed {seed}) from the table's space "
                            f"outside {len(skip)} excluded ones; ask for fewer samples")


def compute_metrics(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """MAPE, max |error|, share within +-5% / +-10% (errors in % of measured), Kendall tau, Spearman rho."""
    from scipy import stats

    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    if p.shape != m.shape or p.size < 2:
        raise ValueError(f"need matching predicted/measured arrays of at least 2 values, got {p.shape}, {m.shape}")
    err = np.abs(error_pct(p, m))
    return {"n": int(p.size), "mape_pct": float(err.mean()), "max_abs_pct": float(err.max()),
            "within_5_share": float(np.mean(err <= 5.0)), "within_10_share": float(np.mean(err <= 10.0)),
            "kendall_tau": float(stats.kendalltau(p, m).statistic),
            "spearman_rho": float(stats.spearmanr(p, m).statistic)}


def error_pct(predicted: Any, measured: Any) -> Any:
    """Signed error of a prediction in % of the measured latency (positive = predicted too slow)."""
    return (np.asarray(predicted, dtype=float) - measured) / np.asarray(measured, dtype=float) * 100.0


def check_thresholds(metrics: dict[str, float]) -> dict[str, bool]:
    """Each documented threshold -> passed. A NaN tau (constant predictions) fails."""
    return {"all_within_10": metrics["max_abs_pct"] <= MAX_ABS_PCT,
            "within_5_share": metrics["within_5_share"] >= WITHIN_5_MIN_SHARE,
            "kendall_tau": bool(metrics["kendall_tau"] >= KENDALL_TAU_MIN)}


MIN_SPREAD_FOR_SLOPE = 0.25  # predictions must span 25% of their mean before a slope is fitted


def fit_linear(predicted_raw: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    """Least-squares (scale, offset_ms) with measured ~= scale x predicted_raw + offset_ms.

    A slope is only determined when the predictions spread: over a few architectures whose predictions lie within
    a few percent of each other, a two-parameter fit turns timing noise into an arbitrary scale (0.4 or 0.7 in
    trials here). Then only a ratio is fitted (scale = sum(m p) / sum(p p), offset 0): the bias seen between the sum
    of parts and whole networks is proportional, a few percent.
    """
    p, m = np.asarray(predicted_raw, dtype=float), np.asarray(measured, dtype=float)
    if p.size < 1 or p.size != m.size or np.any(p <= 0):
        raise LatencyTableError(f"calibration needs positive predictions for at least 1 architecture, got {p.size}")
    if p.size >= 3 and np.ptp(p) >= MIN_SPREAD_FOR_SLOPE * p.mean():
        scale, offset = np.polyfit(p, m, 1)
        return float(scale), float(offset)
    return float((m * p).sum() / (p * p).sum()), 0.0


def _table_setup(table_dir: Path, backend: str, threads: int | None, iters: int | None) -> tuple[LatencyTable, int | None, int]:
    check_backend(backend)  # a missing runtime is one line before any export
    table = LatencyTable.load(table_dir, backend=backend)
    threads = table.manifest.get("threads") if threads is None else threads
    iters = iters or table.manifest.get("iters") or DEFAULT_ITERS
    return table, threads, int(iters)


def measure_archs(table: LatencyTable, archs: Sequence[ArchConfig], iters: int, workdir: Path, *,
                  backend: str, config: TimingConfig, threads: int | None, seed: int = 0,
                  log: Callable[[str], None] | None = None) -> list[dict[str, float]]:
    """Export each arch (untrained, `torch.manual_seed(seed + i)`) into `workdir` and time it end to end in
    interleaved groups of GROUP; returns median_ms, cv and runs per arch, in order."""
    import torch  # only exporting needs torch

    from export.onnx_export import ExportSpec, export_onnx
    from flownas.models import DecoderSpec, FlowNASNet

    decoder = DecoderSpec.from_dict(table.manifest["decoder"])
    spec = ExportSpec(table.height, table.width, iters=iters, batch=table.batch)
    lower = _plan_lowering(table)
    paths, nets = [], {}
    for i, arch in enumerate(archs):
        torch.manual_seed(seed + i)
        path = workdir / f"{i:03d}-{arch.id}.onnx"
        nets[path] = FlowNASNet(arch, table.space, decoder=decoder).eval()
        export_onnx(nets[path], path, spec)
        lower(path)
        if backend == "trt":  # TensorRT times engines: one fp32 engine per network, beside its ONNX file
            from export.tensorrt import build_engine

            build_engine(path, path.with_suffix(".engine"), precision="fp32")
        paths.append(path)
        if log:
            log(f"exported {i + 1}/{len(archs)} {arch.id}")
    feeds = make_feeds(table.height, table.width, table.batch)
    results: list[dict[str, float]] = []
    for start in range(0, len(paths), GROUP):
        group = paths[start:start + GROUP]
        runners = {p.stem: _network_runner(backend, p, nets[p], threads, iters) for p in group}
        for name, r in compare(runners, feeds, config).items():
            results.append({"median_ms": r.stats.median_ms, "cv": r.stats.cv, "runs": r.stats.count})
            if log:
                log(f"measured {name}: {r.stats.median_ms:.2f} ms (CV {r.stats.cv:.3f})")
    return results


def _plan_lowering(table: LatencyTable) -> Callable[[Path], None]:
    """How each exported network is rewritten before timing: by the table's precision plan, as its keys were
    (INT8 calibrated on two synthetic pairs: speed does not depend on the ranges); nothing for fp32 tables."""
    groups = table.plan_groups
    if not groups:
        return lambda path: None
    import onnx

    from export.precision_plan import PrecisionPlan
    from export.quantize import CalibrationSet, apply_plan, calibration_pairs, save_model

    plan = PrecisionPlan(groups)
    pairs = calibration_pairs(CalibrationSet(pairs=2), table.height, table.width) if "int8" in plan.precisions() \
        else []
    int8_format = table.manifest.get("int8_format") or "tensorrt"

    def lower(path: Path) -> None:
        save_model(apply_plan(onnx.load(str(path)), plan, pairs, int8_format=int8_format), path)

    return lower


def _network_runner(backend: str, onnx: Path, net: Any, threads: int | None, iters: int) -> Any:
    """The runner that times one whole network on `backend`, as the keys were timed: ONNX Runtime on the ONNX
    file, TensorRT on its engine, PyTorch on the module (iterations as exported)."""
    from export.runners import EngineRunner, OrtRunner

    if backend in ORT_BACKENDS:
        return OrtRunner(onnx, ORT_BACKENDS[backend], threads=threads)
    if backend == "trt":
        return EngineRunner(onnx.with_suffix(".engine"))
    from export.torch_runner import flow_model_runner

    return flow_model_runner(net, iters=iters, device=TORCH_BACKENDS[backend], threads=threads)


def _calibration_ids(manifest: dict[str, Any]) -> list[str]:
    entry = manifest.get("calibration") or {}
    return list(entry.get("arch_ids", []))


def validate_table(table_dir: str | os.PathLike, *, samples: int = 30, seed: int = 0, iters: int | None = None,
                   backend: str = "ort-cpu", config: TimingConfig | None = None, threads: int | None = None,
                   out: str | os.PathLike | None = None,
                   log: Callable[[str], None] | None = None) -> ValidationReport:
    """Predict and measure `samples` held-out random architectures; write the report into `out` (default
    `<table_dir>/validation`). Latencies in ms per call of the exported network (numpy in and out)."""
    table_dir = Path(table_dir)
    table, threads, iters = _table_setup(table_dir, backend, threads, iters)
    config = (config or VALIDATE_CONFIG).validate()
    archs = sample_archs(table.space, samples, seed, exclude=_calibration_ids(table.manifest))
    out = Path(out) if out is not None else table_dir / "validation"
    raws = [table.predict(arch, iters, calibrated=False) for arch in archs]  # a missing key fails before timing
    with staged_dir(out, owned=OUTPUT_FILES) as stage:
        measured = measure_archs(table, archs, iters, scratch_of(stage), backend=backend, config=config,
                                 threads=threads, seed=seed, log=log)
        rows = []
        for arch, raw, m in zip(archs, raws, measured):
            pred = float(table.calibrate(raw))
            rows.append({"arch_id": arch.id, "predicted_ms": pred, "predicted_raw_ms": raw,
                         "measured_ms": m["median_ms"], "cv": m["cv"], "runs": m["runs"],
                         "error_pct": float(error_pct(pred, m["median_ms"]))})
        metrics = compute_metrics([r["predicted_ms"] for r in rows], [r["measured_ms"] for r in rows])
        report = ValidationReport(rows, metrics, check_thresholds(metrics), out, table.manifest)
        setup = {"samples": samples, "seed": seed, "iters": iters, "threads": threads, "backend": backend,
                 "table_threads": table.manifest.get("threads"), "timing_config": config.to_dict(), "group": GROUP,
                 "calibrated": table.calibration is not None, "table": str(table_dir)}
        _write_outputs(stage, report, setup)
    return report


def _write_outputs(stage: Path, report: ValidationReport, setup: dict[str, Any]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()} for row in report.rows)
    atomic_write_text(stage / "validation.csv", buffer.getvalue())
    _scatter(stage / "scatter.png", report)
    atomic_write_text(stage / "summary.md", summary_markdown(report, setup))
    m = report.manifest
    record = provenance("latency-validation", resolution=m.get("resolution"), iters=setup["iters"],
                        precision=m.get("precision"), backend=setup["backend"], device=m.get("device"),
                        extra={**{k: v for k, v in setup.items() if k not in ("iters", "backend")}, "metrics": report.metrics, "thresholds": THRESHOLDS,
                               "checks": report.checks, "passed": report.passed})
    atomic_write_text(stage / "validation.json", json.dumps(record, indent=1))


def _scatter(path: Path, report: ValidationReport) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on build machines
    import matplotlib.pyplot as plt


    p = np.array([r["predicted_ms"] for r in report.rows])
    m = np.array([r["measured_ms"] for r in report.rows])
    lo, hi = 0.9 * min(p.min(), m.min()), 1.1 * max(p.max(), m.max())
    line = np.linspace(lo, hi, 2)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=110)
    # error is in % of measured: |p - m| <= 0.1 m  <=>  p / 1.1 <= m <= p / 0.9
    ax.fill_between(line, line / 1.1, line / 0.9, color="tab:green", alpha=0.15, label="±10%")
    ax.plot(line, line, color="black", lw=1, label="y = x")
    ax.scatter(p, m, s=14, color="tab:blue", label=f"{len(p)} networks")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="predicted (ms)", ylabel="measured median (ms)",
           title=f"MAPE {report.metrics['mape_pct']:.2f}%, τ {report.metrics['kendall_tau']:.3f}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def summary_markdown(report: ValidationReport, setup: dict[str, Any]) -> str:
    """The Markdown summary: table manifest, validation setup, metrics against the thresholds, worst networks."""
    m, x, ok = report.manifest, report.metrics, report.checks
    mark = {True: "pass", False: "FAIL"}
    manifest_keys = ("backend", "device", "cpu", "threads", "precision", "resolution", "batch", "keys", "created",
                     "measured", "timing_config", "calibration")
    lines = [f"# Latency table validation: {'PASSED' if report.passed else 'FAILED'}", "",
             "## Table", ""] + [f"- {k}: `{json.dumps(m.get(k))}`" for k in manifest_keys if k in m]
    lines += ["", "## Setup", ""] + [f"- {k}: `{json.dumps(v)}`" for k, v in setup.items()]
    if setup.get("threads") != setup.get("table_threads"):
        lines.append(f"- WARNING: measured with {setup.get('threads')} threads, the table with "
                     f"{setup.get('table_threads')}")
    lines += ["", "## Metrics", "", "| metric | value | threshold | result |", "|---|---|---|---|",
              f"| MAPE | {x['mape_pct']:.2f}% | | |",
              f"| max abs error | {x['max_abs_pct']:.2f}% | <= {MAX_ABS_PCT:g}% | {mark[ok['all_within_10']]} |",
              f"| within ±5% | {100 * x['within_5_share']:.1f}% | >= {100 * WITHIN_5_MIN_SHARE:g}% | "
              f"{mark[ok['within_5_share']]} |",
              f"| within ±10% | {100 * x['within_10_share']:.1f}% | 100% | {mark[ok['all_within_10']]} |",
              f"| Kendall τ | {x['kendall_tau']:.3f} | >= {KENDALL_TAU_MIN:g} | {mark[ok['kendall_tau']]} |",
              f"| Spearman ρ | {x['spearman_rho']:.3f} | | |", "",
              "## Largest errors", "", "| arch | predicted ms | measured ms | CV | error % |", "|---|---|---|---|---|"]
    worst = sorted(report.rows, key=lambda r: -abs(r["error_pct"]))[:5]
    lines += [f"| `{r['arch_id']}` | {r['predicted_ms']:.2f} | {r['measured_ms']:.2f} | {r['cv']:.3f} | "
              f"{r['error_pct']:+.2f} |" for r in worst]
    return "\n".join(lines) + "\n"


def write_calibration(table_dir: str | os.PathLike, calibration: dict[str, Any]) -> None:
    """Store `calibration` under "calibration" in the table's table.json (atomically; other fields kept)."""
    path = Path(table_dir) / TABLE_JSON
    if not path.is_file():
        raise LatencyTableError(f"{path}: latency table file not found (assemble the table first)")
    record = json.loads(path.read_text())
    record["calibration"] = calibration
    atomic_write_text(path, json.dumps(record, indent=1))


def fit_calibration(table_dir: str | os.PathLike, *, samples: int = 5, seed: int = 1000, iters: int | None = None,
                    backend: str = "ort-cpu", config: TimingConfig | None = None, threads: int | None = None,
                    log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure `samples` random architectures (seed distinct from validation's) end to end, fit measured =
    scale x raw prediction + offset_ms by least squares, write it into table.json; returns the entry."""
    table_dir = Path(table_dir)
    table, threads, iters = _table_setup(table_dir, backend, threads, iters)
    config = (config or VALIDATE_CONFIG).validate()
    archs = sample_archs(table.space, samples, seed)
    raw = [table.predict(a, iters, calibrated=False) for a in archs]  # a missing key fails before timing
    with scratch_dir(table_dir / TABLE_JSON, "calibrate") as work:  # exported networks: removed after
        measured = measure_archs(table, archs, iters, work, backend=backend, config=config,
                                 threads=threads, seed=seed, log=log)
    scale, offset = fit_linear(raw, [m["median_ms"] for m in measured])
    entry = {"scale": scale, "offset_ms": offset, "samples": samples, "seed": seed, "iters": iters,
             "threads": threads, "arch_ids": [a.id for a in archs], "raw_ms": raw,
             "measured_ms": [m["median_ms"] for m in measured],
             "fitted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    write_calibration(table_dir, entry)
    return entry


def add_validate_args(p: argparse.ArgumentParser) -> None:
    """Options of `lut validate`."""
    p.add_argument("--table", required=True, metavar="DIR", help="table folder (table.json + table.csv)")
    p.add_argument("--samples", type=int, default=30, metavar="N", help="held-out random networks to measure")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the validation sample")
    p.add_argument("--iters", type=int, default=None, metavar="N",
                   help=f"update iterations of the exported networks (default: the table's, else {DEFAULT_ITERS})")
    p.add_argument("--calibrate", type=int, default=0, metavar="K",
                   help="first fit the table's linear calibration on K other random networks (seed 1000 + seed)")
    p.add_argument("--out", default=None, metavar="DIR", help="report folder (default: <table>/validation)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="ONNX Runtime intra-op threads (default: the table's)")
    p.add_argument("--runs", type=int, default=None, metavar="N",
                   help=f"measured runs per network (default {VALIDATE_CONFIG.runs})")
    p.add_argument("--backend", default="ort-cpu", help="backend the table was measured on and the networks are "
                                                        "timed on (default ort-cpu; trt builds an engine per network)")


def run_validate(args: argparse.Namespace) -> int:
    """`lut validate`: optional calibration, then validation; prints the summary; 0 when thresholds pass."""
    config = replace(VALIDATE_CONFIG, runs=args.runs) if args.runs else VALIDATE_CONFIG
    log = lambda line: print(line, flush=True)  # noqa: E731 - progress lines of a minutes-long run
    if args.calibrate:
        entry = fit_calibration(args.table, samples=args.calibrate, seed=1000 + args.seed, iters=args.iters,
                                config=config, threads=args.threads, backend=args.backend, log=log)
        print(f"calibration: measured = {entry['scale']:.4f} x predicted + {entry['offset_ms']:.3f} ms")
    report = validate_table(args.table, samples=args.samples, seed=args.seed, iters=args.iters, config=config,
                            threads=args.threads, out=args.out, backend=args.backend, log=log)
    print((report.out / "summary.md").read_text())
    print(f"report: {report.out}")
    return 0 if report.passed else 1
