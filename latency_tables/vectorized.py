"""Vectorised latency prediction for the search: many architectures per numpy call, equal to `LatencyTable.predict`.

Architectures are encoded as gene *indices* (position of each structural gene's value among its stage's choices):
an int array `[N, S, 4]` with columns (width, kernel_size, depth, expand_ratio) per stage. Because a stage's keys
depend only on its own genes and the width feeding it (the previous stage's width, the stem's for stage 0), the
encoders' latency is

    sum_s T_s[w_{s-1}, w_s, k_s, d_s, e_s] + head[w_{S-1}] + stems,   T_s = first block + (d - 1) x repeat block

(both encoders together), so `predict_many` is a handful of gathers per stage. The network latency adds the
prologue and iters x step, then the table's calibration, exactly as `LatencyTable.predict` does.

`encode` covers the four structural genes only: a global gene such as `iters` is passed to `predict_many`
as its `iters` argument. Missing keys (choice): a table need not cover the whole space (a table measured for a few architectures is
legitimate), so construction records which table entries lack a key (NaN) and `predict_many` raises
`LatencyTableError` naming the key, via the scalar predictor, only when an architecture actually needs one.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from flownas.arch import ArchConfig, BlockSpec, SearchSpace, mid_channels

from .keys import STEM_STRIDE, _block, _head, _stem, decoder_widths, encoder_batch
from .predictor import LatencyTable

GENES = ("width", "kernel_size", "depth", "expand_ratio")  # column order of the encoding's last axis


def _choices(space: SearchSpace) -> list[list[tuple[int, ...]]]:
    """choices[s][g]: the choices of gene GENES[g] at stage s."""
    return [[tuple(space.gene(g).choices[s]) for g in GENES] for s in range(space.num_stages)]


def encode(archs: Sequence[ArchConfig], space: SearchSpace) -> np.ndarray:
    """Gene indices `[N, S, 4]` (int64) of `archs` in `space` (validated; ValueError-derived ArchError if not)."""
    choices = _choices(space)
    lookup = [[{v: i for i, v in enumerate(c)} for c in stage] for stage in choices]
    out = np.empty((len(archs), space.num_stages, len(GENES)), dtype=np.int64)
    for n, arch in enumerate(archs):
        space.validate(arch)
        for g, name in enumerate(GENES):
            for s, value in enumerate(getattr(arch, name)):
                out[n, s, g] = lookup[s][g][value]
    return out


def decode(encoded: np.ndarray, space: SearchSpace) -> list[ArchConfig]:
    """Inverse of `encode` (extra genes take their defaults, or their smallest choice)."""
    choices = _choices(space)
    archs = []
    for row in np.asarray(encoded):
        values = {name: tuple(choices[s][g][int(row[s, g])] for s in range(space.num_stages))
                  for g, name in enumerate(GENES)}
        for gene in space.extra_genes:
            values[gene.name] = gene.default if gene.default is not None else gene.smallest()
        archs.append(ArchConfig.build(space.genes, values))
    return archs


def sample_encoded(space: SearchSpace, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` architectures drawn uniformly (every gene of every stage independently), encoded `[n, S, 4]`."""
    sizes = np.array([[len(c) for c in stage] for stage in _choices(space)], dtype=np.int64)
    return rng.integers(0, sizes, size=(n, *sizes.shape), dtype=np.int64)


class VectorPredictor:
    """Per-stage latency arrays of a `LatencyTable`; `predict_many` equals `table.predict` to float rounding."""

    def __init__(self, table: LatencyTable) -> None:
        self.table, self.space = table, table.space
        self.choices = _choices(self.space)
        self._missing: set[str] = set()
        self._stages = self._stage_arrays()  # list of flattened [in_w, w, k, d, e] arrays (ms)
        self._head = self._head_array()  # [last-stage width choice] (ms)
        self._base = self._stem_ms()
        self.step_ms = table._fixed_ms("step")
        self.prologue_ms = table._fixed_ms("prologue")
        self._shape = [tuple(len(c) for c in stage) for stage in self.choices]
        self._sizes = np.array(self._shape, dtype=np.int64)  # [S, 4] number of choices

    @property
    def missing_keys(self) -> frozenset[str]:
        """Ids of the keys of this space that the table lacks (architectures needing them cannot be predicted)."""
        return frozenset(self._missing)

    def _ms(self, key_id: str) -> float:
        value = self.table.latencies.get(key_id)
        if value is None:
            self._missing.add(key_id)
            return float("nan")  # poisons every sum that needs it; predict_many then raises naming the key
        return value

    def _encoders(self) -> list[tuple[str, int]]:
        return [(e, encoder_batch(e, self.table.batch)) for e in ("fnet", "cnet")]

    def _stem_ms(self) -> float:
        t = self.table
        return sum(self._ms(_stem(e, self.space, t.height, t.width, n).id) for e, n in self._encoders())

    def _stage_arrays(self) -> list[np.ndarray]:
        """T_s[in_w, w, k, d, e] for both encoders; in_w indexes the previous stage's widths (stem for s = 0)."""
        sp, t = self.space, self.table
        hw = (-(-t.height // STEM_STRIDE), -(-t.width // STEM_STRIDE))  # after the stem
        in_widths: tuple[int, ...] = (sp.stem_channels,)
        arrays = []
        for s, (widths, kernels, depths, expands) in enumerate(self.choices):
            has_expand, stride = max(expands) > 1, sp.strides[s]
            out_hw = (-(-hw[0] // stride), -(-hw[1] // stride))
            a = np.zeros((len(in_widths), len(widths), len(kernels), len(depths), len(expands)))
            for idx in np.ndindex(*a.shape):
                cin, out, k, d, e = (in_widths[idx[0]], widths[idx[1]], kernels[idx[2]], depths[idx[3]],
                                     expands[idx[4]])
                first = BlockSpec(s, 0, 0, cin, out, k, e, mid_channels(cin, e, has_expand), stride, has_expand)
                rep = BlockSpec(s, 1, 0, out, out, k, e, mid_channels(out, e, has_expand), 1, has_expand)
                for enc, n in self._encoders():
                    a[idx] += self._ms(_block(enc, first, hw, n).id)
                    if d > 1:  # repeats are the same key; adding one at a time keeps the scalar sum's rounding
                        a[idx] += (d - 1) * self._ms(_block(enc, rep, out_hw, n).id)
            arrays.append(a.reshape(-1))
            hw, in_widths = out_hw, widths
        self._last_hw = hw
        return arrays

    def _head_array(self) -> np.ndarray:
        feature_dim, hidden_dim, context_dim = decoder_widths(self.table.decoder)
        outputs = {"fnet": feature_dim, "cnet": hidden_dim + context_dim}
        widths = self.choices[-1][0]
        return np.array([sum(self._ms(_head(e, w, outputs[e], self._last_hw, n).id) for e, n in self._encoders())
                         for w in widths])

    def encode(self, archs: Sequence[ArchConfig]) -> np.ndarray:
        return encode(archs, self.space)

    def predict_many(self, archs: Sequence[ArchConfig] | np.ndarray, iters: int | np.ndarray,
                     calibrated: bool = True) -> np.ndarray:
        """Latency (ms) `[N]` of each architecture (ArchConfigs or `[N, S, 4]` gene indices) at `iters` update
        iterations (one int, or `[N]`); raises `LatencyTableError` naming a key the table lacks."""
        enc = self._checked(archs) if isinstance(archs, np.ndarray) else self.encode(archs)
        iters_arr = np.asarray(iters)
        if np.any(iters_arr < 1):
            raise ValueError(f"iters must be at least 1, got {int(np.min(iters_arr))}")
        encoders = self._base + self._stage_sum(enc)
        raw = encoders + self.prologue_ms + iters_arr * self.step_ms
        if self._missing and np.isnan(raw).any():
            self._raise_missing(enc, raw, iters_arr)
        return self.table.calibrate(raw) if calibrated else raw

    def _checked(self, enc: np.ndarray) -> np.ndarray:
        """`enc` as `[N, S, 4]` gene indices within range: an index past its choices would silently address
        another gene's entry of the flattened arrays."""
        if enc.ndim != 3 or enc.shape[1:] != self._sizes.shape or not np.issubdtype(enc.dtype, np.integer):
            raise ValueError(f"encoded architectures must be integer [N, {len(self._shape)}, {len(GENES)}], got "
                             f"{enc.dtype} {list(enc.shape)}")
        bad = (enc < 0) | (enc >= self._sizes)
        if bad.any():
            n, s, g = (int(v) for v in np.argwhere(bad)[0])
            raise ValueError(f"encoded architecture {n}: {GENES[g]} index {int(enc[n, s, g])} of stage {s} is "
                             f"outside 0..{self._sizes[s, g] - 1}")
        return enc

    def _stage_sum(self, enc: np.ndarray) -> np.ndarray:
        total = np.zeros(enc.shape[0])
        prev = np.zeros(enc.shape[0], dtype=np.int64)
        for s, shape in enumerate(self._shape):
            w, k, d, e = enc[:, s, 0], enc[:, s, 1], enc[:, s, 2], enc[:, s, 3]
            flat = (((prev * shape[0] + w) * shape[1] + k) * shape[2] + d) * shape[3] + e
            total += self._stages[s][flat]
            prev = w
        return total + self._head[prev]

    def _raise_missing(self, enc: np.ndarray, raw: np.ndarray, iters: np.ndarray) -> None:
        n = int(np.flatnonzero(np.isnan(raw))[0])
        arch = decode(enc[n:n + 1], self.space)[0]
        self.table.predict(arch, int(np.broadcast_to(iters, raw.shape)[n]))  # raises naming the key
        raise AssertionError(f"NaN prediction for {arch.id} but the scalar predictor found every key")
