"""Search benchmark: budgets met on the device, search vs random, the iteration gene, and search overhead.

    .venv/bin/python -m bench.search --supernet outputs/bench/training/fad/last.pt \
        --table latency_tables/tables/ort-cpu-128x192 [--record]

1. For 5 budgets spread between the fastest and the slowest predicted network, the search (iteration gene on)
   runs with hardware in the loop (`nas.run_search`): the returned network's *measured* latency is checked
   against the budget, and its EPE compared with the best of 50 random architectures under the same budget
   (same fitness: EPE on held-out synthetic pairs after BN re-estimation).
2. At the middle budget the search runs again with the iteration count fixed (encoder-only): the table compares
   the latency each reaches at equal EPE (the Pareto fronts' lowest latency at or below the encoder-only EPE).
3. 1000 fitness evaluations with LUT latency and a zero-cost error: the search's own overhead.

Fitness results are cached across all runs (same subnet, same pairs, same number), which keeps this to minutes.
`--record` writes bench/results/search.md and search.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "bench" / "results" / "search"


class CachedFitness:
    """The pipeline's fitness (`nas.SubnetError`) with a cache by architecture id shared by every run."""

    def __init__(self, fitness: Any) -> None:
        self.fitness, self.cache = fitness, {}
        self.supernet, self.pairs, self.iters = fitness.supernet, fitness.pairs, fitness.iters
        self.max_samples = fitness.max_samples

    def split(self, arch: Any) -> Any:
        return self.fitness.split(arch)

    def __call__(self, archs: Any) -> list[float]:
        todo = [a for a in archs if a.id not in self.cache]
        for arch, error in zip(todo, self.fitness(todo) if todo else []):
            self.cache[arch.id] = error
        return [self.cache[a.id] for a in archs]


def _overhead(table: Any, space: Any) -> dict[str, float]:
    """Seconds for a search that makes 1000 fitness evaluations with LUT latency and a free error function."""
    from flownas.search import SearchConfig, evolve
    from latency_tables.search_latency import TableLatency

    latency = TableLatency(table, default_iters=12)
    config = SearchConfig(population=50, generations=19, seed=0, budget_ms=None, max_tries=200)
    start = time.perf_counter()
    result = evolve(space, latency, lambda archs: [float(sum(a.width)) for a in archs], config, progress=False)
    elapsed = time.perf_counter() - start
    return {"evaluations": result.evaluations, "seconds": elapsed, "per_1000_s": 1000 * elapsed / result.evaluations,
            "latency_calls": latency.calls, "latency_predictions": latency.predicted}


def run(supernet_path: str, table_dir: str, out: Path, val_samples: int, population: int, generations: int,
        budgets_n: int = 5) -> dict[str, Any]:
    import numpy as np

    from flownas.data.synthetic import SyntheticFlow
    from flownas.genes import Gene
    from flownas.search import SearchConfig, evolve, random_search
    from flownas.weights import load_model
    from latency_tables.predictor import LatencyTable
    from latency_tables.search_latency import TableLatency
    from nas import SubnetError, _choose, measure_finalists

    table = LatencyTable.load(table_dir)
    supernet = load_model(supernet_path)
    choices = (4, 8, 12)
    space = supernet.space.with_genes(Gene("iters", "i", "global", choices))
    latency = TableLatency(table, default_iters=8)
    val = SyntheticFlow(length=val_samples, size=(table.height, table.width), seed=1)
    fitness = CachedFitness(SubnetError(supernet, val, iters=8, max_samples=val_samples, calibrate_bn=4))
    low = table.predict(table.space.smallest(), min(choices))
    high = table.predict(table.space.largest(), max(choices))
    budgets = [round(low + f * (high - low), 1) for f in np.linspace(0.15, 0.85, budgets_n)]
    rows = []
    for budget in budgets:
        config = SearchConfig(population=population, generations=generations, mutations=population // 2,
                              crossovers=population - population // 2, parents=min(10, population), seed=0,
                              budget_ms=budget, max_tries=200)
        found = evolve(space, latency, fitness, config, progress=False)
        finalists = sorted((r for r in found.history if r["feasible"] and r["error"] is not None),
                           key=lambda r: (r["error"], r["latency_ms"]))[:3]
        measured = measure_finalists(fitness, space, [(r["arch_id"], r["latency_ms"], r["error"]) for r in finalists],
                                     table, table.manifest["backend"], table.manifest.get("threads"),
                                     out / "finalists" / f"{budget:g}")
        kept = _choose(measured, budget)
        rand = random_search(space, latency, fitness, 50, budget_ms=budget, seed=1)
        best = kept[0] if kept else None
        rows.append({"budget_ms": budget, "evaluations": found.evaluations,
                     "chosen": best["arch_id"] if best else None, "epe": best["epe"] if best else None,
                     "predicted_ms": best["predicted_ms"] if best else None,
                     "measured_ms": best["measured_ms"] if best else None,
                     "within_budget": bool(best), "finalists_over_budget": sum(not r["within_budget"] for r in measured),
                     "random50_epe": rand.best_error, "random50_ms": rand.best_latency_ms})
    middle = budgets[len(budgets) // 2]
    fixed_space = supernet.space
    fixed_latency = TableLatency(table, default_iters=12)
    fixed_fitness = CachedFitness(SubnetError(supernet, val, iters=12, max_samples=val_samples, calibrate_bn=4))
    config = SearchConfig(population=population, generations=generations, mutations=population // 2,
                          crossovers=population - population // 2, parents=min(10, population), seed=0,
                          budget_ms=middle, max_tries=200, mode="pareto")
    encoder_only = evolve(fixed_space, fixed_latency, fixed_fitness, config, progress=False)
    with_iters = evolve(space, latency, fitness, config, progress=False)
    target = encoder_only.best_error
    reach = [c.latency_ms for c in with_iters.front if c.error <= target]
    gene = {"budget_ms": middle, "encoder_only": {"epe": target, "latency_ms": encoder_only.best_latency_ms},
            "with_iters_at_equal_epe_ms": min(reach) if reach else None,
            "with_iters_best": {"epe": with_iters.best_error, "latency_ms": with_iters.best_latency_ms}}
    return {"table": table_dir, "supernet": supernet_path, "val_samples": val_samples, "population": population,
            "generations": generations, "budgets": rows, "iteration_gene": gene,
            "overhead": _overhead(table, space), "fitness_evaluations": len(fitness.cache) + len(fixed_fitness.cache)}


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Search benchmark ({report['provenance']['device']}, {report['provenance']['created'][:10]})", "",
             f"Supernet `{report['supernet']}`, table `{report['table']}`; fitness: EPE on {report['val_samples']} "
             f"held-out synthetic pairs after BN re-estimation; search: population {report['population']}, "
             f"{report['generations']} generations, iteration gene {{4, 8, 12}}; 3 finalists measured end to end.", "",
             "| budget ms | chosen | iters | EPE | predicted ms | measured ms | within budget | finalists over budget "
             "| best of 50 random: EPE | ms |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["budgets"]:
        if r["chosen"] is None:
            lines.append(f"| {r['budget_ms']:g} | none met the budget | | | | | no | {r['finalists_over_budget']} | "
                         f"{r['random50_epe']:.3f} | {r['random50_ms']:.1f} |")
            continue
        iters = r["chosen"].rsplit("-i", 1)[-1]
        lines.append(f"| {r['budget_ms']:g} | `{r['chosen']}` | {iters} | {r['epe']:.3f} | {r['predicted_ms']:.1f} | "
                     f"{r['measured_ms']:.1f} | {'yes' if r['within_budget'] else 'no'} | "
                     f"{r['finalists_over_budget']} | {r['random50_epe']:.3f} | {r['random50_ms']:.1f} |")
    g, o = report["iteration_gene"], report["overhead"]
    reach = g["with_iters_at_equal_epe_ms"]
    lines += ["", f"Iteration gene at {g['budget_ms']:g} ms (Pareto mode): encoder-only search (12 iterations) best "
              f"EPE {g['encoder_only']['epe']:.3f} at {g['encoder_only']['latency_ms']:.1f} ms; with the iteration "
              "gene the front reaches that EPE at "
              + (f"{reach:.1f} ms" if reach is not None else "no point (its front never gets that low)") + ".", "",
              f"Search overhead: {o['evaluations']} fitness evaluations with LUT latency (free error function) in "
              f"{o['seconds']:.2f} s, i.e. {o['per_1000_s']:.2f} s per 1000 ({o['latency_calls']} predictor calls).",
              "", "Reproduce: `.venv/bin/python -m bench.search --supernet SUPERNET --table TABLE --record`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from flownas.fileio import atomic_write_text
    from flownas.provenance import cpu_model, provenance

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--supernet", required=True, help="trained supernet (train-supernet's last.pt)")
    parser.add_argument("--table", required=True, help="latency table folder measured on this machine")
    parser.add_argument("--out", default="outputs/bench/search", help="work folder (finalist exports)")
    parser.add_argument("--val-samples", type=int, default=4)
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--record", action="store_true", help="write bench/results/search.md and .json")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report = run(args.supernet, args.table, Path(args.out), args.val_samples, args.population, args.generations)
    report["wall_s"] = time.perf_counter() - started
    report["provenance"] = provenance("benchmark-search", precision="fp32", backend="ort-cpu", device=cpu_model())
    target = RECORD if args.record else Path(args.out) / "search"
    atomic_write_text(target.with_suffix(".md"), markdown(report))
    atomic_write_text(target.with_suffix(".json"), json.dumps(report, indent=1, default=str))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
