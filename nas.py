"""Hardware-aware search, end to end: evolve on a latency table, prove the finalists on the device, ship the best.

    from nas import SearchRequest, run_search
    record = run_search(SearchRequest(supernet="runs/supernet/last.pt", table="latency_tables/tables/ort-cpu-128x192",
                                      budget_ms=120, iters_choices=(4, 8, 12), out="runs/search"))

1. **Search** (`flownas.search.evolve`) over the supernet's space, plus an `iters` gene when `iters_choices` is
   given: latency from the table (`latency_tables.search_latency.TableLatency`), error = the subnet's EPE with
   inherited weights after BN re-estimation (`flownas.evaluate.evaluate_subnet`, exactly what
   `evaluate --supernet CKPT --arch A --dataset D --max-samples N --iters I` computes), cached per id.
   With `precision_tables` (one table per precision, `lut build --precision int8`) a `bits` gene trades precision
   for latency: each candidate is predicted on its precision's table, and its error is its FP32 EPE plus the flow
   change that precision caused on the largest subnet (measured once, `precision_penalties`).
2. **Hardware in the loop**: the K lowest-error feasible architectures are extracted (BN re-estimated), exported
   to verified ONNX at the table's resolution (a reduced-precision finalist in its precision, refused above
   `max_epe_delta`, its EPE re-measured as FP32 EPE + its own flow change) and measured end to end on the table's
   backend, interleaved in one run. Re-ranked by EPE among those whose *measured* latency meets the budget; predictions more than 10% off are
   flagged. If none meets the budget the run fails (exit 2) with the measurements written, never a wrong answer.
3. **Outputs** in `out`: best.json, best.pt, finalists.csv, references.csv (the chosen network beside the
   largest, smallest and released subnets at its iteration count, measured in one run), pareto.csv, pareto.png,
   history.csv, search.json;
   with `export`, best_subnet.onnx (verified; an engine too on a TensorRT backend) and a benchmark report in bench/.
"""
from __future__ import annotations

import csv
import io
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from flownas.errors import ToolkitError, UserInputError

Log = Callable[[str], None]
FLAG_ERROR_PCT = 10.0  # a finalist whose prediction misses its measurement by more is flagged
RELEASED = ("raft-s", "raft-k")


class SearchRunError(ToolkitError, ValueError):
    """A search that cannot start, or whose finalists all miss the budget on the device (one line)."""


def _quiet(_: str) -> None:
    pass


@dataclass
class SearchRequest:
    """Everything `run_search` needs (the CLI's options, one to one)."""

    supernet: str
    table: str
    budget_ms: float
    out: str = "outputs/search"
    val: str = "synthetic"
    root: str | None = None
    split: str | None = None
    val_samples: int = 8
    calibrate_bn: int = 8
    iters: int = 12
    iters_choices: Sequence[int] | None = None
    precision_tables: Mapping[str, str] | None = None  # precision -> table folder: searches a `bits` gene too
    max_epe_delta: float = 0.5       # finalists at reduced precision: flow change (px) allowed against fp32
    population: int = 50
    generations: int = 20
    seed: int = 0
    mode: str = "single"
    max_params: int | None = None
    max_macs: int | None = None
    finalists: int = 5
    backend: str | None = None       # default: the table's backend
    threads: int | None = None       # default: the table's thread count
    device: str = "cpu"              # torch device for the fitness evaluation
    resume: bool = False
    export: bool = False
    force_table: bool = False
    progress: bool = True

    def validate(self) -> None:
        if not self.budget_ms > 0:
            raise UserInputError(f"--budget-ms {self.budget_ms}: must be a positive latency in ms")
        for name in ("val_samples", "population", "finalists", "iters"):
            if getattr(self, name) < 1:
                raise UserInputError(f"{name} {getattr(self, name)}: must be at least 1")
        if self.generations < 0 or self.calibrate_bn < 0:
            raise UserInputError("generations and calibrate_bn must not be negative")
        if self.iters_choices is not None and (not self.iters_choices or min(self.iters_choices) < 1):
            raise UserInputError(f"--iters-choices {self.iters_choices}: positive iteration counts expected")
        tables = [(path, f"{precision} latency table folder") for precision, path in
                  (self.precision_tables or {}).items()]
        for path, what in ((self.supernet, "supernet checkpoint"), (self.table, "latency table folder"), *tables):
            if not Path(path).exists():
                raise UserInputError(f"{path}: {what} not found")


@dataclass
class SearchRecord:
    """What `run_search` produced."""

    out: str
    best: dict[str, Any]
    finalists: list[dict[str, Any]]
    evaluations: int
    generations: int
    wall_s: float
    references: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SubnetError:
    """`ErrorFn`: EPE of each architecture's subnet (BN re-estimated), pairs generated once and kept in memory.

    An architecture with a reduced-precision gene adds `penalty[precision]`: the flow change (px) that precision
    caused on a reference subnet (`precision_penalties`), a bound on its EPE change, since |EPE_q - EPE_fp32| <=
    mean |flow_q - flow_fp32|. The finalists replace it by their own measured change.
    """

    def __init__(self, supernet: Any, dataset: Any, *, iters: int, max_samples: int, calibrate_bn: int,
                 device: str = "cpu") -> None:
        from flownas.data.stream import fixed_pairs

        self.supernet, self.iters, self.device = supernet, iters, device
        self.max_samples, self.calibrate_bn = min(max_samples, len(dataset)), calibrate_bn
        self.dataset = InMemory(dataset, self.max_samples)
        self.pairs = fixed_pairs(dataset, calibrate_bn, seed=0) if calibrate_bn else []
        self.penalty: dict[str, float] = {}
        self.evaluated = 0

    def split(self, arch: Any) -> tuple[Any, int]:
        """(encoders' architecture, iterations) of a searched architecture."""
        return self.supernet.space.restrict(arch), int(arch.to_dict().get("iters", self.iters))

    def __call__(self, archs: Sequence[Any]) -> list[float]:
        from flownas.evaluate import evaluate_subnet
        from latency_tables.search_latency import precision_of

        errors = []
        for arch in archs:  # evaluate_subnet: what `evaluate --supernet` computes, with the pairs drawn once
            encoders, iters = self.split(arch)
            summary, _ = evaluate_subnet(self.supernet, encoders, self.dataset, iters=iters, device=self.device,
                                         pairs=self.pairs)
            errors.append(float(summary["epe"]) + self.penalty.get(precision_of(arch), 0.0))
            self.evaluated += 1
        return errors


class InMemory:
    """The first `count` samples of a dataset, generated or read once (the fitness evaluates many subnets)."""

    def __init__(self, dataset: Any, count: int) -> None:
        self.samples = [dataset[i] for i in range(count)]
        self.ids = [dataset.sample_id(i) if hasattr(dataset, "sample_id") else str(i) for i in range(count)]
        for name in ("pad_mode", "aggregation", "sparse"):
            if hasattr(dataset, name):
                setattr(self, name, getattr(dataset, name))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Any:
        return self.samples[index]

    def sample_id(self, index: int) -> str:
        return self.ids[index]


def _precision_tables(request: SearchRequest, table: Any) -> dict[str, Any]:
    """The tables of the other precisions, each refused unless its manifest holds that precision."""
    from latency_tables.predictor import LatencyTable

    return {precision: LatencyTable.load(path, precision=precision, backend=request.backend,
                                         force=request.force_table)
            for precision, path in (request.precision_tables or {}).items()
            if precision != table.manifest.get("precision")}


def precision_penalties(fitness: SubnetError, precisions: Sequence[str], table: Any, iters: int, workdir: Path,
                        log: Log = _quiet) -> dict[str, float]:
    """Flow change (px, worst pair) each reduced precision causes on the supernet's largest subnet at the table's
    resolution: exported, lowered uniformly (INT8 calibrated on synthetic pairs) and run on ONNX Runtime against
    the PyTorch FP32 flow (`export.precision_export`). Measured once per search; the finalists measure their own."""
    from export.precision_export import export_precision_onnx
    from export.precision_plan import PrecisionPlan
    from export.spec import ExportSpec
    from flownas.evaluate import calibrated_subnet

    penalties = {}
    reference = fitness.supernet.space.largest()
    net = calibrated_subnet(fitness.supernet, reference, fitness.pairs).cpu()
    spec = ExportSpec(table.height, table.width, iters=iters, batch=table.batch)
    for precision in precisions:
        if precision == "fp32":
            continue
        path = workdir / f"penalty-{precision}.onnx"
        result = export_precision_onnx(net, path, spec, PrecisionPlan.uniform(precision), _calibration(table),
                                       max_epe_delta=math.inf)
        penalties[precision] = float(result.check.max_epe_delta)
        log(f"precision gene: {precision} changes the flow of the largest subnet by {penalties[precision]:.3f} px "
            "(added to the EPE of every candidate in that precision)")
    return penalties


def _calibration(table: Any) -> Any:
    """Synthetic calibration, INT8 written in the format the table's backend was measured with."""
    from export.quantize import CalibrationSet
    from latency_tables.lowering import int8_format_for

    return CalibrationSet(int8_format=int8_format_for(table.manifest.get("backend", "")))


def _load(request: SearchRequest) -> tuple[Any, Any, str, int | None]:
    from flownas.models import FlowNASSupernet
    from flownas.weights import load_model
    from latency_tables.predictor import LatencyTable

    supernet = load_model(request.supernet, device=request.device)
    if not isinstance(supernet, FlowNASSupernet):
        raise SearchRunError(f"{request.supernet}: not a supernet checkpoint (holds {supernet.config()['family']}); "
                             "train one with train-supernet or pass the FlowNAS release file")
    table = LatencyTable.load(request.table, backend=request.backend, force=request.force_table)
    if table.space.to_dict() != supernet.space.to_dict():
        raise SearchRunError(f"{request.table}: the table was built for another search space than the supernet's "
                             f"({request.supernet}); build one with `lut build --space`")
    backend = request.backend or table.manifest["backend"]
    threads = request.threads if request.threads is not None else table.manifest.get("threads")
    return supernet, table, backend, threads


def _space(supernet: Any, request: SearchRequest, latency: Any = None) -> Any:
    """The supernet's space plus the `iters` gene (iters_choices) and the `bits` gene (several precisions)."""
    from flownas.genes import Gene
    from latency_tables.search_latency import precision_gene

    genes = []
    if request.iters_choices:
        genes.append(Gene("iters", "i", "global", tuple(sorted(set(request.iters_choices)))))
    if latency is not None and len(latency.precisions) > 1:
        genes.append(precision_gene(latency.precisions))
    return supernet.space.with_genes(*genes) if genes else supernet.space


def _search_config(request: SearchRequest) -> Any:
    from flownas.search import SearchConfig

    mutations = request.population // 2
    return SearchConfig(population=request.population, generations=request.generations, mutations=mutations,
                        crossovers=request.population - mutations, parents=min(10, request.population),
                        seed=request.seed, budget_ms=request.budget_ms, max_params=request.max_params,
                        max_macs=request.max_macs, mode=request.mode, max_tries=200)


def _finalists(result: Any, count: int) -> list[tuple[str, float, float]]:
    """(arch id, predicted ms, error) of the `count` lowest-error feasible architectures, best first."""
    rows = [r for r in result.history if r["feasible"] and r["error"] is not None]
    rows.sort(key=lambda r: (r["error"], r["latency_ms"], r["arch_id"]))
    return [(r["arch_id"], r["latency_ms"], r["error"]) for r in rows[:count]]


def measure_finalists(fitness: SubnetError, space: Any, finalists: list[tuple[str, float, float]], table: Any,
                      backend: str, threads: int | None, workdir: Path, log: Log = _quiet,
                      max_epe_delta: float = 0.5) -> list[dict[str, Any]]:
    """Export each finalist (trained weights, BN re-estimated, verified ONNX; a reduced-precision finalist in its
    precision, refused above `max_epe_delta` px of flow change) and time them interleaved."""
    from bench.protocol import TimingConfig, compare, make_feeds
    from bench.runners import make_runner
    from flownas.arch import ArchConfig

    workdir.mkdir(parents=True, exist_ok=True)
    runners, rows = {}, []
    for rank, (arch_id, predicted, error) in enumerate(finalists):
        log(f"hardware in the loop: finalist {rank + 1}/{len(finalists)} {arch_id}")
        row = _export_finalist(fitness, ArchConfig.from_id(arch_id, space), rank, predicted, error, table, backend,
                               workdir, max_epe_delta)
        rows.append(row)
        if row.get("refused"):
            log(f"  refused: {row['refused']}")
            continue
        runners[arch_id] = make_runner(backend, onnx=row["onnx"], engine=row["engine"], threads=threads,
                                       model_name=arch_id)
    log(f"measuring {len(runners)} finalists end to end on {backend}, interleaved")
    results = compare(runners, make_feeds(table.height, table.width, table.batch),
                      TimingConfig(runs=10, duration_s=2.0)) if runners else {}
    for row in rows:
        if row["arch_id"] not in results:
            row.update(measured_ms=math.inf, measured_cv=None, error_pct=math.nan)
            continue
        stats = results[row["arch_id"]].stats
        row.update(measured_ms=stats.median_ms, measured_cv=stats.cv,
                   error_pct=100.0 * (row["predicted_ms"] - stats.median_ms) / stats.median_ms)
    return rows


def _export_finalist(fitness: SubnetError, arch: Any, rank: int, predicted: float, error: float, table: Any,
                     backend: str, workdir: Path, max_epe_delta: float) -> dict[str, Any]:
    """One finalist's verified ONNX file (and engine on trt) and its row; at reduced precision the EPE is the
    fp32 EPE plus the flow change measured on this very network (replacing the search's estimate)."""
    from export.spec import ExportSpec
    from export.verify import VerificationError
    from export.workflow import export_verified_onnx
    from flownas.evaluate import calibrated_subnet
    from latency_tables.search_latency import precision_of

    encoders, iters = fitness.split(arch)
    precision = precision_of(arch, table.manifest.get("precision", "fp32"))
    net = calibrated_subnet(fitness.supernet, encoders, fitness.pairs).cpu()
    path = workdir / f"{rank}-{arch.id}.onnx"
    spec = ExportSpec(table.height, table.width, iters=iters, batch=table.batch)
    epe_fp32 = error - fitness.penalty.get(precision, 0.0)
    row = {"rank_by_error": rank, "arch_id": arch.id, "iters": iters, "precision": precision, "epe": error,
           "epe_fp32": epe_fp32, "epe_delta": 0.0, "predicted_ms": predicted, "onnx": str(path), "engine": None}
    if precision == "fp32":
        if not path.is_file():
            export_verified_onnx(net, path, spec, source=str(fitness.supernet.__class__.__name__))
    else:
        from export.precision_export import export_precision_onnx
        from export.precision_plan import PrecisionPlan

        try:
            result = export_precision_onnx(net, path, spec, PrecisionPlan.uniform(precision), _calibration(table),
                                           max_epe_delta=max_epe_delta)
        except VerificationError as exc:
            row.update(refused=str(exc), epe=math.inf)
            return row
        row.update(epe_delta=result.check.max_epe_delta, epe=epe_fp32 + result.check.max_epe_delta)
    if backend == "trt":  # TensorRT times engines: one verified engine per finalist, in its precision
        from export.tensorrt import build_verified_engine

        row["engine"] = str(path.with_suffix(".engine"))
        if not Path(row["engine"]).is_file():
            build_verified_engine(path, row["engine"], precision="fp32")
    return row


def _choose(rows: list[dict[str, Any]], budget_ms: float) -> list[dict[str, Any]]:
    """Flag bad predictions, drop what misses the budget when measured, re-rank by EPE then measured latency."""
    for row in rows:
        row["flagged"] = bool(abs(row["error_pct"]) > FLAG_ERROR_PCT)  # NaN (refused, not measured): False
        row["within_budget"] = row["measured_ms"] <= budget_ms and not row.get("refused")
    kept = sorted((r for r in rows if r["within_budget"]), key=lambda r: (r["epe"], r["measured_ms"]))
    for position, row in enumerate(kept):
        row["final_rank"] = position
    return kept


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    from flownas.fileio import atomic_write_text

    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _pareto_rows(result: Any, space: Any, default_iters: int) -> list[dict[str, Any]]:
    from flownas.arch import ArchConfig
    from flownas.search import pareto_front

    rows = [r for r in result.history if r["feasible"] and r["error"] is not None]
    front = set(pareto_front([(r["error"], r["latency_ms"]) for r in rows]))
    return [{"arch_id": r["arch_id"], "iters": ArchConfig.from_id(r["arch_id"], space).to_dict().get("iters",
                                                                                                     default_iters),
             "latency_ms": r["latency_ms"], "epe": r["error"], "pareto": i in front} for i, r in enumerate(rows)]


def reference_archs(fitness: SubnetError, space: Any, iters: int) -> list[tuple[str, str]]:
    """(name, id in the searched space) of the largest and smallest subnets and the released architectures (when
    the supernet's space holds them) at `iters` iterations: what the chosen network is compared with."""
    from flownas.arch import ArchConfig, resolve_arch
    from flownas.genes import ArchError

    found = []
    for name in ("largest", "smallest", *RELEASED):
        try:
            values = resolve_arch(name, fitness.supernet.space).to_dict()
        except ArchError:
            continue
        if "iters" in space.gene_names:
            values["iters"] = iters
        found.append((name, ArchConfig.from_dict(values, space).id))
    return found


def measure_references(fitness: SubnetError, latency: Any, space: Any, best: dict[str, Any], table: Any, backend: str,
                       threads: int | None, workdir: Path, log: Log = _quiet) -> list[dict[str, Any]]:
    """The chosen network beside the reference architectures at its iteration count: EPE by the same fitness,
    predicted latency, and measured latency from one interleaved run (so the ratios are from one run)."""
    from flownas.arch import ArchConfig

    if "iters" in space.gene_names and best["iters"] not in space.gene("iters").options():
        return []
    names = reference_archs(fitness, space, best["iters"])
    archs = [ArchConfig.from_id(arch_id, space) for _, arch_id in names]
    entries = [(best["arch_id"], best["predicted_ms"], best["epe"])]
    entries += [(a.id, p, e) for a, p, e in zip(archs, latency(archs), fitness(archs)) if a.id != best["arch_id"]]
    rows = measure_finalists(fitness, space, entries, table, backend, threads, workdir, log, math.inf)
    labels = {arch_id: name for name, arch_id in names}
    for row in rows:
        if row["arch_id"] != best["arch_id"]:
            row["name"] = labels[row["arch_id"]]
        else:  # the chosen network may itself be a reference (the largest, when the budget allows it)
            row["name"] = "chosen" + (f" (= {labels[row['arch_id']]})" if row["arch_id"] in labels else "")
    return rows


def _plot(path: Path, rows: list[dict[str, Any]], references: list[dict[str, Any]], best: dict[str, Any],
          budget_ms: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flownas.fileio import save_figure

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([r["latency_ms"] for r in rows], [r["epe"] for r in rows], s=10, c="0.75", label="evaluated")
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["latency_ms"])
    ax.plot([r["latency_ms"] for r in front], [r["epe"] for r in front], "-o", ms=4, c="C0", label="Pareto front")
    for i, ref in enumerate(r for r in references if not r["name"].startswith("chosen")):
        ax.scatter([ref["predicted_ms"]], [ref["epe"]], marker="s", s=40, c=f"C{i + 4}",
                   label=f"{ref['name']} ({ref['iters']} it.)")
    ax.scatter([best["predicted_ms"]], [best["epe"]], marker="*", s=160, c="C3", label="chosen (predicted)")
    ax.scatter([best["measured_ms"]], [best["epe"]], marker="x", s=80, c="C3", label="chosen (measured)")
    ax.axvline(budget_ms, ls="--", c="k", lw=1, label=f"budget {budget_ms:g} ms")
    ax.set_xlabel("latency (ms, predicted by the table)")
    ax.set_ylabel("validation EPE (px)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def run_search(request: SearchRequest, log: Log = _quiet) -> SearchRecord:
    """Search, verify on the device, write the outputs (module docstring); the record of what was done."""
    from flownas.data.datasets import build_dataset
    from flownas.fileio import atomic_write_text
    from flownas.provenance import provenance
    from flownas.search import evolve
    from latency_tables.search_latency import TableLatency

    request.validate()
    started = time.perf_counter()
    out = Path(request.out)
    out.mkdir(parents=True, exist_ok=True)
    supernet, table, backend, threads = _load(request)
    latency = TableLatency(table, default_iters=request.iters, precision_tables=_precision_tables(request, table))
    space = _space(supernet, request, latency)
    dataset = build_dataset(request.val, request.root, split=request.split)
    fitness = SubnetError(supernet, dataset, iters=request.iters, max_samples=request.val_samples,
                          calibrate_bn=request.calibrate_bn, device=request.device)
    if len(latency.precisions) > 1:
        fitness.penalty = precision_penalties(fitness, latency.precisions, table, request.iters, out / "precision",
                                              log)
    log(f"searching {space.size():,} architectures under {request.budget_ms:g} ms ({backend}, "
        f"{table.height}x{table.width}), fitness: EPE on {fitness.max_samples} {request.val} pairs")
    result = evolve(space, latency, fitness, _search_config(request), state_path=out / "search_state.json",
                    resume=request.resume, progress=request.progress)
    rows = measure_finalists(fitness, space, _finalists(result, request.finalists), table, backend, threads,
                             out / "finalists", log, request.max_epe_delta)
    kept = _choose(rows, request.budget_ms)
    _write_csv(out / "finalists.csv", rows)
    pareto = _pareto_rows(result, space, request.iters)
    _write_csv(out / "pareto.csv", pareto)
    _write_csv(out / "history.csv", [{k: v for k, v in r.items() if k != "parents"} for r in result.history])
    if not kept:
        raise SearchRunError(f"none of the {len(rows)} finalists meets {request.budget_ms:g} ms when measured on "
                             f"{backend} (fastest {min(r['measured_ms'] for r in rows):.1f} ms; see "
                             f"{out / 'finalists.csv'}): raise the budget or rebuild/calibrate the table")
    best = kept[0]
    references = measure_references(fitness, latency, space, best, table, backend, threads, out / "references", log)
    _write_csv(out / "references.csv", references)
    _plot(out / "pareto.png", pareto, references, best, request.budget_ms)
    files = _write_best(out, fitness, space, best, request, backend, table)
    if request.export:
        files.update(_export_best(out, best, request, backend, threads, table, log))
    record = SearchRecord(out=str(out), best=best, finalists=rows, evaluations=result.evaluations,
                          generations=result.generations, wall_s=time.perf_counter() - started,
                          references=references,
                          files={**files, "finalists": str(out / "finalists.csv"), "pareto": str(out / "pareto.csv"),
                                 "plot": str(out / "pareto.png"), "history": str(out / "history.csv")})
    atomic_write_text(out / "search.json", json.dumps({
        "record": record.to_dict(), "request": asdict(request),
        "provenance": provenance("search", arch_id=best["arch_id"], resolution=[table.height, table.width],
                                 iters=best["iters"], precision=best["precision"], backend=backend,
                                 device=table.manifest.get("device"))}, indent=1, default=str))
    return record


def _write_best(out: Path, fitness: SubnetError, space: Any, best: dict[str, Any], request: SearchRequest,
                backend: str, table: Any) -> dict[str, str]:
    """best.json (published dict, id, iterations, predicted/measured latency, EPE) and best.pt (BN re-estimated)."""
    from flownas.arch import ArchConfig
    from flownas.evaluate import calibrated_subnet
    from flownas.fileio import atomic_write_text
    from flownas.provenance import provenance
    from flownas.weights import save_checkpoint

    encoders, iters = fitness.split(ArchConfig.from_id(best["arch_id"], space))
    net = calibrated_subnet(fitness.supernet, encoders, fitness.pairs)
    save_checkpoint(out / "best.pt", net, {"arch_id": encoders.id, "iters": iters, "source": request.supernet,
                                           "bn_calibration_batches": request.calibrate_bn,
                                           "search": {k: best[k] for k in ("predicted_ms", "measured_ms", "epe")}})
    atomic_write_text(out / "best.json", json.dumps({
        "arch": encoders.to_dict(), "id": encoders.id, "search_id": best["arch_id"], "iters": iters,
        "precision": best["precision"], "epe_delta": best["epe_delta"],
        "predicted_ms": best["predicted_ms"], "measured_ms": best["measured_ms"], "epe": best["epe"],
        "budget_ms": request.budget_ms, "backend": backend, "table": request.table,
        "val": {"dataset": request.val, "root": request.root, "samples": fitness.max_samples,
                "calibrate_bn": request.calibrate_bn},
        "recheck": f"flownas evaluate --supernet {request.supernet} --arch {encoders.id} --dataset {request.val} "
                   f"--max-samples {fitness.max_samples} --iters {iters} --calibrate-bn {request.calibrate_bn}",
        "provenance": provenance("search-best", arch_id=encoders.id, resolution=[table.height, table.width],
                                 iters=iters, precision=best["precision"], backend=backend,
                                 device=table.manifest.get("device"))}, indent=1))
    return {"best_json": str(out / "best.json"), "best_pt": str(out / "best.pt")}


def _export_best(out: Path, best: dict[str, Any], request: SearchRequest, backend: str, threads: int | None,
                 table: Any, log: Log) -> dict[str, str]:
    """best.onnx (the verified finalist export), an engine on TensorRT backends, and a benchmark report."""
    from bench.protocol import TimingConfig
    from bench.session import BenchRequest, run_benchmark

    onnx = out / "best_subnet.onnx"  # its record sits beside it as best_subnet.json
    shutil.copyfile(best["onnx"], onnx)
    sidecar = Path(best["onnx"]).with_suffix(".json")
    if sidecar.is_file():
        shutil.copyfile(sidecar, onnx.with_suffix(".json"))
    files = {"onnx": str(onnx)}
    engine = None
    if best["engine"]:
        engine = out / "best_subnet.engine"
        shutil.copyfile(best["engine"], engine)
        files["engine"] = str(engine)
    log(f"benchmarking the chosen network on {backend}")
    run_benchmark(BenchRequest(backends=backend, onnx=None if engine else str(onnx),
                               engine=str(engine) if engine else None, threads=threads, out=str(out / "bench"),
                               timing=TimingConfig(runs=10, duration_s=2.0)), log=log)
    files["bench"] = str(out / "bench")
    return files
