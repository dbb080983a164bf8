"""Training benchmark: what Feature Alignment Distillation buys, and training throughput, on this machine.

    .venv/bin/python -m bench.training [--out outputs/bench/training] [--record] [--minutes-per-run 20]

1. a RAFT teacher is trained by the toolkit on synthetic pairs (`train --model raft --config synthetic-small`);
2. the FlowNAS supernet is trained twice for the same number of steps from the same initialisation, with FAD
   from that teacher and without (fad_weight=0), everything else equal;
3. the held-out synthetic EPE (val split: other seeds than training) of the largest, the smallest and 3 random
   subnets is measured before and after, each subnet with BatchNorm re-estimated
   (`flownas.evaluate.evaluate_subnet`, what `evaluate --supernet` computes);
4. throughput in pairs/s of a few supernet steps in one process and in two Gloo processes (torchrun).

Each stage is skipped when its result exists (`last.pt`), and an interrupted stage resumes from its checkpoint,
so re-running the command continues. `--record` writes the report to `bench/results/training.md` (+ .json).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from flownas.fileio import atomic_write_text
from flownas.provenance import cpu_model, provenance

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "bench" / "results" / "training"
SUBNETS = 3  # random subnets evaluated beside the largest and the smallest
SIZE = "128x128"
COMMON = [f"image_size={SIZE}", "iters=4", "val_iters=4", "num_random_subnets=1", "val_every=0",
          "checkpoint_every=25", "synthetic_length=4000"]


def _cli(*args: str, env: dict[str, str] | None = None, torchrun: int = 0) -> float:
    """Run one toolkit command (as a user would), return its wall time in seconds."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(torchrun)] if torchrun \
        else [sys.executable]
    start = time.perf_counter()
    subprocess.run([*launcher, str(REPO / "cli.py"), *args], check=True, env={**os.environ, **(env or {})})
    return time.perf_counter() - start


def _train_stage(out: Path, command: str, model: str, config: str, overrides: list[str],
                 teacher: Path | None = None) -> dict[str, Any]:
    if (out / "last.pt").is_file():
        return json.loads((out / "train.json").read_text())["record"]
    args = [command, "--model", model, "--config", config, "--out", str(out), "--no-progress", *overrides]
    if teacher is not None:
        args += ["--teacher", str(teacher)]
    if (out / "checkpoints").is_dir():
        args.append("--resume")
    _cli(*args)
    return json.loads((out / "train.json").read_text())["record"]


def _subnets(seed: int = 0) -> list[tuple[str, Any]]:
    from flownas.arch import SearchSpace

    space = SearchSpace.flownas()
    rng = np.random.default_rng(seed)
    return ([("largest", space.largest()), ("smallest", space.smallest())]
            + [(f"random-{i}", space.sample(rng)) for i in range(SUBNETS)])


def _scores(weights: Path | None, val_pairs: int) -> dict[str, float]:
    """Held-out EPE per subnet (BN re-estimated), for a trained supernet or the seeded initialisation."""
    from flownas.data.synthetic import SyntheticFlow
    from flownas.evaluate import evaluate_subnet
    from flownas.registry import create_model
    from flownas.weights import load_model

    model = load_model(weights) if weights else create_model("flownas-supernet", seed=1234)
    height, width = (int(v) for v in SIZE.split("x"))
    val = SyntheticFlow(length=val_pairs, size=(height, width), seed=1)
    return {name: evaluate_subnet(model, arch, val, iters=4, calibrate_bn=8)[0]["epe"] for name, arch in _subnets()}


def _throughput(out: Path, steps: int) -> dict[str, float]:
    """pairs/s of the supernet's training step (FAD off) in 1 and 2 processes; from each run's own record."""
    result = {}
    for procs in (1, 2):
        run = out / f"throughput-{procs}"
        if not (run / "train.json").is_file():
            args = ["train-supernet", "--config", "synthetic", "--out", str(run), "--no-progress", *COMMON,
                    f"steps={steps}", "fad_weight=0", "checkpoint_every=1000"]
            _cli(*args, torchrun=procs if procs > 1 else 0, env={"OMP_NUM_THREADS": str(max(1, 2 // procs))})
        result[f"{procs}_process"] = json.loads((run / "train.json").read_text())["record"]["pairs_per_s"]
    return result


def run(out: Path, minutes_per_run: float, val_pairs: int = 16) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    teacher = _train_stage(out / "teacher", "train", "raft", "synthetic-small",
                           [f"image_size={SIZE}", "iters=4", "val_iters=4", "steps=800", "val_every=800",
                            "synthetic_length=4000", "checkpoint_every=100"])
    probe = _throughput(out, steps=8)
    steps = int(minutes_per_run * 60 * probe["1_process"] / 2)  # batch 2: pairs/s / 2 = steps/s
    runs = {}
    for name, fad in (("fad", "1.0"), ("no_fad", "0")):
        teacher_path = out / "teacher" / "last.pt" if fad != "0" else None
        runs[name] = _train_stage(out / name, "train-supernet", "flownas-supernet", "synthetic",
                                  [*COMMON, f"steps={steps}", f"fad_weight={fad}"], teacher_path)
    scores = {"before": _scores(None, val_pairs), "fad": _scores(out / "fad" / "last.pt", val_pairs),
              "no_fad": _scores(out / "no_fad" / "last.pt", val_pairs)}
    report = {"steps": steps, "teacher": teacher, "runs": runs, "epe": scores, "throughput_pairs_per_s": probe,
              "subnets": {name: arch.id for name, arch in _subnets()}, "val_pairs": val_pairs, "resolution": SIZE,
              "wall_s": time.perf_counter() - started,
              "provenance": provenance("benchmark-training", resolution=[128, 128], iters=4, precision="fp32",
                                       backend="torch-cpu", device=cpu_model())}
    return report


def markdown(report: dict[str, Any]) -> str:
    epe = report["epe"]
    lines = [f"# Supernet training with and without FAD ({report['provenance']['device']}, "
             f"{report['provenance']['created'][:10]})", "",
             f"Synthetic pairs at {report['resolution']}, 4 iterations, batch 2, sandwich rule with 1 random subnet; "
             f"{report['steps']} steps per supernet run, same initialisation and data order in both runs. "
             f"Teacher: RAFT trained by the toolkit for {report['teacher']['final_step']} steps on the same data. "
             f"Held-out EPE on {report['val_pairs']} synthetic validation pairs, each subnet with BatchNorm "
             "re-estimated on 8 pairs (`evaluate_subnet`).", "",
             "| subnet | arch id | before | after, no FAD | after, FAD | FAD gain |", "|---|---|---|---|---|---|"]
    for name, arch_id in report["subnets"].items():
        gain = epe["no_fad"][name] - epe["fad"][name]
        lines.append(f"| {name} | `{arch_id}` | {epe['before'][name]:.3f} | {epe['no_fad'][name]:.3f} | "
                     f"{epe['fad'][name]:.3f} | {gain:+.3f} |")
    tp = report["throughput_pairs_per_s"]
    lines += ["", f"Throughput (supernet step, FAD off): {tp['1_process']:.2f} pairs/s in one process, "
              f"{tp['2_process']:.2f} pairs/s in two Gloo processes (torchrun, 1 thread each) on 2 cores.",
              f"Wall time of the supernet runs: FAD {report['runs']['fad']['wall_s'] / 60:.1f} min, "
              f"no FAD {report['runs']['no_fad']['wall_s'] / 60:.1f} min; whole benchmark "
              f"{report['wall_s'] / 60:.1f} min.", "",
              "Reproduce: `.venv/bin/python -m bench.training --record` (resumes when re-run).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="outputs/bench/training", help="work folder (runs, checkpoints)")
    parser.add_argument("--minutes-per-run", type=float, default=20.0, help="target wall time of each supernet run")
    parser.add_argument("--record", action="store_true", help="write bench/results/training.md and .json")
    args = parser.parse_args(argv)
    report = run(Path(args.out), args.minutes_per_run)
    text = markdown(report)
    target = RECORD if args.record else Path(args.out) / "training"
    atomic_write_text(target.with_suffix(".md"), text)
    atomic_write_text(target.with_suffix(".json"), json.dumps(report, indent=1, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
