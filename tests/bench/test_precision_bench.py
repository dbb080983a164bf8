"""The precision benchmark's verdict (bench.precision.goals) on hand-made records: a plan counts only when it is
>= 2x faster than FP32 and changes the flow by <= 0.05 px on both RubberWhale and the synthetic pairs."""
from __future__ import annotations

from bench.precision import _summary, goals


def _variant(speedup: float, rw: float, syn: tuple[float, float]) -> dict:
    pairs = {"RubberWhale": {"delta": rw, "epe": 1.0}}
    pairs.update({f"synthetic-{i}": {"delta": d, "epe": 2.0} for i, d in enumerate(syn)})
    return {"speedup": speedup, "pairs": pairs}


def test_summary_averages_the_synthetic_pairs():
    s = _summary(_variant(1.0, 0.02, (0.01, 0.03)))
    assert s["rw_delta"] == 0.02 and abs(s["syn_delta"] - 0.02) < 1e-12 and s["syn_epe"] == 2.0


def test_goal_needs_both_speed_and_accuracy():
    fast_but_drifting = {"name": "a", "variants": {"fp32": _variant(1.0, 0, (0, 0)),
                                                   "int8": _variant(2.5, 0.04, (0.06, 0.06)),
                                                   "head": _variant(1.1, 0.01, (0.01, 0.01))}}
    both = {"name": "b", "variants": {"fp32": _variant(1.0, 0, (0, 0)), "int8": _variant(2.1, 0.05, (0.04, 0.05))}}
    lines = goals([fast_but_drifting, both])
    assert "- a: NOT met. Fastest plan within 0.05 px: head, 1.10x" in lines[2]
    assert "fastest measured: int8, 2.50x" in lines[2]
    assert lines[3].startswith("- b: met. Fastest plan within 0.05 px: int8, 2.10x")
