"""The evolutionary search against brute force on a small space with analytic latency and error.

The toy space (1296 architectures, an `iters` gene included) is small enough to enumerate, so the optimum
under a budget, the true Pareto front and feasibility are computed independently of the search.
"""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from flownas.arch import ArchConfig, SearchSpace
from flownas.errors import ToolkitError
from flownas.genes import Gene
from flownas.registry import TINY_SPACE
from flownas.search import (SearchConfig, SearchError, crowding_distances, evolve, nondominated_ranks, pareto_front,
                            random_search)

ITERS = Gene("iters", "i", "global", (4, 8, 12))
SPACE = SearchSpace.from_dict({
    "width": [[8, 16, 24], [16, 24, 32]], "kernel_size": [[3, 5], [3, 5]], "depth": [[1, 2], [1, 2, 3]],
    "expand_ratio": [[1], [2, 3]], "strides": [2, 2], "stem_channels": 8}).with_genes(ITERS)
BUDGET = 20.0
FAST = dict(population=20, generations=6, mutations=10, crossovers=10, parents=5, mutation_prob=0.3, max_tries=30)


def latency(a: ArchConfig) -> float:
    """Grows with every gene: iterations dominate, then width*depth*expand, then kernels."""
    return a.iters * 0.5 + sum(w * d * e for w, d, e in zip(a.width, a.depth, a.expand_ratio)) / 8 \
        + sum(a.kernel_size) / 4


def error(a: ArchConfig) -> float:
    """Falls with capacity and iterations (so the optimum sits at the budget); incommensurate weights make
    the optimum unique (checked by brute force below)."""
    cap = 1.0 * a.width[0] * a.depth[0] * a.expand_ratio[0] + 1.37 * a.width[1] * a.depth[1] * a.expand_ratio[1]
    tie_break = 0.7 * a.width[0] / 8 + 1.3 * a.width[1] / 8 + 0.31 * a.depth[0] + 0.53 * a.depth[1] + 0.97 * a.expand_ratio[1]
    return 2000.0 / (1 + cap) + 24.0 / a.iters + 0.011 * a.kernel_size[0] - 0.007 * a.kernel_size[1] + 1e-3 * tie_break


def lat_fn(archs):
    return [latency(a) for a in archs]


def err_fn(archs):
    return [error(a) for a in archs]


def enumerate_space(space: SearchSpace) -> list[ArchConfig]:
    options = [list(g.choices) if g.scope == "global" else list(itertools.product(*g.choices)) for g in space.genes]
    return [ArchConfig.build(space.genes, dict(zip(space.gene_names, v))) for v in itertools.product(*options)]


ALL = enumerate_space(SPACE)
FEASIBLE = [a for a in ALL if latency(a) <= BUDGET]


def config(**kw) -> SearchConfig:
    return SearchConfig(**{**FAST, "budget_ms": BUDGET, **kw})


class RecordingErrorFn:
    """error() that records every id it is asked about, and every batch."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.calls = 0

    def __call__(self, archs):
        self.calls += 1
        self.ids += [a.id for a in archs]
        return err_fn(archs)


# ------------------------------------------------------------------------------------------ brute force
def test_toy_space_is_enumerated_and_has_a_unique_optimum() -> None:
    assert len(ALL) == SPACE.size() == 1296 and len({a.id for a in ALL}) == 1296
    errors = sorted(error(a) for a in FEASIBLE)
    assert 0 < len(FEASIBLE) < len(ALL) and errors[1] - errors[0] > 1e-6


def test_finds_the_brute_force_optimum_under_the_budget() -> None:
    optimum = min(FEASIBLE, key=error)
    assert latency(max(ALL, key=lambda a: -error(a))) > 0  # sanity: functions defined everywhere
    unconstrained = min(ALL, key=error)
    assert latency(unconstrained) > BUDGET  # the budget binds: the search must trade error for latency
    result = evolve(SPACE, lat_fn, err_fn, config(generations=12), progress=False)
    assert result.best.id == optimum.id
    assert result.best_error == pytest.approx(error(optimum)) and result.best_latency_ms == latency(optimum)
    assert result.evaluations < len(FEASIBLE)  # found without evaluating the whole feasible set


def test_evolution_beats_random_search_at_equal_evaluations() -> None:
    gaps_evo, gaps_rand = [], []
    best = min(error(a) for a in FEASIBLE)
    for seed in range(4):
        evo = evolve(SPACE, lat_fn, err_fn, config(seed=seed), progress=False)
        rand = random_search(SPACE, lat_fn, err_fn, evo.evaluations, BUDGET, seed)
        assert rand.evaluations == evo.evaluations
        assert latency(rand.best) <= BUDGET and rand.best_error == min(r["error"] for r in rand.history if r["feasible"])
        gaps_evo.append(evo.best_error - best)
        gaps_rand.append(rand.best_error - best)
    assert sum(gaps_evo) < sum(gaps_rand)


@pytest.mark.parametrize("mode", ["single", "pareto"])
def test_best_never_exceeds_the_budget_and_only_feasible_archs_are_evaluated(mode: str) -> None:
    for seed in range(12):
        budget = [12.0, 15.0, 20.0, 30.0][seed % 4]
        recorder = RecordingErrorFn()
        result = evolve(SPACE, lat_fn, recorder, config(seed=seed, budget_ms=budget, mode=mode, generations=3),
                        progress=False)
        assert latency(result.best) <= budget and result.best_latency_ms <= budget
        assert all(latency(ArchConfig.from_id(i, SPACE)) <= budget for i in recorder.ids)
        for row in result.history:
            assert row["feasible"] == (row["error"] is not None)
            assert row["feasible"] == (latency(ArchConfig.from_id(row["arch_id"], SPACE)) <= budget)


@pytest.mark.parametrize("mode", ["single", "pareto"])
def test_best_is_the_lowest_error_ever_evaluated_not_the_worst(mode: str) -> None:
    # The release returned the worst candidate. An error that rises with latency makes best-by-error and
    # best-by-anything-else disagree, so any reversed sort shows.
    def rising(archs):
        return [latency(a) + 0.001 * error(a) for a in archs]

    result = evolve(SPACE, lat_fn, rising, config(mode=mode), progress=False)
    feasible = [r for r in result.history if r["feasible"]]
    assert result.best_error == min(r["error"] for r in feasible) < max(r["error"] for r in feasible)
    assert result.best.id == min(feasible, key=lambda r: r["error"])["arch_id"]
    assert result.best_error == pytest.approx(rising([result.best])[0])


def test_error_fn_is_batched_and_never_sees_an_id_twice() -> None:
    recorder = RecordingErrorFn()
    result = evolve(SPACE, lat_fn, recorder, config(generations=8), progress=False)
    assert len(recorder.ids) == len(set(recorder.ids)) == result.evaluations
    assert recorder.calls == 1 + 8  # initial population + one call per generation
    assert len({r["arch_id"] for r in result.history}) == len(result.history)  # every proposal unique


def test_history_rows_and_generations() -> None:
    result = evolve(SPACE, lat_fn, err_fn, config(generations=4), progress=False)
    assert result.generations == 4
    assert {r["kind"] for r in result.history} == {"init", "mutation", "crossover"}
    assert all(r["generation"] == 0 for r in result.history if r["kind"] == "init")
    seen: set[str] = set()
    for row in result.history:  # parents were evaluated before their children
        assert set(row["parents"]) <= seen
        assert len(row["parents"]) == {"init": 0, "mutation": 1, "crossover": 2}[row["kind"]]
        if row["feasible"]:
            seen.add(row["arch_id"])
    assert sum(r["kind"] == "init" and r["feasible"] for r in result.history) == FAST["population"]


# ------------------------------------------------------------------------------------------ resume
def _strip(result):
    return (result.best.id, result.best_latency_ms, result.best_error, result.history, result.evaluations,
            [(c.arch.id, c.latency_ms, c.error) for c in result.front])


@pytest.mark.parametrize("mode", ["single", "pareto"])
def test_resume_after_k_generations_equals_a_straight_run(tmp_path, mode: str) -> None:
    straight = evolve(SPACE, lat_fn, err_fn, config(generations=7, mode=mode), tmp_path / "a.json", progress=False)
    recorder = RecordingErrorFn()
    first = evolve(SPACE, lat_fn, recorder, config(generations=3, mode=mode), tmp_path / "b.json", progress=False)
    assert first.generations == 3 and json.loads((tmp_path / "b.json").read_text())["generation"] == 3
    resumed = evolve(SPACE, lat_fn, recorder, config(generations=7, mode=mode), tmp_path / "b.json", resume=True,
                     progress=False)
    assert _strip(resumed) == _strip(straight)
    assert len(recorder.ids) == len(set(recorder.ids)) == resumed.evaluations  # no id evaluated twice across resume


def test_resume_after_a_crash_mid_generation_equals_a_straight_run(tmp_path) -> None:
    straight = evolve(SPACE, lat_fn, err_fn, config(generations=5), progress=False)

    class Crash(Exception):
        pass

    calls = []

    def crashing(archs):
        calls.append(len(archs))
        if len(calls) == 4:  # init, gen 1, gen 2 done; dies at the start of generation 3's evaluation
            raise Crash
        return err_fn(archs)

    with pytest.raises(Crash):
        evolve(SPACE, lat_fn, crashing, config(generations=5), tmp_path / "s.json", progress=False)
    resumed = evolve(SPACE, lat_fn, err_fn, config(generations=5), tmp_path / "s.json", resume=True, progress=False)
    assert _strip(resumed) == _strip(straight)


def test_resume_rejects_other_settings_naming_the_key(tmp_path) -> None:
    path = tmp_path / "s.json"
    evolve(SPACE, lat_fn, err_fn, config(generations=1), path, progress=False)
    with pytest.raises(SearchError, match=r"seed=0 .* seed=1") as info:
        evolve(SPACE, lat_fn, err_fn, config(generations=2, seed=1), path, resume=True, progress=False)
    assert isinstance(info.value, ToolkitError) and "\n" not in str(info.value)
    with pytest.raises(SearchError, match="budget_ms"):
        evolve(SPACE, lat_fn, err_fn, config(generations=2, budget_ms=19.0), path, resume=True, progress=False)
    with pytest.raises(SearchError, match="space"):
        evolve(SPACE.with_genes(Gene("act", "a", "global", (1, 2))), lat_fn, err_fn, config(generations=2), path,
               resume=True, progress=False)
    path.write_text("{not json")
    with pytest.raises(SearchError, match="cannot read"):
        evolve(SPACE, lat_fn, err_fn, config(generations=2), path, resume=True, progress=False)


def test_resume_without_a_state_file_starts_fresh_and_writes_it(tmp_path) -> None:
    path = tmp_path / "new.json"
    fresh = evolve(SPACE, lat_fn, err_fn, config(generations=2), path, resume=True, progress=False)
    assert path.is_file() and _strip(fresh) == _strip(evolve(SPACE, lat_fn, err_fn, config(generations=2),
                                                             progress=False))


# ------------------------------------------------------------------------------------------ Pareto
def _dominated_brute(points, i) -> bool:
    p = points[i]
    return any(q[0] <= p[0] and q[1] <= p[1] and tuple(q) != tuple(p) for q in points)


def test_pareto_front_matches_brute_force_with_ties_and_duplicates() -> None:
    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 7, 60):
        points = [tuple(p) for p in rng.integers(0, 6, size=(n, 2)).astype(float)]  # many ties
        assert pareto_front(points) == [i for i in range(n) if not _dominated_brute(points, i)]
    assert pareto_front([(1, 2), (1, 2), (2, 1), (2, 2)]) == [0, 1, 2]  # duplicates both kept, (2,2) dominated
    with pytest.raises(ValueError, match="NaN"):
        pareto_front([(1.0, math.nan)])


def test_nondominated_ranks_and_crowding() -> None:
    points = [(0, 3), (1, 1), (3, 0), (2, 2), (3, 3)]
    assert nondominated_ranks(points) == [0, 0, 0, 1, 2]
    d = crowding_distances([(0, 3), (1, 1), (3, 0)])
    assert d[0] == d[2] == math.inf and d[1] == pytest.approx((3 - 0) / 3 + (3 - 0) / 3)


def test_pareto_mode_front_is_non_dominated_and_complete() -> None:
    result = evolve(SPACE, lat_fn, err_fn, config(mode="pareto", generations=8), progress=False)
    evaluated = {r["arch_id"]: (r["error"], r["latency_ms"]) for r in result.history if r["feasible"]}
    points = list(evaluated.values())
    expected = {i for i, p in evaluated.items() if not _dominated_brute(points, list(evaluated).index(i))}
    assert {c.arch.id for c in result.front} == expected
    for c in result.front:
        assert (c.error, c.latency_ms) == evaluated[c.arch.id] == (error(c.arch), latency(c.arch))
    assert [c.latency_ms for c in result.front] == sorted(c.latency_ms for c in result.front)
    assert result.best.id == min(result.front, key=lambda c: c.error).arch.id
    # Pareto selection spreads along the trade-off: the front found covers most of the true feasible front.
    true_front = {FEASIBLE[i].id for i in pareto_front([(error(a), latency(a)) for a in FEASIBLE])}
    assert len(true_front & expected) >= 0.5 * len(true_front)


# ------------------------------------------------------------------------------------------ genes, errors
def test_iteration_gene_is_searched() -> None:
    result = evolve(SPACE, lat_fn, err_fn, config(generations=6, mutation_prob=0.5), progress=False)
    iters = {r["arch_id"]: ArchConfig.from_id(r["arch_id"], SPACE).iters for r in result.history}
    changed = [r for r in result.history if r["kind"] == "mutation" and iters[r["arch_id"]] != iters[r["parents"][0]]]
    assert changed  # mutation changes the iteration count
    assert {i for i in iters.values()} == {4, 8, 12}
    assert result.best.iters == min(FEASIBLE, key=error).iters


def test_no_feasible_architecture_gives_a_clear_error() -> None:
    smallest = min(latency(a) for a in ALL)
    with pytest.raises(SearchError, match=r"budget_ms=1\.0.*max_tries=30.*takes 8\.5 ms") as info:
        evolve(SPACE, lat_fn, err_fn, config(budget_ms=1.0), progress=False)
    assert smallest == 8.5 and "\n" not in str(info.value) and isinstance(info.value, ToolkitError)


def test_parameter_limit_with_a_given_counter() -> None:
    def params(a: ArchConfig) -> int:
        return sum(w * d for w, d in zip(a.width, a.depth))

    limit = 60
    recorder = RecordingErrorFn()
    result = evolve(SPACE, lat_fn, recorder, config(max_params=limit, generations=3), progress=False,
                    params_fn=params)
    assert all(params(ArchConfig.from_id(i, SPACE)) <= limit for i in recorder.ids)
    assert params(result.best) <= limit < params(min(FEASIBLE, key=error))  # the limit binds
    rejected = [r for r in result.history if r["latency_ms"] is None]
    assert rejected and all(params(ArchConfig.from_id(r["arch_id"], SPACE)) > limit for r in rejected)


def test_tiny_space_and_space_exhaustion() -> None:
    # 256 architectures, no budget, a population larger than the space: the run stops proposing once every
    # id has been seen (else 44 slots x 10^6 tries would run for minutes) and evaluates each id once.
    ids: list[str] = []

    def tiny_error(archs):
        ids.extend(a.id for a in archs)
        return [100.0 / (sum(a.width) * sum(a.depth)) + 0.01 * sum(a.kernel_size) for a in archs]

    lat = lambda archs: [float(sum(a.width) * sum(a.depth)) for a in archs]  # noqa: E731
    result = evolve(TINY_SPACE, lat, tiny_error, SearchConfig(population=300, generations=3, max_tries=10**6, seed=3),
                    progress=False)
    assert len(ids) == len(set(ids)) == result.evaluations == TINY_SPACE.size()  # the whole space, once each
    assert result.best_error == min(r["error"] for r in result.history if r["feasible"])


@pytest.mark.parametrize("bad, key", [({"population": 0}, "population"), ({"mode": "multi"}, "mode"),
                                      ({"mutation_prob": 1.5}, "mutation_prob"), ({"budget_ms": -1}, "budget_ms"),
                                      ({"max_params": 0}, "max_params"), ({"macs_resolution": (100, 512)}, "macs_resolution")])
def test_config_validation_names_the_key(bad, key) -> None:
    with pytest.raises(SearchError, match=key):
        SearchConfig(**bad)


def test_latency_fn_of_the_wrong_length_is_a_clear_error() -> None:
    with pytest.raises(SearchError, match="latency_fn returned 0 values"):
        evolve(SPACE, lambda archs: [], err_fn, config(), progress=False)


def test_result_file_is_readable_back(tmp_path) -> None:
    from flownas.arch import resolve_arch

    result = evolve(SPACE, lat_fn, err_fn, config(generations=1), progress=False)
    result.save(tmp_path / "r.json")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert resolve_arch(tmp_path / "r.json", SPACE) == result.best
    assert saved["provenance"]["kind"] == "search-result" and saved["provenance"]["arch_id"] == result.best.id


def test_search_module_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, flownas.search; bad = [m for m in ('torch', 'export', 'bench', 'latency_tables') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_default_parameter_counter_counts_the_whole_model() -> None:
    from flownas.arch import RAFT_S
    from flownas.complexity import count_parameters
    from flownas.registry import create_model
    from flownas.search import default_params_fn

    assert default_params_fn(SearchSpace.flownas())(RAFT_S) == count_parameters(create_model("raft-s"))["total"]
