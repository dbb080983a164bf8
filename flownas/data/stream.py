"""Deterministic, resumable training batches: sample positions instead of iterator state.

Training sees one endless stream of sample *positions* 0, 1, 2, ...; position p belongs to epoch
e = p // N and is sample `perm_e[p % N]`, where `perm_e` is a permutation drawn from `(seed, e)` alone. Step s of
a run with global batch B reads positions [s·B, (s+1)·B); rank r of W ranks reads its contiguous share of them.
The data position of a run is therefore just its step: a resumed run asks for step s and gets exactly the batch
an uninterrupted run would have seen, with any number of DataLoader workers, because the augmentor is reseeded
from `(seed, position)` before each sample (RAFT reseeds per worker, which makes batches depend on the worker count).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import ToolkitError


class StreamError(ToolkitError, ValueError):
    """A batch size that ranks cannot share, or an empty dataset (one line)."""


class PositionedDataset(Dataset):
    """`dataset` indexed by stream position: epoch-wise seeded permutations, augmentor reseeded per position."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, int(seed)
        self.size = len(dataset)  # type: ignore[arg-type]
        if self.size == 0:
            raise StreamError("the training dataset is empty")

    @lru_cache(maxsize=4)
    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)

    def index(self, position: int) -> int:
        """The dataset index at stream `position`."""
        return int(self.permutation(position // self.size)[position % self.size])

    def __len__(self) -> int:  # a stream has no end; DataLoader only needs the sampler's length
        return self.size

    def __getitem__(self, position: int) -> Any:
        augmentor = getattr(self.dataset, "augmentor", None)
        if augmentor is not None and hasattr(augmentor, "reseed"):
            augmentor.reseed(int(np.random.SeedSequence([self.seed, position]).generate_state(1)[0]))
        return self.dataset[self.index(position)]


class StepBatches(Sampler[list[int]]):
    """The positions of steps `start`..`stop-1` that rank `rank` of `world` reads (one list per step)."""

    def __init__(self, start: int, stop: int, batch_size: int, rank: int = 0, world: int = 1) -> None:
        if batch_size % world:
            raise StreamError(f"batch_size {batch_size} cannot be split evenly over {world} processes "
                              f"(use a multiple of {world})")
        self.start, self.stop, self.batch_size = start, stop, batch_size
        self.share, self.rank = batch_size // world, rank

    def positions(self, step: int) -> list[int]:
        first = step * self.batch_size + self.rank * self.share
        return list(range(first, first + self.share))

    def __iter__(self) -> Iterator[list[int]]:
        return (self.positions(step) for step in range(self.start, self.stop))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def step_loader(dataset: Dataset, *, seed: int, start: int, stop: int, batch_size: int, rank: int = 0,
                world: int = 1, num_workers: int = 0) -> DataLoader:
    """A DataLoader that yields, in order, the batches of steps `start`..`stop-1` for one rank."""
    return DataLoader(PositionedDataset(dataset, seed), batch_sampler=StepBatches(start, stop, batch_size, rank, world),
                      num_workers=num_workers, persistent_workers=False)


def fixed_pairs(dataset: Dataset, count: int, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    """`count` samples of `dataset` chosen by a seeded permutation (BN recalibration, pictures): always the same."""
    size = len(dataset)  # type: ignore[arg-type]
    if size == 0:
        raise StreamError("cannot pick pairs from an empty dataset")
    order = np.random.default_rng(seed).permutation(size)
    return [dataset[int(order[i % size])] for i in range(count)]


def stack(samples: Sequence[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """Samples `(img1, img2, flow, valid)` -> batched tensors."""
    return tuple(torch.stack(column) for column in zip(*samples))
