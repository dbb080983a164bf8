"""ArchConfig / SearchSpace: formats, validation, random operators, block shapes (FACTS §1)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flownas.arch import (
    NAMED_ARCHS,
    ArchConfig,
    ArchError,
    SearchSpace,
    SpaceError,
    expanded_channels,
    make_divisible,
    resolve_arch,
)

SPACE = SearchSpace.flownas()
RAFT_K = dict(width=[64, 72, 88, 104, 120, 136], kernel_size=[3, 5, 3, 5, 5, 5],
              depth=[2, 1, 1, 2, 2, 1], expand_ratio=[1, 4, 6, 5, 6, 6])
RAFT_S = dict(width=[64, 72, 96, 104, 120, 136], kernel_size=[3, 3, 5, 3, 5, 5],
              depth=[2, 2, 2, 1, 2, 1], expand_ratio=[1, 2, 5, 5, 6, 6])
NAMES = ["raft-s", "raft-k", "largest", "smallest"]


def _named_and_sampled() -> list[ArchConfig]:
    return [resolve_arch(n) for n in NAMES] + [SPACE.sample(np.random.default_rng(i)) for i in range(50)]


# ------------------------------------------------------------------------------ the space itself
def test_flownas_space_size_and_slots() -> None:
    assert SPACE.size() == 80_621_568
    assert SPACE.max_slots_per_stage == (2, 3, 3, 3, 4, 2)
    assert SPACE.stage_offsets == (0, 2, 5, 8, 11, 15)
    assert SPACE.num_slots == 17
    assert SPACE.strides == (1, 1, 2, 1, 2, 1)
    assert (SPACE.stem_channels, SPACE.head_channels) == (64, 256)


def test_largest_and_smallest() -> None:
    assert SPACE.largest().to_dict() == {"width": [64, 72, 96, 112, 128, 136], "kernel_size": [5] * 6,
                                         "depth": [2, 3, 3, 3, 4, 2], "expand_ratio": [1, 4, 6, 6, 6, 6]}
    assert SPACE.smallest().to_dict() == {"width": [56, 64, 88, 96, 112, 128], "kernel_size": [3] * 6,
                                          "depth": [1, 1, 1, 1, 2, 1], "expand_ratio": [1, 1, 4, 4, 6, 6]}


def test_named_archs_are_the_released_ones() -> None:
    assert NAMED_ARCHS["raft-k"].to_dict() == RAFT_K
    assert NAMED_ARCHS["raft-s"].to_dict() == RAFT_S
    assert all(SPACE.contains(a) for a in NAMED_ARCHS.values())


# ----------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("arch", _named_and_sampled(), ids=lambda a: a.id)
def test_json_and_id_round_trips(arch: ArchConfig) -> None:
    assert ArchConfig.from_json(arch.to_json()) == arch
    assert ArchConfig.from_dict(json.loads(arch.to_json())) == arch
    assert ArchConfig.from_id(arch.id) == arch
    assert resolve_arch(arch.id) == arch
    assert hash(ArchConfig.from_id(arch.id)) == hash(arch)


def test_id_format() -> None:
    assert NAMED_ARCHS["raft-k"].id == "w64.72.88.104.120.136-k3.5.3.5.5.5-d2.1.1.2.2.1-e1.4.6.5.6.6"


def test_lists_become_tuples_and_hash() -> None:
    arch = ArchConfig(**RAFT_K)
    assert arch.width == (64, 72, 88, 104, 120, 136)
    assert {arch: 1}[ArchConfig.from_dict(RAFT_K)] == 1


@pytest.mark.parametrize("bad", ["", "w64-k3", "w64.72.x-k3-d1-e1", "k3-w64-d1-e1", "w1..2-k3-d1-e1",
                                 "w64.72.88.104.120.136-k3.5.3.5.5.5-d2.1.1.2.2.1-e1.4.6.5.6"])
def test_malformed_ids(bad: str) -> None:
    with pytest.raises(ArchError, match="architecture id|one entry per stage"):
        ArchConfig.from_id(bad)


def test_malformed_id_message_says_id() -> None:
    with pytest.raises(ArchError, match=r"malformed architecture id 'w64\.72-k3'"):
        resolve_arch("w64.72-k3")


# ------------------------------------------------------------------------------------ validation
def _with(stage: int, key: str, value: int) -> ArchConfig:
    d = {k: list(v) for k, v in RAFT_K.items()}
    d[key][stage] = value
    return ArchConfig.from_dict(d)


def test_wrong_kernel_message() -> None:
    with pytest.raises(ArchError) as err:
        SPACE.validate(_with(2, "kernel_size", 7))
    assert str(err.value) == "stage 2 kernel_size=7 is not one of (3, 5)"


def test_wrong_width_message() -> None:
    with pytest.raises(ArchError) as err:
        SPACE.validate(_with(3, "width", 100))
    assert str(err.value) == "stage 3 width=100 is not one of (96, 104, 112)"
    assert not SPACE.contains(_with(3, "width", 100))


def test_wrong_length() -> None:
    d = {k: list(v) for k, v in RAFT_K.items()}
    d["depth"] = d["depth"][:5]
    with pytest.raises(ArchError, match="one entry per stage.*'depth': 5"):
        ArchConfig.from_dict(d)
    five = ArchConfig(*(v[:5] for v in RAFT_K.values()))
    with pytest.raises(ArchError, match="5 stages per gene, the space has 6"):
        SPACE.validate(five)


def test_unknown_and_missing_keys() -> None:
    with pytest.raises(ArchError, match="unknown architecture key 'ks'"):
        ArchConfig.from_dict({**RAFT_K, "ks": [3] * 6})
    missing = {k: v for k, v in RAFT_K.items() if k != "expand_ratio"}
    with pytest.raises(ArchError, match="missing key 'expand_ratio'"):
        ArchConfig.from_dict(missing)


def test_non_integer_genes_rejected() -> None:
    with pytest.raises(ArchError, match=r"width\[0\] must be an integer"):
        ArchConfig.from_dict({**RAFT_K, "width": [64.5, 72, 88, 104, 120, 136]})


# ------------------------------------------------------------------------------ random operators
def test_sampling_is_seeded_and_inside() -> None:
    a = [SPACE.sample(np.random.default_rng(7)) for _ in range(2)]
    assert a[0] == a[1] == SPACE.sample(7)
    rng = np.random.default_rng(0)
    samples = [SPACE.sample(rng) for _ in range(200)]
    assert all(SPACE.contains(s) for s in samples)
    assert len(set(samples)) > 190  # 80M architectures: repeats would mean a broken sampler
    assert {s.depth[4] for s in samples} == {2, 3, 4}


def test_sampling_rejects_global_rng() -> None:
    with pytest.raises(TypeError, match="np.random.Generator or an int seed"):
        SPACE.sample(None)  # type: ignore[arg-type]


def test_mutate_extremes_and_determinism() -> None:
    base = NAMED_ARCHS["raft-k"]
    assert SPACE.mutate(base, np.random.default_rng(1), prob=0.0) == base
    mutants = [SPACE.mutate(base, np.random.default_rng(i), prob=1.0) for i in range(30)]
    assert all(SPACE.contains(m) for m in mutants)
    assert any(m != base for m in mutants)
    assert SPACE.mutate(base, 3, prob=0.3) == SPACE.mutate(base, np.random.default_rng(3), prob=0.3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SPACE.mutate(base, 0, prob=1.5)


def test_mutate_rejects_arch_outside_space() -> None:
    with pytest.raises(ArchError, match="kernel_size=7"):
        SPACE.mutate(_with(0, "kernel_size", 7), 0)


def test_crossover_genes_come_from_parents() -> None:
    a, b = SPACE.smallest(), SPACE.largest()
    children = [SPACE.crossover(a, b, np.random.default_rng(i)) for i in range(20)]
    for child in children:
        for key in RAFT_K:
            for stage, value in enumerate(getattr(child, key)):
                assert value in (getattr(a, key)[stage], getattr(b, key)[stage])
    # Both parents contribute (chance of a whole child from one parent is 2**-24 per child).
    assert all(child not in (a, b) for child in children)
    assert SPACE.crossover(a, b, 5) == SPACE.crossover(a, b, np.random.default_rng(5))


# ----------------------------------------------------------------------------------------- blocks
def test_make_divisible_hand_cases() -> None:
    assert make_divisible(36) == 40  # int(40)//8*8 = 40
    assert make_divisible(12) == 16  # int(16)//8*8 = 16
    assert make_divisible(20) == 24  # int(24)//8*8 = 24
    assert make_divisible(9) == 16  # int(13)//8*8 = 8 < 0.9*9 = 8.1, so +8
    assert make_divisible(27) == 32  # int(31)//8*8 = 24 < 24.3, so +8
    assert make_divisible(26) == 24  # int(30)//8*8 = 24 >= 23.4
    assert make_divisible(3) == 8  # rounds to 0, floored at min_value = divisor
    assert make_divisible(432) == 432
    assert make_divisible(3, min_value=16) == 16


def test_expanded_channels_uses_bankers_round() -> None:
    # Built-in round() rounds halves to even: 17*0.5 = 8.5 -> 8 -> 8 channels, whereas rounding
    # half up would give 9 -> 16. Integer ratios (all of FlowNAS) never hit this.
    assert expanded_channels(17, 0.5) == 8
    assert expanded_channels(53, 0.5) == 24  # 26.5 -> 26 -> int(30)//8*8 = 24
    assert expanded_channels(64, 4) == 256


def test_raft_k_blocks_by_hand() -> None:
    blocks = NAMED_ARCHS["raft-k"].blocks()
    # (stage, index, slot, in, out, kernel, expand, mid, stride), worked out from FACTS §1:
    # stem 64; stage 0 has no expand conv (mid = in); mid = make_divisible(in * expand).
    expected = [
        (0, 0, 0, 64, 64, 3, 1, 64, 1),
        (0, 1, 1, 64, 64, 3, 1, 64, 1),
        (1, 0, 2, 64, 72, 5, 4, 256, 1),  # 64*4 = 256
        (2, 0, 5, 72, 88, 3, 6, 432, 2),  # 72*6 = 432 = 54*8
        (3, 0, 8, 88, 104, 5, 5, 440, 1),  # 88*5 = 440 = 55*8
        (3, 1, 9, 104, 104, 5, 5, 520, 1),  # 104*5 = 520
        (4, 0, 11, 104, 120, 5, 6, 624, 2),  # 104*6 = 624
        (4, 1, 12, 120, 120, 5, 6, 720, 1),  # 120*6 = 720
        (5, 0, 15, 120, 136, 5, 6, 720, 1),
    ]
    got = [(b.stage, b.index, b.slot, b.in_channels, b.out_channels, b.kernel_size, b.expand_ratio,
            b.mid_channels, b.stride) for b in blocks]
    assert got == expected
    assert len(blocks) == sum(RAFT_K["depth"]) == NAMED_ARCHS["raft-k"].num_blocks
    assert [b.has_expand for b in blocks] == [False, False] + [True] * 7


@pytest.mark.parametrize("name", NAMES)
def test_block_count_is_sum_of_depths(name: str) -> None:
    arch = resolve_arch(name)
    assert len(arch.blocks(SPACE)) == sum(arch.depth)
    assert [b.stride for b in arch.blocks()].count(2) == 2


# ------------------------------------------------------------------------------ custom spaces
CUSTOM = {"width": [[16, 24], [32]], "kernel_size": [[3], [3, 5, 7]], "depth": [[1], [1, 2]],
          "expand_ratio": [[1], [2, 3]], "strides": [2, 1]}


def test_custom_space_from_yaml(tmp_path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("width: [[16, 24], [32]]\nkernel_size: [[3], [3, 5, 7]]\n"
                    "depth: [[1], [1, 2]]\nexpand_ratio: [[1], [2, 3]]\nstrides: [2, 1]\nstem_channels: 16\n")
    space = SearchSpace.from_file(path)
    assert space.size() == 2 * 3 * 2 * 2
    assert space.stage_offsets == (0, 1) and space.num_slots == 3
    assert space.stem_channels == 16
    arch = space.sample(0)
    assert space.contains(arch) and not SPACE.contains(arch)
    assert resolve_arch("largest", space).to_dict() == {"width": [24, 32], "kernel_size": [3, 7],
                                                        "depth": [1, 2], "expand_ratio": [1, 3]}
    # stem 16 -> 24 (stage 0, no expand conv) -> 32 with mid = 24*3 = 72
    assert [b.mid_channels for b in resolve_arch("largest", space).blocks(space)] == [16, 72, 96]


def test_custom_space_from_json_round_trip(tmp_path) -> None:
    path = tmp_path / "space.json"
    path.write_text(json.dumps(CUSTOM))
    space = SearchSpace.from_file(path)
    assert SearchSpace.from_dict(space.to_dict()) == space
    assert space.to_dict()["kernel_size"] == [[3], [3, 5, 7]]
    assert SearchSpace.from_dict(SPACE.to_dict()) == SPACE


@pytest.mark.parametrize("text, problem", [
    ("{not json", "not valid JSON"),
    (json.dumps({k: v for k, v in CUSTOM.items() if k != "depth"}), "missing key 'depth'"),
    (json.dumps({**CUSTOM, "widths": [[1], [2]]}), "unknown search space key 'widths'"),
    (json.dumps({**CUSTOM, "kernel_size": [[3], []]}), "kernel_size of stage 1 must be a non-empty list"),
    (json.dumps({**CUSTOM, "depth": [[1]]}), "same number of stages"),
    (json.dumps({**CUSTOM, "strides": [2]}), "strides must be a list of 2 entries"),
    (json.dumps({**CUSTOM, "width": [[16, 16], [32]]}), "distinct positive integers"),
    (json.dumps([1, 2]), "must be a dict"),
])
def test_malformed_space_file(tmp_path, text: str, problem: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(SpaceError) as err:
        SearchSpace.from_file(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and problem in message and "\n" not in message


def test_malformed_yaml_and_missing_file(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("width: [[1, 2]\n  depth: :\n")
    with pytest.raises(SpaceError, match="bad.yaml: not valid YAML") as err:
        SearchSpace.from_file(path)
    assert "\n" not in str(err.value)
    with pytest.raises(SpaceError, match="nope.yaml: (cannot read|file not found)"):
        SearchSpace.from_file(tmp_path / "nope.yaml")


# ----------------------------------------------------------------------------------- resolve_arch
def test_resolve_forms(tmp_path) -> None:
    raft_k = NAMED_ARCHS["raft-k"]
    plain, wrapped = tmp_path / "arch.json", tmp_path / "result.json"
    plain.write_text(json.dumps(RAFT_K))
    wrapped.write_text(json.dumps({"arch": RAFT_K, "latency_ms": 3.2}))
    assert resolve_arch(raft_k) is raft_k
    assert resolve_arch("RAFT-K") == raft_k
    assert resolve_arch(RAFT_K) == raft_k
    assert resolve_arch({"arch": RAFT_K}) == raft_k
    assert resolve_arch(str(plain)) == resolve_arch(wrapped) == raft_k
    assert resolve_arch(json.dumps(RAFT_K)) == raft_k
    assert resolve_arch("largest") == SPACE.largest()
    assert resolve_arch("smallest") == SPACE.smallest()


def test_resolve_unknown_lists_names_and_forms() -> None:
    with pytest.raises(ArchError) as err:
        resolve_arch("raft-xl")
    message = str(err.value)
    for word in NAMES + ["id like w", "JSON", "dict"]:
        assert word in message
    with pytest.raises(ArchError, match="unknown architecture 42"):
        resolve_arch(42)


def test_resolve_validates_against_space(tmp_path) -> None:
    with pytest.raises(ArchError, match="stage 2 kernel_size=7"):
        resolve_arch(_with(2, "kernel_size", 7).to_dict())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**RAFT_K, "e": [1] * 6}))
    with pytest.raises(ArchError, match="bad.json: unknown architecture key 'e'"):
        resolve_arch(bad)


def test_arch_module_does_not_import_torch() -> None:
    code = "import sys, flownas.arch; assert 'torch' not in sys.modules, 'arch imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
