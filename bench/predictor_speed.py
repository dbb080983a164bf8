"""Benchmark: architectures per second of the vectorised latency predictor (latency_tables.vectorized).

    python -m bench.predictor_speed                          # synthetic FlowNAS table at 384x512 -> outputs/bench
    python -m bench.predictor_speed --table DIR --n 1000000  # a measured table

Throughput does not depend on the latency values, so without `--table` every key of the FlowNAS space gets a
random latency (seeded). Timed: `predict_many` on N encoded architectures (gene indices, as the search holds
them), best and median of R repeats; for context, encoding ArchConfigs and the scalar `LatencyTable.predict`.
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from flownas.arch import SearchSpace
from flownas.fileio import atomic_write_text
from flownas.provenance import command_line, cpu_model
from latency_tables.keys import all_keys
from latency_tables.predictor import LatencyTable
from latency_tables.vectorized import VectorPredictor, decode, sample_encoded

OUT = Path("outputs") / "bench" / "predictor_speed.md"
SIZE = (384, 512)


def synthetic_table(space: SearchSpace, seed: int = 0) -> LatencyTable:
    """Every key of `space` at 384x512 (RAFT large decoder) with a random latency in [0.01, 3) ms."""
    from types import SimpleNamespace

    f, h, c = 256, 128, 128  # RAFT large's feature/hidden/context widths (FACTS), without importing torch
    decoder = SimpleNamespace(feature_dim=f, hidden_dim=h, context_dim=c)
    rng = np.random.default_rng(seed)
    keys = all_keys(space, *SIZE, decoder=decoder)
    manifest = {"resolution": list(SIZE), "batch": 1, "space": space.to_dict(),
                "decoder": {"feature_dim": f, "hidden_dim": h, "context_dim": c}}
    return LatencyTable.from_latencies(manifest, {k: float(rng.uniform(0.01, 3.0)) for k in keys})


def _timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def run(table: LatencyTable, n: int, repeats: int, iters: int, seed: int) -> dict[str, float]:
    """Throughputs (architectures/s) and the construction time (s)."""
    start = time.perf_counter()
    fast = VectorPredictor(table)
    build_s = time.perf_counter() - start
    enc = sample_encoded(table.space, n, np.random.default_rng(seed))
    times = _timed(lambda: fast.predict_many(enc, iters), repeats)
    archs = decode(enc[:2000], table.space)
    encode_s = min(_timed(lambda: fast.encode(archs), 3))
    scalar_s = min(_timed(lambda: [table.predict(a, iters) for a in archs[:500]], 2))
    return {"build_s": build_s, "best_per_s": n / min(times), "median_per_s": n / float(np.median(times)),
            "encode_per_s": len(archs) / encode_s, "scalar_per_s": 500 / scalar_s}


def report(result: dict[str, float], n: int, repeats: int, iters: int, source: str) -> str:
    return "\n".join([
        "# Vectorised latency predictor throughput", "",
        f"- command: `{command_line()}`", f"- CPU: {cpu_model()} ({platform.machine()}), numpy {np.__version__}",
        f"- table: {source}; iters {iters}; {n:,} encoded architectures x {repeats} repeats", "",
        "| measure | value |", "|---|---|",
        f"| VectorPredictor construction | {result['build_s'] * 1e3:.1f} ms |",
        f"| predict_many, encoded, best | {result['best_per_s']:,.0f} archs/s |",
        f"| predict_many, encoded, median | {result['median_per_s']:,.0f} archs/s |",
        f"| encode(ArchConfig list) | {result['encode_per_s']:,.0f} archs/s |",
        f"| scalar LatencyTable.predict | {result['scalar_per_s']:,.0f} archs/s |", ""])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", help="a measured table folder (default: synthetic FlowNAS table, 384x512)")
    parser.add_argument("--n", type=int, default=1_000_000, help="architectures per predict_many call")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (best and median reported)")
    parser.add_argument("--iters", type=int, default=12, help="update iterations predicted")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled architectures")
    parser.add_argument("--out", default=str(OUT), help="markdown report path")
    args = parser.parse_args(argv)
    table = LatencyTable.load(args.table) if args.table else synthetic_table(SearchSpace.flownas(), args.seed)
    source = args.table or "synthetic (random latency per key of the FlowNAS space)"
    text = report(run(table, args.n, args.repeats, args.iters, args.seed), args.n, args.repeats, args.iters, source)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
