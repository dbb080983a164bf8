"""The search end to end at tiny settings: a micro table, a micro supernet, hardware in the loop, the outputs."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from bench.protocol import TimingConfig
from flownas.arch import SearchSpace
from flownas.genes import STAGE, Gene
from flownas.models import TINY_DECODER, FlowNASSupernet
from flownas.weights import load_model, save_checkpoint
from latency_tables.build import build_table
from latency_tables.predictor import LatencyTable
from nas import SearchRequest, SearchRunError, SubnetError, _choose, run_search

# Four encoder architectures (stage 1: one or two blocks, kernel 3 or 5), a table of a few keys at 128x128.
MICRO = SearchSpace(genes=(Gene("width", "w", STAGE, ((16,), (16,), (24,))),
                           Gene("kernel_size", "k", STAGE, ((3,), (3, 5), (3,))),
                           Gene("depth", "d", STAGE, ((1,), (1, 2), (1,))),
                           Gene("expand_ratio", "e", STAGE, ((1,), (2,), (2,)))),
                    strides=(1, 2, 2), stem_channels=16, head_channels=64)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("nas")
    table = build_table(MICRO, 128, 128, root / "table", threads=1, decoder=TINY_DECODER,
                        config=TimingConfig(warmup_runs=1, warmup_s=0.0, runs=3))
    torch.manual_seed(0)
    supernet = root / "supernet.pt"
    save_checkpoint(supernet, FlowNASSupernet(MICRO, TINY_DECODER))
    return root, Path(table), supernet


def _request(setup, out, **changes):
    root, table, supernet = setup
    values = dict(supernet=str(supernet), table=str(table), budget_ms=1e6, out=str(root / out), val_samples=1,
                  calibrate_bn=1, iters=2, iters_choices=(1, 2), population=3, generations=2, finalists=2,
                  threads=1, progress=False)
    values.update(changes)
    return SearchRequest(**values)


@pytest.mark.slow
def test_search_writes_every_output_and_the_best_is_rechecked_by_evaluate(setup):
    record = run_search(_request(setup, "run", export=True))
    out = Path(record.out)
    for name in ("best.json", "best.pt", "finalists.csv", "pareto.csv", "pareto.png", "history.csv", "search.json",
                 "best_subnet.onnx"):
        assert (out / name).is_file(), name
    best = json.loads((out / "best.json").read_text())
    assert best["measured_ms"] <= 1e6 and best["iters"] in (1, 2)
    finalists = list(csv.DictReader((out / "finalists.csv").open()))
    assert len(finalists) == 2 and all(float(r["measured_ms"]) > 0 for r in finalists)
    # The reported EPE is what the fitness computes for that subnet (the same function evaluate --supernet uses).
    supernet = load_model(setup[2])
    from flownas.data.datasets import build_dataset
    from flownas.evaluate import evaluate_subnet

    subnet = load_model(out / "best.pt")
    assert subnet.arch.id == best["id"]
    summary, _ = evaluate_subnet(supernet, subnet.arch, build_dataset("synthetic", None), iters=best["iters"],
                                 max_samples=1, calibrate_bn=1)
    assert summary["epe"] == pytest.approx(best["epe"], rel=1e-6)
    assert (out / "bench" / "report.md").is_file()


@pytest.mark.slow
def test_a_budget_no_finalist_meets_on_the_device_fails_with_the_measurements_written(setup):
    table = LatencyTable.load(setup[1])
    cheapest = min(table.predict(MICRO.restrict(a), 1) for a in (MICRO.smallest(), MICRO.largest()))
    # Predictions are scaled down 1000x by a fake calibration: every candidate looks feasible, none is.
    manifest = json.loads((setup[1] / "table.json").read_text())
    manifest["calibration"] = {"scale": 1e-3, "offset_ms": 0.0}
    lying = setup[0] / "lying"
    lying.mkdir(exist_ok=True)
    (lying / "table.json").write_text(json.dumps(manifest))
    (lying / "table.csv").write_text((setup[1] / "table.csv").read_text())
    with pytest.raises(SearchRunError, match="none of the 2 finalists meets"):
        run_search(_request(setup, "lying-run", table=str(lying), budget_ms=cheapest / 10))
    assert (setup[0] / "lying-run" / "finalists.csv").is_file()


def test_choose_drops_over_budget_flags_bad_predictions_and_reranks_by_epe():
    rows = [{"arch_id": "a", "epe": 1.0, "predicted_ms": 100.0, "measured_ms": 130.0, "error_pct": -23.0},
            {"arch_id": "b", "epe": 2.0, "predicted_ms": 90.0, "measured_ms": 95.0, "error_pct": -5.3},
            {"arch_id": "c", "epe": 1.5, "predicted_ms": 99.0, "measured_ms": 99.5, "error_pct": -0.5}]
    kept = _choose(rows, budget_ms=100.0)
    assert [r["arch_id"] for r in kept] == ["c", "b"]
    assert rows[0]["flagged"] and not rows[0]["within_budget"] and not rows[2]["flagged"]


def test_fitness_uses_the_iteration_gene_and_the_default_otherwise():
    supernet = FlowNASSupernet(MICRO, TINY_DECODER)
    from flownas.data.synthetic import SyntheticFlow

    fitness = SubnetError(supernet, SyntheticFlow(length=2, size=(128, 128), seed=1), iters=3, max_samples=1,
                          calibrate_bn=1)
    searched = MICRO.with_genes(Gene("iters", "i", "global", (1, 2)))
    arch = searched.largest()
    assert fitness.split(arch) == (MICRO.largest(), 2)
    assert fitness.split(MICRO.largest()) == (MICRO.largest(), 3)


def test_bad_requests_are_one_line_errors(setup, tmp_path):
    from flownas.errors import UserInputError

    with pytest.raises(UserInputError, match="budget"):
        run_search(_request(setup, "x", budget_ms=0))
    with pytest.raises(UserInputError, match="not found"):
        run_search(_request(setup, "x", table=str(tmp_path / "nowhere")))


# --------------------------------------------------------------------------------------------- precision gene
@pytest.fixture(scope="module")
def int8_table(setup):
    root, _, _ = setup
    return Path(build_table(MICRO, 128, 128, root / "table-int8", threads=1, decoder=TINY_DECODER, precision="int8",
                            config=TimingConfig(warmup_runs=1, warmup_s=0.0, runs=3)))


@pytest.mark.slow
def test_each_precision_is_predicted_on_its_own_table_and_mismatches_are_refused(setup, int8_table):
    from latency_tables.measure import LatencyTableError
    from latency_tables.search_latency import TableLatency, precision_gene

    fp32, int8 = LatencyTable.load(setup[1]), LatencyTable.load(int8_table)
    latency = TableLatency(fp32, default_iters=2, precision_tables={"int8": int8})
    space = MICRO.with_genes(precision_gene(latency.precisions))
    archs = [space.sample(seed) for seed in range(6)]
    expected = [(int8 if a.to_dict()["bits"] == 8 else fp32).predict(MICRO.restrict(a), 2) for a in archs]
    assert {a.to_dict()["bits"] for a in archs} == {8, 32}
    assert latency(archs) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(LatencyTableError, match="table precision is 'fp32', but it was given as the int8 table"):
        TableLatency(fp32, precision_tables={"int8": fp32})


@pytest.mark.slow
def test_search_with_a_precision_gene_measures_the_penalty_and_each_finalist_in_its_precision(setup, int8_table):
    record = run_search(_request(setup, "precision", precision_tables={"int8": str(int8_table)}, iters_choices=None,
                                 population=4, generations=0, finalists=4, max_epe_delta=1e6))
    out = Path(record.out)
    history = list(csv.DictReader((out / "history.csv").open()))
    assert any(r["arch_id"].endswith("-q8") for r in history) and any(r["arch_id"].endswith("-q32") for r in history)
    assert len(record.finalists) == len(history)  # every candidate is a finalist: both precisions are exported
    for row in record.finalists:
        assert row["precision"] == ("int8" if row["arch_id"].endswith("-q8") else "fp32")
        if row["precision"] == "int8":  # exported with Q/DQ, EPE = fp32 EPE + its own measured flow change
            assert row["epe"] == pytest.approx(row["epe_fp32"] + row["epe_delta"]) and row["epe_delta"] > 0
            assert "QuantizeLinear" in {n.op_type for n in __import__("onnx").load(row["onnx"]).graph.node}
        else:
            assert row["epe_delta"] == 0.0
    best = json.loads((out / "best.json").read_text())
    assert best["precision"] in ("fp32", "int8") and best["provenance"]["precision"] == best["precision"]
