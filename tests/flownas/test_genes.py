"""The search space as a table of genes: a registered global or per-stage gene is sampled, mutated,
crossed over, identified and validated by the generic code, with no gene-specific code anywhere."""
from __future__ import annotations

import json
import pickle
from collections import Counter

import numpy as np
import pytest

from flownas.arch import ArchConfig, ArchError, SearchSpace, SpaceError, resolve_arch
from flownas.genes import Gene

BASE = SearchSpace.from_dict({"width": [[16, 24], [32]], "kernel_size": [[3], [3, 5, 7]], "depth": [[1], [1, 2]],
                              "expand_ratio": [[1], [2, 3]], "strides": [2, 1], "stem_channels": 16})
ITERS = Gene("iters", "i", "global", (4, 8, 12))
ACT = Gene("act", "a", "stage", ((1, 2), (1, 2, 3)))  # a toy per-stage gene
SPACE = BASE.with_genes(ITERS, ACT)
N = 3000


def _arch(**changes) -> ArchConfig:
    values = {"width": [24, 32], "kernel_size": [3, 7], "depth": [1, 2], "expand_ratio": [1, 3], "iters": 12,
              "act": [2, 3]}
    return ArchConfig.from_dict({**values, **changes}, SPACE)


# ------------------------------------------------------------------------------------------- the table
def test_flownas_space_is_the_four_structural_genes() -> None:
    flownas = SearchSpace.flownas()
    assert [(g.name, g.prefix, g.scope) for g in flownas.genes] == [
        ("width", "w", "stage"), ("kernel_size", "k", "stage"), ("depth", "d", "stage"), ("expand_ratio", "e", "stage")]
    assert flownas.extra_genes == ()
    assert list(flownas.to_dict()) == ["width", "kernel_size", "depth", "expand_ratio", "strides", "stem_channels",
                                       "head_channels"]


def test_size_counts_registered_genes() -> None:
    # base: widths 2*1, kernels 1*3, depths 1*2, expands 1*2 = 24; iters 3; act 2*3 = 6
    assert BASE.size() == 24
    assert SPACE.size() == 24 * 3 * 6
    assert SPACE.gene_names == ("width", "kernel_size", "depth", "expand_ratio", "iters", "act")


def test_space_with_genes_round_trips_through_dict_json_and_yaml(tmp_path) -> None:
    stored = json.loads(json.dumps(SPACE.to_dict()))
    assert stored["extra_genes"] == [
        {"name": "iters", "prefix": "i", "scope": "global", "choices": [4, 8, 12]},
        {"name": "act", "prefix": "a", "scope": "stage", "choices": [[1, 2], [1, 2, 3]]}]
    assert SearchSpace.from_dict(stored) == SPACE
    path = tmp_path / "space.yaml"
    path.write_text("width: [[16, 24], [32]]\nkernel_size: [[3], [3, 5, 7]]\ndepth: [[1], [1, 2]]\n"
                    "expand_ratio: [[1], [2, 3]]\nstrides: [2, 1]\nstem_channels: 16\nextra_genes:\n"
                    "  - {name: iters, prefix: i, scope: global, choices: [4, 8, 12]}\n"
                    "  - {name: act, prefix: a, scope: stage, choices: [[1, 2], [1, 2, 3]]}\n")
    assert SearchSpace.from_file(path) == SPACE


def test_structural_genes_come_first_whatever_the_order_given() -> None:
    shuffled = SearchSpace((ACT, *reversed(BASE.genes), ITERS), strides=(2, 1), stem_channels=16)
    assert shuffled == SPACE.__class__((*BASE.genes, ACT, ITERS), strides=(2, 1), stem_channels=16)
    assert shuffled.gene_names[:4] == ("width", "kernel_size", "depth", "expand_ratio")


@pytest.mark.parametrize("make, problem", [
    (lambda: Gene("iters", "I", "global", (4, 8)), "id prefix must be lowercase letters"),
    (lambda: Gene("iters", "i", "layer", (4, 8)), "scope must be one of stage, global"),
    (lambda: Gene("iters", "i", "global", (4, 4)), "distinct positive integers"),
    (lambda: Gene("iters", "i", "global", (4, 8.5)), "must be an integer"),
    (lambda: Gene("iters", "i", "global", (4, 8), default=6), "default 6 is not one of (4, 8)"),
    (lambda: Gene("act", "a", "stage", ((1, 2), (1,)), default=1), "only global genes take a default"),
    (lambda: Gene("not a name", "x", "global", (1,)), "Python identifier"),
    (lambda: BASE.with_genes(Gene("iters", "w", "global", (4,))), "id prefixes must be unique, repeated: w"),
    (lambda: BASE.with_genes(ITERS, ITERS), "names must be unique, repeated: iters"),
    (lambda: BASE.with_genes(Gene("id", "x", "global", (4,))), "'id' is taken by an ArchConfig attribute"),
    (lambda: BASE.with_genes(Gene("act", "a", "stage", ((1,),))), "same number of stages"),
    (lambda: SearchSpace(BASE.genes[1:], strides=(2, 1)), "needs the stage gene 'width'"),
    (lambda: SearchSpace.from_dict({"width": [], "kernel_size": [], "depth": [], "expand_ratio": [], "strides": []}),
     "same number of stages (at least one)"),
])
def test_malformed_gene_tables(make, problem: str) -> None:
    with pytest.raises(SpaceError) as err:
        make()
    assert problem in str(err.value) and "\n" not in str(err.value)


def test_malformed_extra_genes_in_a_space_file(tmp_path) -> None:
    path = tmp_path / "space.json"
    path.write_text(json.dumps({**BASE.to_dict(), "extra_genes": [{"name": "iters", "prefix": "i", "scope": "global"}]}))
    with pytest.raises(SpaceError, match=r"space.json: extra_genes\[0\] is missing key 'choices'"):
        SearchSpace.from_file(path)


# ------------------------------------------------------------------------------------------- random operators
def test_sampling_covers_every_choice_uniformly() -> None:
    rng = np.random.default_rng(0)
    samples = [SPACE.sample(rng) for _ in range(N)]
    assert all(SPACE.contains(s) for s in samples)
    # Uniform: each of 3 values expects N/3 = 1000 draws, binomial sd 25.8; 100 is about 4 sd.
    for counts in (Counter(s.iters for s in samples), Counter(s.act[1] for s in samples)):
        assert set(counts) == {1, 2, 3} or set(counts) == {4, 8, 12}
        assert all(abs(c - N / 3) < 100 for c in counts.values()), counts
    assert abs(Counter(s.act[0] for s in samples)[2] - N / 2) < 110  # 2 choices: sd 27.4
    assert [a.id for a in (SPACE.sample(5), SPACE.sample(5))] == [SPACE.sample(np.random.default_rng(5)).id] * 2


def test_mutation_rate_of_a_global_gene() -> None:
    base = _arch(iters=4)
    assert all(SPACE.mutate(base, seed, prob=0.0) == base for seed in range(200))
    # prob 1: the value is always redrawn, so it is uniform over the choices whatever it was (1/3 stay 4).
    always = Counter(SPACE.mutate(base, seed, prob=1.0).iters for seed in range(N))
    assert all(abs(c - N / 3) < 100 for c in always.values()) and set(always) == {4, 8, 12}
    # prob 0.3: redrawn 30% of the time, and 2 of 3 redraws change it -> changes with rate 0.2 (sd 0.0073).
    changed = sum(SPACE.mutate(base, seed, prob=0.3).iters != 4 for seed in range(N)) / N
    assert abs(changed - 0.2) < 0.03


def test_mutation_rate_of_a_stage_gene() -> None:
    base = _arch(act=[1, 1])
    changed = sum(SPACE.mutate(base, seed, prob=0.5).act[1] != 1 for seed in range(N)) / N
    assert abs(changed - 0.5 * 2 / 3) < 0.03  # 3 choices at stage 1


def test_crossover_takes_each_global_gene_from_one_parent() -> None:
    a, b = _arch(iters=4, act=[1, 1]), _arch(iters=12, act=[2, 3])
    children = [SPACE.crossover(a, b, seed) for seed in range(1000)]
    assert {c.iters for c in children} == {4, 12}
    assert abs(sum(c.iters == 4 for c in children) - 500) < 80  # sd 15.8
    for child in children:
        assert all(v in (va, vb) for v, va, vb in zip(child.act, a.act, b.act))
    assert SPACE.crossover(a, b, 3) == SPACE.crossover(a, b, np.random.default_rng(3))


# ------------------------------------------------------------------------------------------- formats
def test_ids_dicts_and_hashes_round_trip() -> None:
    arch = _arch()
    assert arch.id == "w24.32-k3.7-d1.2-e1.3-i12-a2.3"
    assert arch.to_dict() == {"width": [24, 32], "kernel_size": [3, 7], "depth": [1, 2], "expand_ratio": [1, 3],
                              "iters": 12, "act": [2, 3]}
    assert (arch.iters, arch.act) == (12, (2, 3))
    for parsed in (ArchConfig.from_id(arch.id, SPACE), ArchConfig.from_json(arch.to_json(), SPACE),
                   resolve_arch(arch.id, SPACE), resolve_arch(arch.to_json(), SPACE), resolve_arch(arch.to_dict(), SPACE),
                   pickle.loads(pickle.dumps(arch))):
        assert parsed == arch and hash(parsed) == hash(arch)
    assert {a.id for a in (SPACE.sample(s) for s in range(20))} == \
        {ArchConfig.from_id(SPACE.sample(s).id, SPACE).id for s in range(20)}


def test_resolve_a_file_with_global_gene(tmp_path) -> None:
    path = tmp_path / "arch.json"
    path.write_text(json.dumps({"arch": _arch(iters=8).to_dict(), "epe": 1.5}))
    assert resolve_arch(path, SPACE) == resolve_arch(str(path), SPACE) == _arch(iters=8)


@pytest.mark.parametrize("bad", ["w24.32-k3.7-d1.2-e1.3-a2.3", "w24.32-k3.7-d1.2-e1.3-i12.4-a2.3",
                                 "w24.32-k3.7-d1.2-e1.3-a2.3-i12", "w24.32-k3.7-d1.2-e1.3-i12-a2.3-z1"])
def test_malformed_ids_name_the_layout(bad: str) -> None:
    with pytest.raises(ArchError, match=r"malformed architecture id .*expected w<width>-k<kernel_size>-d<depth>-"
                                        r"e<expand_ratio>-i<iters>-a<act>"):
        ArchConfig.from_id(bad, SPACE)


def test_missing_and_unknown_keys() -> None:
    values = _arch().to_dict()
    del values["iters"]
    with pytest.raises(ArchError, match=r"^architecture is missing key 'iters' \(required keys: .*iters, act\)$"):
        ArchConfig.from_dict(values, SPACE)
    with pytest.raises(ArchError, match="unknown architecture key 'iters'"):
        ArchConfig.from_dict(_arch().to_dict(), BASE)
    with pytest.raises(ArchError, match=r"iters must be an integer, got \[12\]"):
        ArchConfig.from_dict({**_arch().to_dict(), "iters": [12]}, SPACE)


def test_validation_names_gene_value_and_choices() -> None:
    with pytest.raises(ArchError) as err:
        SPACE.validate(_arch(iters=5))
    assert str(err.value) == "iters=5 is not one of (4, 8, 12)"
    with pytest.raises(ArchError) as err:
        SPACE.validate(_arch(act=[2, 4]))
    assert str(err.value) == "stage 1 act=4 is not one of (1, 2, 3)"
    with pytest.raises(ArchError, match="architecture has no gene 'iters'"):
        SPACE.validate(BASE.largest())
    with pytest.raises(ArchError, match="architecture gene 'iters' is not in the space"):  # first extra, in order
        BASE.validate(_arch())
    assert not SPACE.contains(_arch(iters=5)) and SPACE.contains(_arch())


def test_extremes_take_extreme_global_values() -> None:
    assert SPACE.largest().id == "w24.32-k3.7-d1.2-e1.3-i12-a2.3"
    assert SPACE.smallest().id == "w16.32-k3.3-d1.1-e1.2-i4-a1.1"


# ------------------------------------------------------------------------------------------- defaults
def test_a_defaulted_gene_lifts_archs_stored_without_it() -> None:
    space = SearchSpace.flownas().with_genes(Gene("iters", "i", "global", (6, 12, 32), default=12))
    raft_k = "w64.72.88.104.120.136-k3.5.3.5.5.5-d2.1.1.2.2.1-e1.4.6.5.6.6"
    for spec in ("raft-k", raft_k, resolve_arch("raft-k").to_dict(), resolve_arch("raft-k")):
        assert resolve_arch(spec, space).id == raft_k + "-i12"
    assert ArchConfig.from_id(raft_k + "-i32", space).iters == 32
    assert resolve_arch("largest", space).iters == 32
    assert SearchSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space
