"""A tiny table built, measured and predicted at 128x128 end to end; prediction is the sum of its parts;
mismatched manifests and missing keys are refused with the field or key named."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from bench.protocol import TimingConfig
from flownas.models import TINY_DECODER
from flownas.registry import TINY_SPACE
from latency_tables.keys import encoder_keys, fixed_keys
from latency_tables.measure import LatencyTableError, measure_keys
from latency_tables.predictor import LatencyTable
from latency_tables.table import assemble, write_key_graphs

SIZE = (128, 128)
COVERED = [TINY_SPACE.smallest(), TINY_SPACE.largest()]


@pytest.fixture(scope="module")
def table_dir(tmp_path_factory):
    keys = [k for arch in COVERED for k in encoder_keys(arch, TINY_SPACE, *SIZE, decoder=TINY_DECODER)]
    folder = write_key_graphs(keys + fixed_keys(*SIZE, decoder=TINY_DECODER), tmp_path_factory.mktemp("t"),
                              TINY_DECODER, TINY_SPACE)
    measure_keys(folder, config=TimingConfig(warmup_runs=1, warmup_s=0.0, runs=3), threads=1)
    return assemble(folder)


def _rows(table_dir):
    with (table_dir / "table.csv").open() as handle:
        return list(csv.DictReader(handle))


def _expected_ms(rows, arch, iters):
    """Independent sum: rows matched on their fields to `arch.blocks`, the stems, heads and decoder rows."""
    def one(**match):
        found = [r for r in rows if all(r[k] == str(v) for k, v in match.items())]
        assert len(found) == 1, match
        return float(found[0]["latency_ms"])

    total = 0.0
    for encoder in ("fnet", "cnet"):
        total += one(kind="stem", encoder=encoder)
        for b in arch.blocks(TINY_SPACE):
            total += one(kind="block", encoder=encoder, stage=b.stage, first=b.index == 0, in_channels=b.in_channels,
                         out_channels=b.out_channels, kernel=b.kernel_size, expand=b.expand_ratio)
        total += one(kind="head", encoder=encoder, in_channels=arch.blocks(TINY_SPACE)[-1].out_channels)
    return total + one(kind="prologue") + iters * one(kind="step")


@pytest.mark.parametrize("iters", [1, 4, 12])
def test_prediction_is_the_sum_of_its_parts(table_dir, iters):
    table = LatencyTable.load(table_dir, backend="ort-cpu", precision="fp32", resolution=SIZE)
    rows = _rows(table_dir)
    for arch in COVERED:
        assert table.predict(arch, iters) == pytest.approx(_expected_ms(rows, arch, iters), rel=1e-12)
        parts = table.breakdown(arch, iters)
        assert list(parts)[:2] == ["fnet.stem", "fnet.stage0"] and list(parts)[-2:] == ["prologue", "steps"]
        assert sum(parts.values()) == pytest.approx(table.predict(arch, iters), rel=1e-12)
        assert all(v >= 0 for v in parts.values())
    step = float(next(r for r in rows if r["kind"] == "step")["latency_ms"])
    assert table.predict(COVERED[0], iters + 1) - table.predict(COVERED[0], iters) == pytest.approx(step)


@pytest.mark.parametrize("field,value", [("backend", "ort-cuda"), ("device", "Jetson Orin"), ("precision", "fp16"),
                                         ("resolution", (384, 512))])
def test_mismatched_manifest_is_refused_unless_forced(table_dir, field, value):
    have = json.loads((table_dir / "table.json").read_text())[field]
    with pytest.raises(LatencyTableError) as err:
        LatencyTable.load(table_dir, **{field: value})
    message = str(err.value)
    assert "\n" not in message and field in message and repr(have) in message
    assert repr(list(value) if field == "resolution" else value) in message
    assert LatencyTable.load(table_dir, force=True, **{field: value}).predict(COVERED[0], 2) > 0


def test_a_missing_key_is_an_error_naming_it(table_dir):
    table = LatencyTable.load(table_dir)
    rng = np.random.default_rng(0)
    for _ in range(100):
        arch = TINY_SPACE.sample(rng)
        missing = [k.id for k in encoder_keys(arch, TINY_SPACE, *SIZE, decoder=TINY_DECODER)
                   if k.id not in table.latencies]
        if missing:
            break
    assert missing, "every sampled architecture is covered: pick a smaller covered set"
    with pytest.raises(LatencyTableError, match=missing[0].replace(".", r"\.")) as err:
        table.predict(arch, 4)
    assert arch.id in str(err.value)


def test_a_table_without_files_or_a_bad_iteration_count_is_refused(table_dir, tmp_path):
    with pytest.raises(LatencyTableError, match="table.json"):
        LatencyTable.load(tmp_path)
    with pytest.raises(ValueError, match="iters"):
        LatencyTable.load(table_dir).predict(COVERED[0], 0)


def _calibrated_copy(table_dir, tmp_path, calibration):
    """A copy of the table whose table.json carries `calibration` (as latency_tables.validate writes it)."""
    manifest = json.loads((table_dir / "table.json").read_text())
    manifest["calibration"] = calibration
    (tmp_path / "table.json").write_text(json.dumps(manifest))
    (tmp_path / "table.csv").write_bytes((table_dir / "table.csv").read_bytes())
    return tmp_path


def test_calibration_is_applied_and_the_breakdown_still_sums_to_the_total(table_dir, tmp_path):
    copy = _calibrated_copy(table_dir, tmp_path, {"scale": 1.25, "offset_ms": -0.5, "n": 8, "r2": 0.99})
    raw_table, table = LatencyTable.load(table_dir), LatencyTable.load(copy)
    for arch in COVERED:
        raw = _expected_ms(_rows(table_dir), arch, 4)
        assert table.predict(arch, 4, calibrated=False) == pytest.approx(raw, rel=1e-12)
        assert table.predict(arch, 4) == pytest.approx(1.25 * raw - 0.5, rel=1e-12)
        parts = table.breakdown(arch, 4)
        assert list(parts)[-1] == "calibration" and parts["calibration"] == pytest.approx(0.25 * raw - 0.5)
        assert sum(parts.values()) == pytest.approx(table.predict(arch, 4), rel=1e-12)
        assert "calibration" not in table.breakdown(arch, 4, calibrated=False)
        assert raw_table.predict(arch, 4) == raw_table.predict(arch, 4, calibrated=False)


def test_a_malformed_calibration_is_refused_naming_it(table_dir, tmp_path):
    copy = _calibrated_copy(table_dir, tmp_path, {"scale": "steep"})
    with pytest.raises(LatencyTableError, match="calibration"):
        LatencyTable.load(copy)
