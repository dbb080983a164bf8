"""Precision as a field of table keys and manifests: `lut build --precision int8` lowers every key graph the way
the exported network is lowered, the table records the plan, and the predictor refuses a table of another
precision (or one whose rows disagree with its manifest)."""
from __future__ import annotations

import csv
import json
from collections import Counter

import onnx
import pytest

from bench.protocol import TimingConfig
from export.precision_plan import ALWAYS_FP32_OPS, PrecisionPlan
from flownas.models import TINY_DECODER
from latency_tables.build import build_table
from latency_tables.commands import add_lut_parser
from latency_tables.keys import Key, all_keys, key_precision, with_precision
from latency_tables.measure import LatencyTableError
from latency_tables.predictor import LatencyTable
from tests_helpers import MICRO

SIZE = (64, 64)
QUICK = TimingConfig(warmup_runs=1, warmup_s=0.0, runs=2)


def test_key_ids_carry_a_reduced_precision_and_old_records_read_as_fp32():
    key = all_keys(MICRO, *SIZE, decoder=TINY_DECODER)[0]
    assert key.precision == "fp32" and key.id == key.unit_id
    lowered = with_precision([key], {"stem": "int8"})[0]
    assert lowered.id == key.id + ".int8" and lowered.unit_id == key.unit_id
    old = {k: v for k, v in key.to_dict().items() if k != "precision"}  # a table.csv row from before the field
    assert Key.from_dict(old) == key
    assert Key.from_dict(lowered.to_dict()) == lowered


def test_decoder_keys_take_their_groups_precision_or_mixed():
    assert key_precision("step", {"gru": "int8", "motion_encoder": "int8", "flow_head": "int8",
                                  "mask_head": "int8"}) == "int8"
    assert key_precision("step", {"gru": "int8"}) == "mixed"
    assert key_precision("block", {"gru": "int8"}) == "fp32"
    assert key_precision("head", {"encoder_head": "fp16"}) == "fp16"


@pytest.fixture(scope="module")
def int8_table(tmp_path_factory):
    return build_table(MICRO, *SIZE, tmp_path_factory.mktemp("lut") / "int8", config=QUICK, threads=1,
                       decoder=TINY_DECODER, precision="int8")


def _graph_ops(path):
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


@pytest.mark.slow
def test_an_int8_table_lowers_its_key_graphs_and_records_the_plan(int8_table):
    manifest = json.loads((int8_table / "table.json").read_text())
    assert manifest["precision"] == "int8" and set(manifest["precision_plan"].values()) == {"int8"}
    keys = json.loads((int8_table / "manifest.json").read_text())
    assert keys["precision"] == "int8"
    with (int8_table / "table.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["precision"] for row in rows} == {"int8"}
    assert all(row["id"].endswith(".int8") for row in rows)
    for entry in keys["graphs"]:
        ops = _graph_ops(int8_table / entry["file"])
        assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0, entry["id"]
        if entry["key"]["kind"] == "step":  # correlation lookup and softmax still FP32: no DQ feeds them
            model = onnx.load(str(int8_table / entry["file"]))
            dq = {out for n in model.graph.node if n.op_type == "DequantizeLinear" for out in n.output}
            readers = {n.op_type for n in model.graph.node if set(n.input) & dq}
            assert "Conv" in readers and not readers & ALWAYS_FP32_OPS
    for empty in keys["empties"].values():  # overhead graphs stay FP32
        assert _graph_ops(int8_table / empty)["QuantizeLinear"] == 0


@pytest.mark.slow
def test_the_predictor_refuses_a_table_of_another_precision(int8_table):
    table = LatencyTable.load(int8_table, precision="int8")
    assert table.predict(MICRO.largest(), 3) > 0
    with pytest.raises(LatencyTableError, match="precision is 'int8', requested 'fp32'"):
        LatencyTable.load(int8_table, precision="fp32")


@pytest.mark.slow
def test_rows_disagreeing_with_the_manifest_are_refused(int8_table, tmp_path):
    copy = tmp_path / "t"
    copy.mkdir()
    (copy / "table.json").write_text((int8_table / "table.json").read_text())
    text = (int8_table / "table.csv").read_text()
    lines = text.splitlines()
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index("precision")] = "fp32"
    (copy / "table.csv").write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    with pytest.raises(LatencyTableError, match=r"table.csv:2: key .* measured at fp32, but the table's manifest "
                                                 r"says int8"):
        LatencyTable.load(copy)


def test_reduced_precision_is_refused_on_torch_backends_and_bf16_before_any_work(tmp_path):
    with pytest.raises(LatencyTableError, match="backend torch-cpu times PyTorch modules in fp32"):
        build_table(MICRO, *SIZE, tmp_path / "t", backend="torch-cpu", decoder=TINY_DECODER, precision="int8")
    with pytest.raises(Exception, match="bf16"):
        build_table(MICRO, *SIZE, tmp_path / "b", decoder=TINY_DECODER, precision=PrecisionPlan.uniform("bf16"))
    assert not (tmp_path / "t").exists() and not (tmp_path / "b").exists()


def test_lut_build_takes_precision(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    add_lut_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["lut", "build", "--resolution", "64x64", "--out", str(tmp_path), "--precision", "int8"])
    assert args.precision == "int8"
