"""`train-supernet` and `train` command lines: parse, then call `flownas.train.train` (torch is imported there).

    python cli.py train-supernet --config synthetic --out runs/supernet --teacher runs/teacher/last.pt steps=400
    python cli.py train --model raft --config synthetic-small --out runs/teacher
    torchrun --nproc_per_node 2 cli.py train-supernet --config synthetic --out runs/ddp fad_weight=0

Building these parsers imports no torch (`cli.py --help` stays fast).
"""
from __future__ import annotations

import argparse
from typing import Any

SUPERNET_HELP = "train the FlowNAS supernet: sandwich rule + Feature Alignment Distillation from a teacher"
TRAIN_HELP = "train a plain model (e.g. a RAFT teacher) with the same trainer, no supernet"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="NAME|FILE",
                   help="preset (chairs, things, sintel, kitti, synthetic, synthetic-small) or a YAML/JSON file")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder: config.yaml, checkpoints/, metrics.csv, "
                                                               "tensorboard/, last.pt")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUT/checkpoints")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (under torchrun: each rank's own GPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. steps=200 lr=2e-4")


def add_train_parsers(sub: Any) -> None:
    p = sub.add_parser("train-supernet", help=SUPERNET_HELP, description=SUPERNET_HELP)
    _common(p)
    p.add_argument("--teacher", metavar="WEIGHTS", help="FAD teacher: any RAFT checkpoint layout or a toolkit "
                                                         "checkpoint (required when fad_weight > 0)")
    p.add_argument("--model", default=None, help="supernet to train (registry name; default: the config's model)")
    p = sub.add_parser("train", help=TRAIN_HELP, description=TRAIN_HELP)
    _common(p)
    p.add_argument("--model", required=True, help="registry name of the model: raft, raft-small, raft-k ...")
    p.add_argument("--teacher", metavar="WEIGHTS", help="optional FAD teacher for the model's encoders")


def run_train(args: argparse.Namespace) -> int:
    """Both commands: a supernet for `train-supernet` (refused otherwise), any model for `train`."""
    from .train import train, TrainError
    from .train_config import load_train_config

    overrides = list(args.overrides)
    if args.command == "train" and not any(o.startswith("fad_weight=") for o in overrides) and not args.teacher:
        overrides.append("fad_weight=0")  # a plain model trains without FAD unless a teacher is given
    config = load_train_config(args.config, overrides)
    model = args.model or config.model
    if args.command == "train-supernet":
        from .registry import model_entry

        if "supernet" not in model_entry(model).tags:
            raise TrainError(f"--model {model}: train-supernet trains a supernet (e.g. flownas-supernet); "
                             f"use `train --model {model}` for a plain model")
    record = train(config, args.out, model=model, teacher=args.teacher, resume=args.resume, device=args.device,
                   progress=not args.no_progress)
    if record.interrupted:
        print(f"stopped at step {record.final_step}/{record.steps}; checkpoint {record.last_checkpoint}; "
              f"continue with --resume")
        return 130
    if record.weights is None:  # a rank other than 0
        return 0
    scores = ", ".join(f"{r['subnet']} EPE {r['epe']:.3f}" for r in record.validation)
    print(f"trained {record.model} for {record.final_step} steps ({record.pairs_per_s:.2f} pairs/s on "
          f"{record.world_size} process(es)){'; ' + scores if scores else ''} -> {record.weights}")
    return 0
