"""Benchmark: exported ONNX (naive vs optimised formulation) on ONNX Runtime CPU against PyTorch eager.

    python -m bench.export_speed --models raft,raft-k --resolution 384x512 --iters 12

Writes `bench/results/export_speed.{json,md}`: medians and spread of each backend timed in alternation
in one run, the speed ratios, the flow difference, and ONNX Runtime's per-operator time breakdown before
(GridSample lookup, the reference formulation) and after (gather lookup). Weights are random (seeded):
speed does not depend on their values.
"""
from __future__ import annotations

import argparse
import collections
import json
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from export.onnx_export import ExportSpec, export_onnx
from flownas.fileio import atomic_write_text, parse_resolution
from flownas.weights import untrained_model

from .timing import time_interleaved

RESULTS = Path(__file__).resolve().parent / "results"


def session(path: Path, threads: int, profile: bool = False) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = profile
    options.profile_file_prefix = str(path.with_suffix(""))  # profiles land beside the temporary model
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def op_breakdown(path: Path, feeds: dict[str, np.ndarray], threads: int, runs: int = 2) -> dict[str, float]:
    """Milliseconds per inference by operator type, from ONNX Runtime's profiler.

    The first run (weight pre-packing, allocations) is excluded: only kernels inside the later runs count.
    """
    sess = session(path, threads, profile=True)
    for _ in range(runs + 1):
        sess.run(None, feeds)
    profile = Path(sess.end_profiling())
    events = json.loads(profile.read_text())
    profile.unlink()
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[1:]
    totals: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            if any(start <= event["ts"] <= end for start, end in windows):
                totals[event["args"]["op_name"]] += event["dur"] / 1e3
    return {op: ms / len(windows) for op, ms in totals.most_common()}


def bench_model(name: str, height: int, width: int, iters: int, runs: int, workdir: Path) -> dict[str, Any]:
    model = untrained_model(name)
    threads = torch.get_num_threads()
    gen = torch.Generator().manual_seed(0)
    image1 = torch.rand(1, 3, height, width, generator=gen) * 255
    image2 = torch.roll(image1, shifts=(2, -3), dims=(2, 3))
    feeds = {"image1": image1.numpy(), "image2": image2.numpy()}
    paths, records = {}, {}
    for variant, lookup in (("naive", "grid_sample"), ("optimised", "gather")):
        paths[variant] = workdir / f"{name}-{variant}.onnx"
        records[variant] = export_onnx(model, paths[variant], ExportSpec(height, width, iters, lookup=lookup))
    sessions = {variant: session(path, threads) for variant, path in paths.items()}

    def eager():
        with torch.inference_mode():
            return model(image1, image2, iters=iters)

    fns = {"pytorch_eager": eager, **{f"ort_{v}": (lambda s=s: s.run(None, feeds)) for v, s in sessions.items()}}
    stats = time_interleaved(fns, runs=runs, warmup_runs=1)
    reference = eager().numpy()
    flows = {v: s.run(None, feeds)[0] for v, s in sessions.items()}
    eager_ms = stats["pytorch_eager"].median_ms
    return {
        "model": name, "arch_id": records["optimised"]["arch_id"], "resolution": [height, width], "iters": iters,
        "threads": threads, "stats": {k: v.to_dict() for k, v in stats.items()},
        "speedup_vs_eager": {f"ort_{v}": eager_ms / stats[f"ort_{v}"].median_ms for v in sessions},
        "flow_vs_eager": {v: _diff(flows[v], reference) for v in flows},
        "export_seconds": {v: r["export_seconds"] for v, r in records.items()},
        "file_size_bytes": {v: r["file_size_bytes"] for v, r in records.items()},
        "op_breakdown_ms": {v: op_breakdown(p, feeds, threads) for v, p in paths.items()},
    }


def _diff(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    d = a.astype(np.float64) - b
    return {"max_abs_diff": float(np.abs(d).max()), "epe": float(np.sqrt((d**2).sum(1)).mean())}


def markdown(results: list[dict[str, Any]], env: dict[str, Any]) -> str:
    lines = ["# Exported ONNX on ONNX Runtime CPU vs PyTorch eager", "",
             f"{env['cpu']}, {env['threads']} threads, torch {env['torch']}, onnxruntime {env['onnxruntime']}, "
             f"{env['date']}. Medians of runs timed in alternation in one process; spread = CV.", "",
             "| model | iters | eager ms (CV) | ORT naive ms (CV) | ORT optimised ms (CV) | naive speed-up | optimised speed-up | max abs diff px | EPE px |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s = r["stats"]
        cell = lambda k: f"{s[k]['median_ms']:.0f} ({100 * s[k]['cv']:.1f}%)"  # noqa: E731
        lines.append(f"| {r['model']} | {r['iters']} | {cell('pytorch_eager')} | {cell('ort_naive')} | "
                     f"{cell('ort_optimised')} | {r['speedup_vs_eager']['ort_naive']:.2f}x | "
                     f"{r['speedup_vs_eager']['ort_optimised']:.2f}x | "
                     f"{r['flow_vs_eager']['optimised']['max_abs_diff']:.1e} | {r['flow_vs_eager']['optimised']['epe']:.1e} |")
    for r in results:
        lines += ["", f"## {r['model']}: ONNX Runtime time per operator (ms per inference)", "",
                  "| operator | naive | optimised |", "|---|---|---|"]
        naive, opt = r["op_breakdown_ms"]["naive"], r["op_breakdown_ms"]["optimised"]
        for op in sorted(set(naive) | set(opt), key=lambda o: -max(naive.get(o, 0), opt.get(o, 0)))[:14]:
            lines.append(f"| {op} | {naive.get(op, 0):.1f} | {opt.get(op, 0):.1f} |")
        lines.append(f"| **total** | {sum(naive.values()):.1f} | {sum(opt.values()):.1f} |")
    return "\n".join(lines) + "\n"


def environment() -> dict[str, Any]:
    import datetime as dt

    return {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "torch": str(torch.__version__), "onnxruntime": ort.__version__, "python": platform.python_version(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="raft,raft-k")
    parser.add_argument("--resolution", default="384x512")
    parser.add_argument("--iters", type=int, default=12)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "export_speed"))
    args = parser.parse_args(argv)
    height, width = parse_resolution(args.resolution)
    with tempfile.TemporaryDirectory() as tmp:
        results = [bench_model(m, height, width, args.iters, args.runs, Path(tmp)) for m in args.models.split(",")]
    env = environment()
    out = Path(args.out)
    atomic_write_text(out.with_suffix(".json"), json.dumps({"environment": env, "results": results}, indent=2))
    atomic_write_text(out.with_suffix(".md"), markdown(results, env))
    print(markdown(results, env))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
