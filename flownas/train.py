"""Supernet training with Feature Alignment Distillation (FAD), the sandwich rule, DDP and exact resume.

    from flownas.train import train
    from flownas.train_config import load_train_config
    record = train(load_train_config("synthetic", ["steps=200"]), "runs/supernet", teacher="runs/teacher/last.pt")

One optimizer step (`_train_step`):

1. the batch of this step is read by position (`flownas.data.stream`), so the step is the data position;
2. the frozen teacher's feature taps are computed once for the batch (when FAD is on);
3. sandwich rule (BigNAS / AttentiveNAS): the largest subnet, the smallest and `num_random_subnets` random ones,
   drawn from `(seed, step)` so every rank draws the same, each run forward and backward in turn with its own
   loss — RAFT's sequence loss + `fad_weight` × FAD loss (+ `inplace_distill` × a sequence loss against the
   largest subnet's detached flow, for all but the largest); gradients add up; under DDP only the last backward
   of the step synchronises (`no_sync` for the others);
4. one AdamW step after unscaling (mixed precision) and clipping the gradient norm; RAFT's one-cycle schedule.

A plain model (`train(..., model="raft")`) runs the same step with one "subnet": the model itself, which is how
the toolkit trains a teacher on a machine without downloads. BatchNorm statistics gathered while subnets take
turns are meaningless for any one subnet, so validation extracts each subnet and re-estimates them first
(`flownas.evaluate.calibrated_subnet`), as does `evaluate --supernet` and the search.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .data.datasets import build_dataset
from .data.stream import fixed_pairs, step_loader
from .data.synthetic import SyntheticFlow
from .data.viz import flow_to_color
from .distill import FeatureAlignment, inplace_distill_loss, sequence_loss, teacher_taps
from .errors import ToolkitError
from .evaluate import calibrated_subnet, evaluate
from .fileio import atomic_write_text
from .models import FlowModel, FlowNASSupernet
from .provenance import provenance
from .registry import create_model
from .train_config import TrainConfig
from .train_log import TrainLogger
from .train_state import (check_same_config, load_latest, restore_rng, rng_states, save_state)
from .weights import load_model, save_checkpoint


class TrainError(ToolkitError, ValueError):
    """A training run that cannot start as asked (model, teacher, device, precision); one line."""


@dataclass
class TrainRecord:
    """What `train` did: where the results are and what it measured."""

    out: str
    model: str
    supernet: bool
    start_step: int
    final_step: int
    steps: int
    interrupted: bool
    weights: str | None
    last_checkpoint: str | None
    teacher: str | None
    world_size: int
    wall_s: float
    pairs_per_s: float
    validation: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    enabled: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank when any rank says so (a Ctrl-C seen by one rank stops all of them together)."""
        if not self.enabled:
            return flag
        tensor = torch.tensor([int(flag)])
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())


def _init_distributed(device: str) -> tuple[_Dist, torch.device]:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: join the group (NCCL on CUDA, Gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), torch.device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local_rank)
    return _Dist(dist.get_rank(), dist.get_world_size(), True), torch.device(f"cuda:{local_rank}" if cuda else "cpu")


class TrainingGraph(nn.Module):
    """Student + FAD projections: one forward gives one subnet's total loss (what DDP wraps)."""

    def __init__(self, student: FlowModel, alignment: FeatureAlignment | None, config: TrainConfig) -> None:
        super().__init__()
        self.student, self.alignment, self.config = student, alignment, config

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, flow: torch.Tensor, valid: torch.Tensor,
                taps_teacher: dict[str, list[torch.Tensor]] | None = None, target: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        cfg = self.config
        taps: dict[str, list[torch.Tensor]] | None = {} if taps_teacher is not None else None
        predictions = self.student(image1, image2, iters=cfg.iters, taps=taps)
        loss, _ = sequence_loss(predictions, flow, valid, gamma=cfg.gamma, max_flow=cfg.max_flow)
        parts = {"flow": loss.detach()}
        if taps is not None and self.alignment is not None:
            fad = self.alignment(taps, taps_teacher)
            loss = loss + cfg.fad_weight * fad
            parts["fad"] = fad.detach()
        if target is not None:
            kd = inplace_distill_loss(predictions, target, gamma=cfg.gamma)
            loss = loss + cfg.inplace_distill * kd
            parts["inplace"] = kd.detach()
        return loss, parts, predictions[-1].detach()


def sandwich(model: nn.Module, step: int, seed: int, num_random: int) -> list[tuple[str, Any]]:
    """The subnets of one step: largest, smallest, then random ones from `(seed, step)`; plain models: itself."""
    if not isinstance(model, FlowNASSupernet):
        return [("model", None)]
    space = model.space
    rng = np.random.default_rng([seed, step, 0x5A4D])
    return ([("largest", space.largest()), ("smallest", space.smallest())]
            + [("random", space.sample(rng)) for _ in range(num_random)])


def _autocast(device: torch.device, mode: str) -> contextlib.AbstractContextManager:
    if mode == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if mode == "bf16" else torch.float16)


def _precision(config: TrainConfig) -> str:
    """The record's precision: fp32, or the autocast dtype over fp32 master weights."""
    return "fp32" if config.mixed_precision == "none" else f"{config.mixed_precision}-mixed"


def _check_precision(device: torch.device, mode: str) -> None:
    if mode == "fp16" and device.type != "cuda":
        raise TrainError("mixed_precision=fp16 needs a CUDA device (use bf16 or none on CPU)")


def _training_set(config: TrainConfig) -> torch.utils.data.Dataset:
    """Training pairs at `image_size`: synthetic pairs drawn at that size, real datasets cropped by RAFT's augmentor."""
    if config.dataset == "synthetic":
        return SyntheticFlow(length=config.synthetic_length, size=tuple(config.image_size), seed=0)
    from .data.augment import FlowAugmentor, SparseFlowAugmentor
    sparse = config.dataset == "kitti"
    augmentor = (SparseFlowAugmentor if sparse else FlowAugmentor)(tuple(config.image_size), seed=config.seed)
    return build_dataset(config.dataset, config.root, config.split, augmentor=augmentor)


def _validation_set(config: TrainConfig) -> torch.utils.data.Dataset:
    if config.val_dataset == "synthetic":
        return SyntheticFlow(length=max(1, config.val_samples), size=tuple(config.image_size), seed=1)
    return build_dataset(config.val_dataset, config.val_root, config.val_split)


def _load_teacher(teacher: str | None, config: TrainConfig, device: torch.device) -> FlowModel | None:
    if config.fad_weight > 0 and teacher is None:
        raise TrainError(f"fad_weight={config.fad_weight} needs a teacher: pass --teacher WEIGHTS "
                         "(or fad_weight=0 to train without FAD)")
    if teacher is None or config.fad_weight == 0:
        return None
    model = load_model(teacher, device=device)
    if isinstance(model, FlowNASSupernet):
        raise TrainError(f"{teacher}: a supernet cannot be the FAD teacher; give a RAFT or an extracted subnet")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()


def _freeze_bn(model: nn.Module) -> None:
    """RAFT's freeze_bn: BatchNorm layers use and keep their running statistics (eval mode) while training."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


class _StopFlag:
    """Ctrl-C (SIGINT) or SIGTERM sets a flag; the run saves a checkpoint at the end of the step and returns."""

    def __init__(self) -> None:
        self.raised = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        if hasattr(signal, "SIGINT"):
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    self._previous[sig] = signal.signal(sig, self._handle)
                except ValueError:  # not the main thread: leave signals alone
                    pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.raised:  # a second Ctrl-C: the user really wants out
            raise KeyboardInterrupt
        self.raised = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """One training run; `train()` builds it and calls `run()`."""

    def __init__(self, config: TrainConfig, out: str | os.PathLike, *, model: str | None = None,
                 teacher: str | None = None, device: str = "cpu", progress: bool = True,
                 tensorboard: bool = True) -> None:
        self.config, self.out = config, Path(out)
        self.model_name = model or config.model
        self.teacher_path = None if teacher is None else str(teacher)
        self.dist, self.device = _init_distributed(device)
        _check_precision(self.device, config.mixed_precision)
        torch.manual_seed(config.seed)
        self.student = create_model(self.model_name, seed=config.seed).to(self.device)
        self.supernet = isinstance(self.student, FlowNASSupernet)
        self.teacher = _load_teacher(self.teacher_path, config, self.device)
        self.alignment = None
        if self.teacher is not None:
            self.alignment = FeatureAlignment.from_models(self.student, self.teacher,
                                                          image_size=tuple(config.image_size)).to(self.device)
        self.graph = TrainingGraph(self.student, self.alignment, config)
        if config.channels_last:
            self.graph.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(self.graph.parameters(), lr=config.lr, weight_decay=config.wdecay,
                                           eps=config.epsilon)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=config.lr, total_steps=config.steps + 100, pct_start=config.pct_start,
            cycle_momentum=False, anneal_strategy="linear")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.mixed_precision == "fp16")
        self.runner: nn.Module = self.graph
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel
            # Subnets use different slices of the stored weights: parameters outside the active subnet get no grad.
            self.runner = DistributedDataParallel(self.graph, find_unused_parameters=self.supernet,
                                                  device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.training_set = _training_set(config)
        self.start_step = 0

    # -- state -------------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"model": self.student.state_dict(),
                "alignment": None if self.alignment is None else self.alignment.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": rng_states(self.device),
                "config": self.config.to_dict(), "model_name": self.model_name, "teacher": self.teacher_path,
                "provenance": provenance("train-state", arch_id=self.model_name,
                                         resolution=list(self.config.image_size), iters=self.config.iters,
                                         precision=_precision(self.config), backend="torch",
                                         device=str(self.device))}

    def resume(self) -> None:
        step, state, path = load_latest(self.out)
        check_same_config(state["config"], self.config.to_dict(), path)
        if state.get("model_name") != self.model_name:
            raise TrainError(f"{path}: the run trained {state.get('model_name')!r}, this one asks for {self.model_name!r}")
        self.student.load_state_dict(state["model"])
        if self.alignment is not None and state.get("alignment") is not None:
            self.alignment.load_state_dict(state["alignment"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"], self.device)
        self.start_step = step

    def save(self, step: int) -> Path | None:
        path = None
        if self.dist.main:
            path = save_state(self.out, step, self.state(), self.config.keep_last)
        self.dist.barrier()
        return path

    # -- one step ---------------------------------------------------------------------------------------------
    def _inputs(self, batch: list[torch.Tensor], step: int) -> tuple[torch.Tensor, ...]:
        image1, image2, flow, valid = (t.to(self.device, non_blocking=True) for t in batch)
        if self.config.add_noise:  # RAFT: Gaussian noise, sigma ~ U(0, 5), drawn from (seed, step, rank)
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence(
                [self.config.seed, step, self.dist.rank]).generate_state(1)[0]))
            sigma = 5.0 * torch.rand((), generator=gen)
            image1 = (image1 + sigma * torch.randn(image1.shape, generator=gen).to(self.device)).clamp(0, 255)
            image2 = (image2 + sigma * torch.randn(image2.shape, generator=gen).to(self.device)).clamp(0, 255)
        if self.config.channels_last:
            image1, image2 = (x.contiguous(memory_format=torch.channels_last) for x in (image1, image2))
        return image1, image2, flow, valid

    def _train_step(self, step: int, batch: list[torch.Tensor]) -> dict[str, float]:
        cfg = self.config
        self.graph.train()
        if cfg.freeze_bn:
            _freeze_bn(self.student)
        image1, image2, flow, valid = self._inputs(batch, step)
        taps_teacher = None
        if self.teacher is not None:
            with _autocast(self.device, cfg.mixed_precision):
                taps_teacher = teacher_taps(self.teacher, image1, image2)
        self.optimizer.zero_grad(set_to_none=True)
        subnets = sandwich(self.student, step, cfg.seed, cfg.num_random_subnets)
        scalars: dict[str, float] = {}
        target = None
        for index, (kind, arch) in enumerate(subnets):
            if arch is not None:
                self.student.set_active(arch)
            last = index == len(subnets) - 1
            sync = contextlib.nullcontext() if last or not self.dist.enabled else self.runner.no_sync()
            with sync:
                with _autocast(self.device, cfg.mixed_precision):
                    use_target = target if (kind != "largest" and cfg.inplace_distill > 0) else None
                    loss, parts, final = self.runner(image1, image2, flow, valid, taps_teacher, use_target)
                self.scaler.scale(loss).backward()
            if kind == "largest":
                target = final
            scalars[f"loss/{kind}"] = scalars.get(f"loss/{kind}", 0.0) + float(loss.detach()) / (
                cfg.num_random_subnets if kind == "random" else 1)
            for name, value in parts.items():
                if name != "flow":
                    scalars[name] = scalars.get(name, 0.0) + float(value) / len(subnets)
        self.scaler.unscale_(self.optimizer)
        scalars["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.graph.parameters(), cfg.clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self._average_buffers()
        scalars["lr"] = self.scheduler.get_last_lr()[0]
        return scalars

    def _average_buffers(self) -> None:
        """BatchNorm running statistics are updated per rank from its own share of the batch: average them, so
        every rank holds the same model after each step (DDP itself only averages gradients)."""
        if not self.dist.enabled:
            return
        for buffer in self.student.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
                buffer.div_(self.dist.world)

    # -- validation -------------------------------------------------------------------------------------------
    def validate(self, val_set: Any, calibration: list[tuple[torch.Tensor, ...]]) -> tuple[list[dict], dict]:
        """EPE of the largest and smallest subnets (BN re-estimated) or of the plain model, and flow pictures."""
        cfg = self.config
        if self.supernet:
            space = self.student.space
            nets = [(kind, arch.id, calibrated_subnet(self.student, arch, calibration, device=self.device))
                    for kind, arch in (("largest", space.largest()), ("smallest", space.smallest()))]
        else:
            nets = [("model", self.model_name, copy.deepcopy(self.student).eval())]
        rows, pictures = [], {}
        for kind, arch_id, net in nets:
            summary, _ = evaluate(net, val_set, iters=cfg.val_iters, device=self.device,
                                  max_samples=cfg.val_samples, progress=False)
            rows.append({"subnet": kind, "arch_id": arch_id, "epe": summary["epe"], "1px": summary["px1"],
                         "3px": summary["px3"], "5px": summary["px5"], "pairs": summary["n_images"]})
            image1, image2, _, _ = val_set[0]
            with torch.inference_mode():
                flow = net(image1[None].to(self.device), image2[None].to(self.device), iters=cfg.val_iters)
            pictures[kind] = flow_to_color(flow[0].permute(1, 2, 0).cpu().numpy())
        return rows, pictures

    # -- the run ----------------------------------------------------------------------------------------------
    def run(self, resume: bool = False, progress: bool = True, tensorboard: bool = True,
            stop_after: int | None = None) -> TrainRecord:
        cfg = self.config
        if resume:
            self.resume()
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            cfg.save_yaml(self.out / "config.yaml")
        logger = TrainLogger(self.out, start=self.start_step, total=cfg.steps, enabled=self.dist.main,
                             progress=progress, tensorboard=tensorboard)
        val_set = calibration = None
        if cfg.val_every > 0 and self.dist.main:
            val_set = _validation_set(cfg)
            calibration = fixed_pairs(self.training_set, cfg.bn_calib_batches, seed=cfg.seed) if self.supernet else []
        loader = step_loader(self.training_set, seed=cfg.seed, start=self.start_step, stop=cfg.steps,
                             batch_size=cfg.batch_size, rank=self.dist.rank, world=self.dist.world,
                             num_workers=cfg.num_workers)
        step, busy_s, interrupted, last_checkpoint, validation = self.start_step, 0.0, False, None, []
        began = time.perf_counter()
        try:
            with _StopFlag() as stop:
                for batch in loader:
                    tick = time.perf_counter()
                    scalars = self._train_step(step, batch)
                    busy_s += time.perf_counter() - tick
                    step += 1
                    logger.step(step, scalars, cfg.batch_size * (step - self.start_step) / max(busy_s, 1e-9))
                    halt = self.dist.any(stop.raised or (stop_after is not None and step - self.start_step >= stop_after))
                    if val_set is not None and (step % cfg.val_every == 0 or step == cfg.steps):
                        rows, pictures = self.validate(val_set, calibration)
                        logger.validation(step, rows, pictures)
                        validation = [{"step": step, **r} for r in rows]
                    if cfg.val_every > 0:
                        self.dist.barrier()  # other ranks wait for rank 0's validation
                    if halt or step % cfg.checkpoint_every == 0 or step == cfg.steps:
                        last_checkpoint = self.save(step)
                    if halt:
                        interrupted = step < cfg.steps
                        if interrupted:
                            logger.write(f"stopped at step {step}: checkpoint saved, continue with --resume")
                        break
        finally:
            logger.close()
        weights = self._finish(step) if step == cfg.steps and self.dist.main else None
        record = TrainRecord(out=str(self.out), model=self.model_name, supernet=self.supernet,
                             start_step=self.start_step, final_step=step, steps=cfg.steps, interrupted=interrupted,
                             weights=None if weights is None else str(weights),
                             last_checkpoint=None if last_checkpoint is None else str(last_checkpoint),
                             teacher=self.teacher_path, world_size=self.dist.world,
                             wall_s=time.perf_counter() - began,
                             pairs_per_s=cfg.batch_size * (step - self.start_step) / max(busy_s, 1e-9),
                             validation=validation)
        if self.dist.main:
            atomic_write_text(self.out / "train.json", json.dumps(
                {"record": record.to_dict(), "provenance": provenance(
                    "training-run", arch_id=self.model_name, resolution=list(cfg.image_size), iters=cfg.iters,
                    precision=_precision(cfg), backend="torch", device=str(self.device))}, indent=1))
        return record

    def _finish(self, step: int) -> Path:
        """`OUT/last.pt` in the toolkit's checkpoint format: `load_model(last.pt, arch=A)` for any subnet."""
        return save_checkpoint(self.out / "last.pt", self.student, {
            "iters": self.config.iters, "resolution": list(self.config.image_size),
            "training": {"steps": step, "config": self.config.to_dict(), "teacher": self.teacher_path,
                         "model": self.model_name}})


def train(config: TrainConfig, out: str | os.PathLike, *, model: str | None = None, teacher: str | None = None,
          resume: bool = False, device: str = "cpu", progress: bool = True, tensorboard: bool = True,
          stop_after: int | None = None) -> TrainRecord:
    """Train `model` (default `config.model`; a supernet gets the sandwich rule) into `out`; see the module doc.

    `teacher`: weights for FAD (anything `load_model` reads), required when `config.fad_weight > 0`.
    `resume`: continue from the newest checkpoint in `out/checkpoints`. `stop_after`: stop (with a checkpoint)
    after that many steps of this call, as a Ctrl-C would. Under torchrun every process calls this; rank 0 writes.
    """
    trainer = Trainer(config, out, model=model, teacher=teacher, device=device)
    return trainer.run(resume=resume, progress=progress, tensorboard=tensorboard, stop_after=stop_after)

