"""Supernet training: one step of every piece, exact resume, DDP over Gloo, teachers from every layout, bad configs."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flownas.data.stream import PositionedDataset, StepBatches
from flownas.data.synthetic import SyntheticFlow
from flownas.registry import create_model
from flownas.train import TrainError, Trainer, sandwich, train
from flownas.train_config import load_train_config
from flownas.train_state import ResumeError, list_checkpoints
from flownas.weights import load_model, save_checkpoint

from conftest import REPO, random_published_state

TINY = ["model=tiny-supernet", "image_size=128x128", "batch_size=2", "iters=2", "val_iters=2", "val_samples=1",
        "bn_calib_batches=1", "synthetic_length=16", "log_every=1"]


def _config(*overrides: str):
    return load_train_config("synthetic-small", [*TINY, *overrides])


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_checkpoint(path, create_model("tiny-flownas", seed=5))
    return path


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_positions_are_a_seeded_permutation_per_epoch_shared_out_by_rank():
    data = PositionedDataset(list(range(5)), seed=3)
    first, second = [data.index(p) for p in range(5)], [data.index(p) for p in range(5, 10)]
    assert sorted(first) == sorted(second) == list(range(5))  # every sample once per epoch
    assert [data.index(p) for p in range(5)] == first  # the same positions give the same samples
    ranks = [StepBatches(0, 3, 4, rank=r, world=2) for r in (0, 1)]
    assert [b0 + b1 for b0, b1 in zip(*ranks)] == [list(range(s * 4, s * 4 + 4)) for s in range(3)]


def test_sandwich_draws_largest_smallest_and_the_same_random_subnets_for_a_step():
    model = create_model("tiny-supernet")
    subnets = sandwich(model, step=7, seed=1, num_random=3)
    assert [k for k, _ in subnets] == ["largest", "smallest", "random", "random", "random"]
    assert subnets[0][1] == model.space.largest() and subnets[1][1] == model.space.smallest()
    assert [a.id for _, a in subnets] == [a.id for _, a in sandwich(model, 7, 1, 3)]
    assert [a.id for _, a in subnets[2:]] != [a.id for _, a in sandwich(model, 8, 1, 3)[2:]]
    assert sandwich(create_model("tiny-flownas"), 7, 1, 3) == [("model", None)]


def test_one_step_of_every_piece_moves_the_weights_and_reports_each_loss(tmp_path, teacher):
    trainer = Trainer(_config("num_random_subnets=1", "inplace_distill=0.5", "add_noise=true", "fad_weight=0.3"),
                      tmp_path, teacher=str(teacher))
    before, align_before = _weights(trainer.student), _weights(trainer.alignment)
    batch = next(iter(torch.utils.data.DataLoader(trainer.training_set, batch_size=2)))
    scalars = trainer._train_step(0, list(batch))
    assert {"loss/largest", "loss/smallest", "loss/random", "fad", "inplace", "grad_norm", "lr"} <= set(scalars)
    assert all(torch.isfinite(torch.tensor(v)) for v in scalars.values())
    after = _weights(trainer.student)
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
    assert any(not torch.equal(align_before[k], v) for k, v in _weights(trainer.alignment).items())
    for name, value in _weights(trainer.teacher).items():  # the teacher is frozen
        assert torch.equal(value, load_model(teacher).state_dict()[name])


def test_resume_gives_bitwise_the_weights_of_an_uninterrupted_run(tmp_path, teacher):
    config = _config("steps=4", "checkpoint_every=1", "val_every=0", "add_noise=true", "inplace_distill=0.5",
                     "num_random_subnets=1")
    straight = train(config, tmp_path / "straight", teacher=str(teacher), progress=False, tensorboard=False)
    first = train(config, tmp_path / "resumed", teacher=str(teacher), progress=False, tensorboard=False, stop_after=2)
    assert first.interrupted and first.final_step == 2 and first.weights is None
    second = train(config, tmp_path / "resumed", teacher=str(teacher), resume=True, progress=False, tensorboard=False)
    assert (second.start_step, second.final_step, second.interrupted) == (2, 4, False)
    a = torch.load(straight.weights, weights_only=True)["state_dict"]
    b = torch.load(second.weights, weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len(list_checkpoints(tmp_path / "straight")) == config.keep_last  # older checkpoints pruned


def test_resume_refuses_another_config_naming_the_key(tmp_path):
    train(_config("steps=2", "checkpoint_every=1", "val_every=0", "fad_weight=0"), tmp_path, progress=False,
          tensorboard=False, stop_after=1)
    with pytest.raises(ResumeError, match=r"lr=0.0004.*lr=0.001"):
        train(_config("steps=2", "lr=1e-3", "val_every=0", "fad_weight=0"), tmp_path, resume=True, progress=False)
    with pytest.raises(ResumeError, match="no checkpoint"):
        train(_config("steps=2", "val_every=0", "fad_weight=0"), tmp_path / "empty", resume=True, progress=False)


def test_last_checkpoint_loads_any_subnet_and_the_run_records_metrics(tmp_path, teacher):
    record = train(_config("steps=2", "val_every=2", "checkpoint_every=2"), tmp_path, teacher=str(teacher),
                   progress=False)
    assert [r["subnet"] for r in record.validation] == ["largest", "smallest"]
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,subnet,arch_id,epe") and len(rows) == 3
    assert (tmp_path / "config.yaml").is_file() and list((tmp_path / "tensorboard").iterdir())
    smallest = load_model(tmp_path / "last.pt", arch="smallest")
    assert smallest.arch == load_model(tmp_path / "last.pt").space.smallest()


def test_fad_without_a_teacher_and_fp16_on_cpu_are_refused(tmp_path):
    with pytest.raises(TrainError, match="needs a teacher"):
        Trainer(_config("fad_weight=1.0"), tmp_path)
    with pytest.raises(TrainError, match="fp16 needs a CUDA"):
        Trainer(_config("fad_weight=0", "mixed_precision=fp16"), tmp_path)


@pytest.mark.parametrize("layout", ["raft-small", "torchvision-small", "raft-large"])
def test_teacher_loads_from_each_published_layout(tmp_path, published_keys, layout):
    state = random_published_state(published_keys, layout, seed=1)
    torch.save(state, tmp_path / "teacher.pth")
    config = _config("steps=1", "val_every=0", "fad_weight=1.0", "num_random_subnets=0")
    trainer = Trainer(config, tmp_path / "run", teacher=str(tmp_path / "teacher.pth"))
    batch = next(iter(torch.utils.data.DataLoader(trainer.training_set, batch_size=2)))
    assert trainer._train_step(0, list(batch))["fad"] > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    trainer = Trainer(_config("steps=2", "val_every=0", "fad_weight=0", "num_random_subnets=1"), out)
    trainer.run(progress=False, tensorboard=False)
    torch.save(trainer.student.state_dict(), Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_run_leaves_the_same_weights_on_both_ranks(tmp_path):
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    initial = create_model("tiny-supernet", seed=1234).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], initial[k]) for k in a if a[k].is_floating_point())
    assert (tmp_path / "last.pt").is_file()  # rank 0 wrote the result


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    command = [sys.executable, str(REPO / "cli.py"), "train-supernet", "--config", "synthetic-small", "--out",
               str(tmp_path), "--no-progress", *TINY, "steps=500", "val_every=0", "fad_weight=0",
               "checkpoint_every=1000"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "config.yaml").is_file() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # a few steps
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    [(step, _)] = list_checkpoints(tmp_path)
    assert 0 < step < 500 and "continue with --resume" in out


def test_evaluate_supernet_is_the_subnet_score_with_bn_re_estimated(tmp_path):
    import pipeline
    from flownas.data.datasets import build_dataset
    from flownas.evaluate import evaluate, evaluate_subnet

    record = train(_config("steps=1", "val_every=0", "fad_weight=0"), tmp_path, progress=False, tensorboard=False)
    cli = pipeline.run_evaluation("synthetic", supernet=record.weights, arch="smallest", iters=2, max_samples=2,
                                  calibrate_bn=2, out=str(tmp_path / "eval.csv"))
    supernet, data = load_model(record.weights), build_dataset("synthetic", None)
    direct, _ = evaluate_subnet(supernet, supernet.space.smallest(), data, iters=2, max_samples=2, calibrate_bn=2)
    assert cli["summary"]["epe"] == direct["epe"] and cli["bn_calibration_pairs"] == 2
    stored, _ = evaluate(load_model(record.weights, arch="smallest"), data, iters=2, max_samples=2, progress=False)
    assert stored["epe"] != direct["epe"]  # the statistics were re-estimated, not taken from training
