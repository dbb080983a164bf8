"""The toolkit's main job in one command: table -> teacher -> supernet -> search -> device check -> ship.

    python cli.py pipeline [--config FILE] [--out DIR]          # CPU defaults: under 10 minutes on 2 cores
    python cli.py pipeline --device cuda --backend trt          # the GPU path

Stages, each skipped when its output exists (a re-run resumes; an interrupted training resumes from its checkpoint):

1. **table**: the given `table`, else the shipped ONNX Runtime CPU table at `resolution` when it was measured on
   this CPU model, else one built here (`lut build`) into OUT/table;
2. **teacher**: a plain RAFT trained on synthetic pairs (`train --model raft-small --config synthetic-small`);
3. **supernet**: the FlowNAS supernet trained with FAD from that teacher (`train-supernet --config synthetic`);
4. **search**: evolutionary search under `budget_ms` with the iteration gene, finalists exported, verified and
   measured on the backend, the best extracted and exported, with a benchmark (`search ... --export`);
5. **report**: OUT/report.md with the figures and plots, OUT/pipeline.json with every stage's record.

`budget_ms: null` (the default) puts the budget halfway between the predicted latency of the smallest network at
the fewest iterations and the largest at the most, so the demo is meaningful on any machine.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from flownas.errors import ToolkitError

Log = Callable[[str], None]
SHIPPED_TABLES = Path(__file__).resolve().parent / "latency_tables" / "tables"


class PipelineError(ToolkitError, ValueError):
    """A pipeline config that cannot run (unknown key, wrong type); one line naming the file and key."""


@dataclass
class PipelineConfig:
    """Every knob of `run_pipeline`; a YAML/JSON file gives any subset (`--config FILE`)."""

    out: str = "outputs/pipeline"
    resolution: list = field(default_factory=lambda: [128, 192])  # table, search and deployment size
    backend: str = "ort-cpu"
    device: str = "cpu"
    threads: int | None = 2
    table: str | None = None
    table_runs: int = 10                    # timing runs per key when the table is built here
    supernet_model: str = "flownas-supernet"  # registry name (tiny-supernet: the test-size space)
    teacher_model: str = "raft-small"
    teacher_steps: int = 150
    supernet_steps: int = 30
    train_image_size: list = field(default_factory=lambda: [128, 128])
    train_iters: int = 4
    fad_weight: float = 1.0
    budget_ms: float | None = None
    iters_choices: list = field(default_factory=lambda: [4, 8])
    population: int = 10
    generations: int = 2
    val_samples: int = 2
    calibrate_bn: int = 2
    finalists: int = 3
    seed: int = 0

    @classmethod
    def load(cls, path: str | None, overrides: dict[str, Any] | None = None) -> "PipelineConfig":
        from flownas.configfile import read_mapping_file

        values: dict[str, Any] = {}
        if path is not None:
            if not Path(path).is_file():
                raise PipelineError(f"{path}: pipeline config not found")
            values = read_mapping_file(path, PipelineError) or {}
            if not isinstance(values, dict):
                raise PipelineError(f"{path}: expected a mapping of pipeline keys")
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        known = {f.name: f for f in fields(cls)}
        for key, value in values.items():
            if key not in known:
                raise PipelineError(f"{path or 'pipeline config'}: unknown key {key!r} (known: {', '.join(known)})")
            default = known[key].default_factory() if callable(known[key].default_factory) else known[key].default
            if default is not None and value is not None and not isinstance(value, type(default)) and not (
                    isinstance(default, float) and isinstance(value, int)):
                raise PipelineError(f"{path or 'pipeline config'}: key {key!r} = {value!r} should be "
                                    f"{type(default).__name__}")
        return cls(**values)


def _quiet(_: str) -> None:
    pass


def _stage_table(cfg: PipelineConfig, out: Path, log: Log) -> tuple[str, str]:
    """(table folder, where it came from)."""
    from flownas.provenance import cpu_isa, cpu_model

    if cfg.table:
        return cfg.table, "given"
    height, width = cfg.resolution
    shipped = SHIPPED_TABLES / f"{cfg.backend}-{height}x{width}"
    if (shipped / "table.json").is_file():
        manifest = json.loads((shipped / "table.json").read_text())
        isa = cpu_isa()
        # One marketing name ("Intel Xeon Processor", "AMD EPYC") covers CPUs of different generations: where the
        # table names its ISA, that must match too (tables from before `cpu_isa` are judged by name).
        if (manifest.get("device") == cpu_model() and manifest.get("threads") == cfg.threads
                and manifest.get("cpu_isa") in (None, isa)):
            log(f"== table: reusing the shipped {shipped.name} (measured on this CPU model)")
            return str(shipped), "shipped"
        log(f"== table: the shipped {shipped.name} was measured on {manifest.get('device')!r} "
            f"({manifest.get('cpu_isa') or 'ISA not recorded'}) with {manifest.get('threads')} threads, this is "
            f"{cpu_model()!r} ({isa}): building one here")
    from bench.protocol import TimingConfig
    from latency_tables.build import build_table

    folder = out / "table"
    if (folder / "table.json").is_file():
        return str(folder), "built earlier"
    from flownas.models import DecoderSpec
    from flownas.registry import model_entry

    config = model_entry(cfg.supernet_model).config_dict()
    from flownas.arch import SearchSpace

    space = SearchSpace.from_dict(config["space"])
    decoder = DecoderSpec.from_dict(config["decoder"]) if "decoder" in config else None
    log(f"== table: measuring every key of the {cfg.supernet_model} space at {height}x{width} on {cfg.backend}")
    timing = TimingConfig(warmup_runs=2, warmup_s=0.05, runs=cfg.table_runs, duration_s=0.05)
    built = build_table(space, height, width, folder, backend=cfg.backend, config=timing, threads=cfg.threads,
                        decoder=decoder)
    return str(built), "built"


def _stage_train(kind: str, out: Path, config_name: str, overrides: list[str], log: Log, *, model: str,
                 teacher: str | None, device: str) -> dict[str, Any]:
    from flownas.train import train
    from flownas.train_config import load_train_config

    if (out / "last.pt").is_file():
        log(f"== {kind}: {out / 'last.pt'} exists, skipped")
        return json.loads((out / "train.json").read_text())["record"]
    log(f"== {kind}: training {model} ({config_name} {' '.join(overrides)})")
    resume = (out / "checkpoints").is_dir()
    record = train(load_train_config(config_name, overrides), out, model=model, teacher=teacher, resume=resume,
                   device=device, tensorboard=False)
    return record.to_dict()


def _budget(cfg: PipelineConfig, table_dir: str) -> float:
    if cfg.budget_ms is not None:
        return float(cfg.budget_ms)
    from latency_tables.predictor import LatencyTable

    table = LatencyTable.load(table_dir)
    low = table.predict(table.space.smallest(), min(cfg.iters_choices))
    high = table.predict(table.space.largest(), max(cfg.iters_choices))
    return round(low + 0.5 * (high - low), 1)


def run_pipeline(cfg: PipelineConfig, log: Log = _quiet) -> dict[str, Any]:
    """All stages (module docstring); returns the pipeline record (also OUT/pipeline.json)."""
    from flownas.fileio import atomic_write_text
    from flownas.provenance import provenance
    from nas import SearchRequest, run_search

    started = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stages: dict[str, Any] = {}
    tick = time.perf_counter()
    table, origin = _stage_table(cfg, out, log)
    stages["table"] = {"path": table, "origin": origin, "wall_s": time.perf_counter() - tick}
    size = f"image_size={cfg.train_image_size[0]}x{cfg.train_image_size[1]}"
    common = [size, f"iters={cfg.train_iters}", f"val_iters={cfg.train_iters}", f"seed={cfg.seed + 1234}"]
    tick = time.perf_counter()
    stages["teacher"] = _stage_train("teacher", out / "teacher", "synthetic-small",
                                     [*common, f"steps={cfg.teacher_steps}", "val_every=0", "fad_weight=0",
                                      "checkpoint_every=50"], log, model=cfg.teacher_model, teacher=None,
                                     device=cfg.device)
    stages["teacher"]["wall_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    stages["supernet"] = _stage_train("supernet", out / "supernet", "synthetic",
                                      [*common, f"steps={cfg.supernet_steps}", f"val_every={cfg.supernet_steps}",
                                       "val_samples=2", "bn_calib_batches=2", "num_random_subnets=1",
                                       f"fad_weight={cfg.fad_weight}", "checkpoint_every=10"], log,
                                      model=cfg.supernet_model, teacher=str(out / "teacher" / "last.pt"),
                                      device=cfg.device)
    stages["supernet"]["wall_s"] = time.perf_counter() - tick
    budget = _budget(cfg, table)
    log(f"== search under {budget:g} ms on {cfg.backend}")
    tick = time.perf_counter()
    search = run_search(SearchRequest(
        supernet=str(out / "supernet" / "last.pt"), table=table, budget_ms=budget, out=str(out / "search"),
        val_samples=cfg.val_samples, calibrate_bn=cfg.calibrate_bn, iters=max(cfg.iters_choices),
        iters_choices=tuple(cfg.iters_choices), population=cfg.population, generations=cfg.generations,
        seed=cfg.seed, finalists=cfg.finalists, backend=cfg.backend, threads=cfg.threads, device=cfg.device,
        resume=True, export=True), log=log)
    stages["search"] = {**search.to_dict(), "budget_ms": budget, "wall_s": time.perf_counter() - tick}
    record = {"config": asdict(cfg), "stages": stages, "wall_s": time.perf_counter() - started,
              "provenance": provenance("pipeline", arch_id=search.best["arch_id"], resolution=list(cfg.resolution),
                                       iters=search.best["iters"], precision="fp32", backend=cfg.backend,
                                       device=cfg.device)}
    atomic_write_text(out / "report.md", report_markdown(record))
    atomic_write_text(out / "pipeline.json", json.dumps(record, indent=1, default=str))
    log(f"pipeline done in {record['wall_s'] / 60:.1f} min: {out / 'report.md'}")
    return record


def report_markdown(record: dict[str, Any]) -> str:
    cfg, stages = record["config"], record["stages"]
    search, teacher, supernet = stages["search"], stages["teacher"], stages["supernet"]
    best = search["best"]
    height, width = cfg["resolution"]
    lines = [f"# FlowNAS pipeline report ({record['provenance']['created'][:19]} UTC)", "",
             f"Backend `{cfg['backend']}` ({cfg['threads']} threads), deployment resolution {height}x{width}; "
             f"whole run {record['wall_s'] / 60:.1f} min. Weights are trained by the toolkit for a few minutes on "
             "synthetic pairs: the EPE figures show the workflow, not a useful model.", "",
             "| stage | result | time |", "|---|---|---|",
             f"| latency table | `{stages['table']['path']}` ({stages['table']['origin']}) | "
             f"{stages['table']['wall_s']:.0f} s |",
             f"| teacher | {teacher['model']}, {teacher['final_step']} steps, {teacher['pairs_per_s']:.2f} pairs/s | "
             f"{teacher.get('wall_s', 0):.0f} s |",
             f"| supernet | {supernet['final_step']} steps with FAD, {supernet['pairs_per_s']:.2f} pairs/s | "
             f"{supernet.get('wall_s', 0):.0f} s |",
             f"| search | {search['evaluations']} architectures evaluated, budget {search['budget_ms']:g} ms | "
             f"{search['wall_s']:.0f} s |", "",
             f"**Chosen**: `{best['arch_id']}` ({best['iters']} iterations): EPE {best['epe']:.3f} px, predicted "
             f"{best['predicted_ms']:.1f} ms, measured {best['measured_ms']:.1f} ms "
             f"({best['error_pct']:+.1f}%).", "",
             "## Finalists measured on the device", "",
             "| arch | iters | EPE | predicted ms | measured ms | error | within budget |", "|---|---|---|---|---|---|---|"]
    for row in search["finalists"]:
        lines.append(f"| `{row['arch_id']}` | {row['iters']} | {row['epe']:.3f} | {row['predicted_ms']:.1f} | "
                     f"{row['measured_ms']:.1f} | {row['error_pct']:+.1f}%{' ⚑' if row['flagged'] else ''} | "
                     f"{'yes' if row['within_budget'] else 'no'} |")
    lines += ["", f"## The chosen network beside the reference subnets ({best['iters']} iterations, one run)", "",
              "| network | EPE | predicted ms | measured ms |", "|---|---|---|---|"]
    for row in search["references"]:
        lines.append(f"| {row['name']} | {row['epe']:.3f} | {row['predicted_ms']:.1f} | {row['measured_ms']:.1f} |")
    lines += ["", "![Pareto front](search/pareto.png)", "",
              "Files: `search/best.json`, `search/best.pt`, `search/best_subnet.onnx` (verified), "
              "`search/bench/report.md`, `search/finalists.csv`, `search/references.csv`, `search/pareto.csv`, "
              "`search/history.csv`, `pipeline.json`.", ""]
    return "\n".join(lines)
