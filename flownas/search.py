"""Evolutionary architecture search over a `SearchSpace` (FACTS §1), under a latency budget.

The search knows nothing about models, predictors or devices: it depends only on two callables,

- `LatencyFn(archs) -> latencies in ms` (a lookup table, a predictor, a measurement), and
- `ErrorFn(archs) -> errors` (EPE or Fl-all of each subnet, lower is better),

both batched, so a vectorised predictor or a batched supernet evaluation pays its overhead once per call.
Optional parameter / MAC limits use `flownas.complexity` (torch, imported lazily) unless the caller gives
its own counters.

Algorithm (the released FlowNAS search, with its defects fixed):

1. Initial population: `population` architectures sampled uniformly, each resampled until it meets the
   constraints and has not been seen before. Constraints are checked (limits, then `latency_fn`) before
   any error evaluation: only feasible architectures are ever passed to `error_fn`.
2. Each generation: parents = the best `parents` of the population; `mutations` children by
   `space.mutate(random parent)` and `crossovers` children by `space.crossover(two distinct random
   parents)`, each resampled until feasible and unseen (an arch id is proposed at most once per run, so
   the error of an id is never computed twice, also across a resume). All children of a generation are
   evaluated in one `error_fn` call. The next population is parents + children (elitist: the best
   architecture found is never lost).
3. Ranking. mode "single": by error (then latency, then id, so ties are deterministic). mode "pareto":
   NSGA-II order over (error, latency): non-dominated front rank, then larger crowding distance, then error.
4. The result's `best` is the lowest-error feasible architecture over EVERYTHING evaluated (in both modes),
   computed with `min` from the evaluation cache, never from a sort order: the release returned the worst
   candidate by sorting the wrong way round.

Determinism and resume. All randomness comes from one `np.random.Generator` seeded with `config.seed`.
After the initial population (generation 0) and after every generation the whole state (generation,
population ids, evaluation cache, rng state, history) is written atomically as JSON; `resume=True` loads it
and continues, and the final result is identical to an uninterrupted run with the same seed (the
`generations` count may differ between the runs: that is how a run is extended). A candidate that fails a
constraint is remembered too (its id is "seen"), so a resumed run rejects the same proposals.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Protocol, Sequence

import numpy as np

from .arch import ArchConfig, SearchSpace
from .errors import ToolkitError
from .fileio import atomic_write_text
from .logs import bar_disabled

MODES = ("single", "pareto")
KINDS = ("init", "mutation", "crossover")
STATE_FORMAT = "flownas-search-state/1"
RESULT_FORMAT = "flownas-search-result/1"
DEFAULT_MACS_ITERS = 12  # RAFT's training iteration count, when the space has no `iters` gene


class SearchError(ToolkitError, ValueError):
    """A search that cannot run as configured (bad config, no feasible architecture, a state mismatch)."""


class LatencyFn(Protocol):
    """Latency in milliseconds of each architecture, in order (one batched call)."""

    def __call__(self, archs: Sequence[ArchConfig]) -> Sequence[float]: ...


class ErrorFn(Protocol):
    """Error (EPE or Fl-all; lower is better) of each architecture, in order (one batched call)."""

    def __call__(self, archs: Sequence[ArchConfig]) -> Sequence[float]: ...


CountFn = Callable[[ArchConfig], int]  # parameters or MACs of one architecture


@dataclass
class SearchConfig:
    """Search settings; the defaults are the released search's (FACTS §1) except that the constraint is a
    latency budget. `max_tries` bounds the proposals per candidate slot; `macs_resolution` (H, W) is the
    input size `max_macs` refers to."""

    population: int = 50
    generations: int = 20
    mutations: int = 25
    mutation_prob: float = 0.1
    crossovers: int = 25
    parents: int = 10
    seed: int = 0
    budget_ms: Optional[float] = None
    max_params: Optional[int] = None
    max_macs: Optional[int] = None
    macs_resolution: tuple[int, int] = (384, 512)
    mode: str = "single"
    max_tries: int = 1000

    def __post_init__(self) -> None:
        for name in ("population", "parents", "max_tries"):
            _check_int(name, getattr(self, name), 1)
        for name in ("generations", "mutations", "crossovers", "seed"):
            _check_int(name, getattr(self, name), 0)
        if not isinstance(self.mutation_prob, (int, float)) or not 0.0 <= self.mutation_prob <= 1.0:
            raise SearchError(f"search config mutation_prob must lie in [0, 1], got {self.mutation_prob!r}")
        if self.mode not in MODES:
            raise SearchError(f"search config mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.budget_ms is not None and (isinstance(self.budget_ms, bool) or not isinstance(self.budget_ms, (int, float))
                                           or not self.budget_ms > 0):
            raise SearchError(f"search config budget_ms must be a positive number of milliseconds or None, "
                              f"got {self.budget_ms!r}")
        for name in ("max_params", "max_macs"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        res = tuple(self.macs_resolution)
        if len(res) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 8 or v % 8 for v in res):
            raise SearchError(f"search config macs_resolution must be [H, W], multiples of 8, got {self.macs_resolution!r}")
        self.macs_resolution = (int(res[0]), int(res[1]))

    def constraints(self) -> str:
        """The active constraints, for messages: `budget_ms=20.0, max_params=5000000`."""
        parts = [f"{k}={getattr(self, k)}" for k in ("budget_ms", "max_params", "max_macs") if getattr(self, k) is not None]
        return ", ".join(parts) if parts else "no constraints"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["macs_resolution"] = list(self.macs_resolution)
        return d


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SearchError(f"search config {name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class Candidate:
    """One evaluated architecture."""

    arch: ArchConfig
    latency_ms: float
    error: float


@dataclass
class SearchResult:
    """What a search found. `best` has the lowest error among all feasible evaluated architectures;
    `front` is the Pareto front (error, latency) of the same set, by increasing latency; `history` has one
    row per proposed architecture: generation, arch_id, latency_ms (None when a parameter/MAC limit
    rejected it first), error (None unless feasible), feasible, kind (init/mutation/crossover), parents."""

    best: ArchConfig
    best_latency_ms: float
    best_error: float
    front: list[Candidate]
    history: list[dict[str, Any]]
    evaluations: int
    generations: int
    config: SearchConfig

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the best architecture under "arch" (so `resolve_arch(file)` reads it back)."""
        return {
            "format": RESULT_FORMAT, "arch": self.best.to_dict(), "arch_id": self.best.id,
            "latency_ms": self.best_latency_ms, "error": self.best_error,
            "front": [{"arch_id": c.arch.id, "latency_ms": c.latency_ms, "error": c.error} for c in self.front],
            "evaluations": self.evaluations, "generations": self.generations, "config": self.config.to_dict(),
            "history": self.history,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write `to_dict()` plus a provenance record as JSON, atomically."""
        from .provenance import provenance

        d = self.to_dict()
        iters = self.best.iters if "iters" in self.best.gene_names else None
        d["provenance"] = provenance("search-result", arch_id=self.best.id, iters=iters)
        atomic_write_text(path, json.dumps(d, indent=1) + "\n")


# ------------------------------------------------------------------------------------------ Pareto tools
def pareto_front(points: Iterable[Sequence[float]]) -> list[int]:
    """Indices (ascending) of the non-dominated points, minimising both coordinates.

    p dominates q when p <= q in both coordinates and p != q; equal points do not dominate each other, so
    duplicates on the front are all kept. O(n log n): after a lexicographic sort, p is dominated exactly
    when some strictly-smaller point has a y <= p's y.
    """
    pts = [(float(x), float(y)) for x, y in points]
    if any(math.isnan(v) for p in pts for v in p):
        raise ValueError("pareto_front: points must not contain NaN")
    order = sorted(range(len(pts)), key=lambda i: pts[i])
    front, min_y, i = [], math.inf, 0
    while i < len(order):
        j = i
        while j < len(order) and pts[order[j]] == pts[order[i]]:
            j += 1  # a group of identical points shares one verdict
        if pts[order[i]][1] < min_y:
            front.extend(order[i:j])
        min_y = min(min_y, pts[order[i]][1])
        i = j
    return sorted(front)


def nondominated_ranks(points: Sequence[Sequence[float]]) -> list[int]:
    """Front rank of each point (0 = non-dominated, 1 = non-dominated once front 0 is removed, ...)."""
    ranks = [-1] * len(points)
    remaining = list(range(len(points)))
    rank = 0
    while remaining:
        for k in pareto_front([points[i] for i in remaining]):
            ranks[remaining[k]] = rank
        remaining = [i for i in remaining if ranks[i] < 0]
        rank += 1
    return ranks


def crowding_distances(points: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II crowding distance within one front: boundary points infinite, others the normalised
    perimeter of the box spanned by their neighbours (larger = more isolated = preferred)."""
    n = len(points)
    dist = [0.0] * n
    for axis in range(2):
        order = sorted(range(n), key=lambda i: (points[i][axis], i))
        lo, hi = points[order[0]][axis], points[order[-1]][axis]
        dist[order[0]] = dist[order[-1]] = math.inf
        span = hi - lo
        if n < 3 or not math.isfinite(span) or span == 0:
            continue
        for k in range(1, n - 1):
            dist[order[k]] += (points[order[k + 1]][axis] - points[order[k - 1]][axis]) / span
    return dist


# ------------------------------------------------------------------------------------------ constraints
def default_params_fn(space: SearchSpace) -> CountFn:
    """Parameters of the whole model (both encoders and RAFT large's decoder), built on the meta device."""

    def count(arch: ArchConfig) -> int:
        import torch

        from .complexity import count_parameters
        from .weights import build_model

        with torch.device("meta"):
            model = build_model({"family": "flownas", "arch": arch.to_dict(), "space": space.to_dict()})
        return int(count_parameters(model)["total"])

    return count


def default_macs_fn(space: SearchSpace, resolution: tuple[int, int]) -> CountFn:
    """MACs of one forward pass at `resolution`, with the arch's `iters` gene (else 12 iterations)."""

    def count(arch: ArchConfig) -> int:
        from .complexity import count_macs

        iters = arch.iters if "iters" in arch.gene_names else DEFAULT_MACS_ITERS
        config = {"family": "flownas", "arch": arch.to_dict(), "space": space.to_dict()}
        return int(count_macs(config, resolution[0], resolution[1], iters=iters)["total"])

    return count


# ------------------------------------------------------------------------------------------ the run state
def _as_float(value: Any, what: str, arch: ArchConfig) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise SearchError(f"{what} of {arch.id} must be a number, got {value!r}") from None
    if math.isnan(out):
        raise SearchError(f"{what} of {arch.id} is NaN (a broken predictor or model?)")
    return out


def _call_batched(fn: Callable, archs: list[ArchConfig], what: str) -> list[float]:
    values = list(fn(list(archs)))
    if len(values) != len(archs):
        raise SearchError(f"{what} returned {len(values)} values for {len(archs)} architectures")
    return [_as_float(v, what, a) for v, a in zip(values, archs)]


@dataclass
class _State:
    generation: int
    population: list[str]
    cache: dict[str, list]  # id -> [latency_ms | None, error | None]; error set iff feasible and evaluated
    history: list[dict[str, Any]]
    rng: np.random.Generator
    evaluations: int = 0
    archs: dict[str, ArchConfig] = field(default_factory=dict)  # id -> arch for the evaluated ones


class _Search:
    """One run: the functions, the constraints and the mutable state."""

    def __init__(self, space: SearchSpace, latency_fn: LatencyFn, error_fn: ErrorFn, config: SearchConfig,
                 params_fn: CountFn | None, macs_fn: CountFn | None) -> None:
        if not isinstance(config, SearchConfig):
            raise SearchError(f"config must be a SearchConfig, got {type(config).__name__}")
        self.space, self.latency_fn, self.error_fn, self.config = space, latency_fn, error_fn, config
        self.params_fn = (params_fn or default_params_fn(space)) if config.max_params is not None else None
        self.macs_fn = (macs_fn or default_macs_fn(space, config.macs_resolution)) if config.max_macs is not None else None
        self.size = space.size()
        self.state = _State(0, [], {}, [], np.random.default_rng(config.seed))

    # -------------------------------------------------------------------------------- proposals
    def _within_limits(self, arch: ArchConfig) -> bool:
        c = self.config
        if self.params_fn is not None and self.params_fn(arch) > c.max_params:
            return False
        return self.macs_fn is None or self.macs_fn(arch) <= c.max_macs

    def _feasible_latency(self, latency: float) -> bool:
        return self.config.budget_ms is None or latency <= self.config.budget_ms

    def _record(self, arch: ArchConfig, latency: float | None, error: float | None, kind: str,
                parents: Sequence[str]) -> None:
        self.state.history.append({"generation": self.state.generation, "arch_id": arch.id, "latency_ms": latency,
                                   "error": error, "feasible": error is not None, "kind": kind,
                                   "parents": list(parents)})

    def _fill(self, slots: list[tuple[str, Callable[[], tuple[ArchConfig, tuple[str, ...]]]]]) -> list:
        """Fill each slot (kind, proposer) with a feasible, never-seen architecture.

        Proposals are made slot by slot in order (so rng use is deterministic), their latencies asked in one
        batch per round; a slot gives up after `max_tries` proposals. Returns [(arch, kind, parents)] in slot
        order for the filled slots.
        """
        st, c = self.state, self.config
        tries = [0] * len(slots)
        filled: dict[int, tuple] = {}
        pending = list(range(len(slots)))
        while pending and len(st.cache) < self.size:
            batch: list[tuple[int, ArchConfig, tuple[str, ...]]] = []
            batch_ids: set[str] = set()
            for slot in pending:
                tries[slot] += 1
                arch, parents = slots[slot][1]()
                if arch.id in st.cache or arch.id in batch_ids:
                    continue
                if not self._within_limits(arch):
                    st.cache[arch.id] = [None, None]
                    self._record(arch, None, None, slots[slot][0], parents)
                    continue
                batch.append((slot, arch, parents))
                batch_ids.add(arch.id)
            if batch:
                latencies = _call_batched(self.latency_fn, [a for _, a, _ in batch], "latency_fn")
                for (slot, arch, parents), latency in zip(batch, latencies):
                    st.cache[arch.id] = [latency, None]
                    if self._feasible_latency(latency):
                        filled[slot] = (arch, slots[slot][0], parents)
                    else:
                        self._record(arch, latency, None, slots[slot][0], parents)
            pending = [s for s in pending if s not in filled and tries[s] < c.max_tries]
        return [filled[s] for s in sorted(filled)]

    def _evaluate(self, children: list) -> None:
        """One batched error call for the generation's new feasible architectures; cache and history."""
        st = self.state
        if not children:
            return
        errors = _call_batched(self.error_fn, [a for a, _, _ in children], "error_fn")
        st.evaluations += len(children)
        for (arch, kind, parents), error in zip(children, errors):
            st.cache[arch.id][1] = error
            st.archs[arch.id] = arch
            self._record(arch, st.cache[arch.id][0], error, kind, parents)

    # -------------------------------------------------------------------------------- ranking
    def _ranked(self, ids: list[str]) -> list[str]:
        """`ids` best first (module docstring, point 3)."""
        cache = self.state.cache
        if self.config.mode == "single":
            return sorted(ids, key=lambda i: (cache[i][1], cache[i][0], i))
        points = [(cache[i][1], cache[i][0]) for i in ids]
        ranks = nondominated_ranks(points)
        crowd = [0.0] * len(ids)
        for r in set(ranks):
            members = [k for k in range(len(ids)) if ranks[k] == r]
            for k, d in zip(members, crowding_distances([points[k] for k in members])):
                crowd[k] = d
        order = sorted(range(len(ids)), key=lambda k: (ranks[k], -crowd[k], points[k][0], points[k][1], ids[k]))
        return [ids[k] for k in order]

    # -------------------------------------------------------------------------------- generations
    def initial_population(self) -> None:
        st, rng = self.state, self.state.rng
        slots = [("init", lambda: (self.space.sample(rng), ()))] * self.config.population
        children = self._fill(slots)
        if not children:
            raise SearchError(self._infeasible_message())
        self._evaluate(children)
        st.population = [a.id for a, _, _ in children]

    def _infeasible_message(self) -> str:
        c = self.config
        smallest = self.space.smallest()
        hint = ""
        if c.budget_ms is not None:
            latency = _call_batched(self.latency_fn, [smallest], "latency_fn")[0]
            hint = f"; the space's smallest architecture takes {latency:.4g} ms"
        return (f"no architecture meets the constraints ({c.constraints()}) within max_tries={c.max_tries} "
                f"proposals{hint}: raise the budget/limits or max_tries")

    def step(self) -> None:
        """One generation: select parents, breed, evaluate, replace the population."""
        st, c, rng, space = self.state, self.config, self.state.rng, self.space
        st.generation += 1
        parents = self._ranked(st.population)[:c.parents]
        parent_archs = [st.archs[i] for i in parents]

        def mutant() -> tuple[ArchConfig, tuple[str, ...]]:
            k = int(rng.integers(len(parent_archs)))
            return space.mutate(parent_archs[k], rng, c.mutation_prob), (parents[k],)

        def cross() -> tuple[ArchConfig, tuple[str, ...]]:
            a, b = (int(v) for v in rng.choice(len(parent_archs), size=2, replace=False))
            child = space.crossover(parent_archs[a], parent_archs[b], rng)
            if child.id in st.cache:  # converged parents breed copies: mutate the copy instead of redrawing it
                child = space.mutate(child, rng, c.mutation_prob)
            return child, (parents[a], parents[b])

        slots = [("mutation", mutant)] * c.mutations
        if len(parent_archs) >= 2:  # one parent crossed with itself only gives itself back
            slots += [("crossover", cross)] * c.crossovers
        children = self._fill(slots)
        self._evaluate(children)
        st.population = parents + [a.id for a, _, _ in children]

    # -------------------------------------------------------------------------------- result
    def result(self) -> SearchResult:
        st = self.state
        evaluated = [i for i, (_, e) in st.cache.items() if e is not None]
        # min(), not a sort whose direction could be wrong: the release returned the worst candidate.
        best = min(evaluated, key=lambda i: (st.cache[i][1], st.cache[i][0], i))
        front_idx = pareto_front([(st.cache[i][1], st.cache[i][0]) for i in evaluated])
        front = sorted((Candidate(st.archs[evaluated[k]], st.cache[evaluated[k]][0], st.cache[evaluated[k]][1])
                        for k in front_idx), key=lambda cand: (cand.latency_ms, cand.error, cand.arch.id))
        return SearchResult(st.archs[best], st.cache[best][0], st.cache[best][1], front,
                            [dict(row) for row in st.history], st.evaluations, st.generation, self.config)

    # -------------------------------------------------------------------------------- state files
    def save(self, path: Path) -> None:
        st = self.state
        d = {"format": STATE_FORMAT, "config": self.config.to_dict(), "space": self.space.to_dict(),
             "generation": st.generation, "population": st.population, "evaluations": st.evaluations,
             "rng": st.rng.bit_generator.state, "cache": st.cache, "history": st.history}
        atomic_write_text(path, json.dumps(d, separators=(",", ":")) + "\n")

    def load(self, path: Path) -> None:
        try:
            d = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SearchError(f"{path}: cannot read the search state ({exc})") from None
        if not isinstance(d, dict) or d.get("format") != STATE_FORMAT:
            raise SearchError(f"{path}: not a search state file (expected format {STATE_FORMAT!r})")
        self._check_same_run(path, d)
        rng = np.random.default_rng()
        if d["rng"].get("bit_generator") != type(rng.bit_generator).__name__:
            raise SearchError(f"{path}: rng is {d['rng'].get('bit_generator')!r}, expected "
                              f"{type(rng.bit_generator).__name__!r}")
        rng.bit_generator.state = d["rng"]
        cache = {k: list(v) for k, v in d["cache"].items()}
        archs = {k: ArchConfig.from_id(k, self.space) for k, v in cache.items() if v[1] is not None}
        self.state = _State(int(d["generation"]), list(d["population"]), cache, list(d["history"]), rng,
                            int(d["evaluations"]), archs)

    def _check_same_run(self, path: Path, d: dict) -> None:
        # `generations` may differ: extending a finished or interrupted run is what resume is for.
        saved, current = d.get("config", {}), self.config.to_dict()
        for key in current:
            if key != "generations" and saved.get(key) != current[key]:
                raise SearchError(f"{path}: saved search config {key}={saved.get(key)!r} differs from the "
                                  f"current {key}={current[key]!r}; resume needs the same settings")
        if d.get("space") != json.loads(json.dumps(self.space.to_dict())):
            raise SearchError(f"{path}: saved search space differs from the current one; resume needs the same space")


# ------------------------------------------------------------------------------------------ public API
def evolve(space: SearchSpace, latency_fn: LatencyFn, error_fn: ErrorFn, config: SearchConfig | None = None,
           state_path: str | os.PathLike | None = None, resume: bool = False, progress: bool = True, *,
           params_fn: CountFn | None = None, macs_fn: CountFn | None = None) -> SearchResult:
    """Evolutionary search (module docstring); the lowest-error feasible architecture and the front.

    `state_path`: checkpoint written after every generation. `resume=True` continues from it (a missing
    file starts a fresh run that writes it); the saved settings must equal `config` except `generations`.
    `params_fn` / `macs_fn` override the torch-based counters used for `max_params` / `max_macs`.
    """
    config = config or SearchConfig()
    run = _Search(space, latency_fn, error_fn, config, params_fn, macs_fn)
    path = Path(state_path) if state_path is not None else None
    if resume and path is None:
        raise SearchError("resume=True needs a state_path to resume from")
    if resume and path.is_file():
        run.load(path)
    else:
        run.initial_population()
        if path is not None:
            run.save(path)
    from tqdm import tqdm

    start = run.state.generation
    bar = tqdm(total=max(config.generations - start, 0), initial=0, desc="search", unit="gen",
               disable=bar_disabled(progress))
    try:
        while run.state.generation < config.generations:
            run.step()
            if path is not None:
                run.save(path)
            result = run.result()
            bar.set_postfix(best_error=f"{result.best_error:.4g}", latency_ms=f"{result.best_latency_ms:.4g}",
                            evals=result.evaluations)
            bar.update(1)
    finally:
        bar.close()
    return run.result()


def random_search(space: SearchSpace, latency_fn: LatencyFn, error_fn: ErrorFn, n: int,
                  budget_ms: float | None = None, seed: int = 0, *, max_tries: int = 1000) -> SearchResult:
    """Best of `n` distinct random feasible architectures (one batched error call): the baseline that the
    evolutionary search must beat at the same number of evaluations."""
    config = SearchConfig(population=n, generations=0, seed=seed, budget_ms=budget_ms, max_tries=max_tries)
    return evolve(space, latency_fn, error_fn, config, progress=False)
