"""Validation of a latency table: a tiny table built, predicted and validated end to end at 128x128 (metrics
recomputed here from the written CSV), the pass/fail thresholds on hand-made errors, and the calibration fit."""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from bench.protocol import TimingConfig
from flownas.arch import resolve_arch
from flownas.models import TINY_DECODER
from flownas.registry import TINY_SPACE
from latency_tables.keys import encoder_keys, fixed_keys
from latency_tables.measure import LatencyTableError, measure_keys
from latency_tables.predictor import LatencyTable
from latency_tables.table import assemble, write_key_graphs
from latency_tables.validate import (KENDALL_TAU_MIN, MAX_ABS_PCT, WITHIN_5_MIN_SHARE, add_validate_args,
                                     check_thresholds, compute_metrics, fit_linear, run_validate, sample_archs,
                                     validate_table, write_calibration)

FAST = TimingConfig(warmup_runs=1, warmup_s=0.0, runs=3, duration_s=0.0)
SIZE = (128, 128)
SAMPLES, SEED = 3, 0
CALIBRATION = 2  # archs of `lut validate --calibrate 2 --seed 0`: seed 1000


@pytest.fixture(scope="module")
def table_dir(tmp_path_factory) -> Path:
    """A table holding exactly the keys of the archs validation and calibration will sample, and the decoder's."""
    archs = sample_archs(TINY_SPACE, SAMPLES, SEED) + sample_archs(TINY_SPACE, CALIBRATION, 1000 + SEED)
    keys = [k for a in archs for k in encoder_keys(a, TINY_SPACE, *SIZE, decoder=TINY_DECODER)]
    folder = write_key_graphs(keys + fixed_keys(*SIZE, decoder=TINY_DECODER), tmp_path_factory.mktemp("lut"),
                              TINY_DECODER, TINY_SPACE)
    measure_keys(folder, config=FAST, threads=1, remeasure_cv=None)
    return assemble(folder)


@pytest.fixture(scope="module")
def report(table_dir):
    return validate_table(table_dir, samples=SAMPLES, seed=SEED, iters=2, config=FAST)


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def test_sample_archs_are_distinct_seeded_and_skip_excluded():
    first = sample_archs(TINY_SPACE, 4, 7)
    assert [a.id for a in first] == [a.id for a in sample_archs(TINY_SPACE, 4, 7)]
    assert len({a.id for a in first}) == 4
    other = sample_archs(TINY_SPACE, 4, 7, exclude=[a.id for a in first[:2]])
    assert not {a.id for a in other} & {a.id for a in first[:2]}


def test_tiny_table_validates_end_to_end(report, table_dir):
    out = table_dir / "validation"
    assert report.out == out
    for name in ("validation.csv", "scatter.png", "summary.md", "validation.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    assert (out / "scatter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(table_dir.glob(".*scratch")) and not list(out.glob("*.onnx"))  # exports were scratch only
    rows = _rows(out / "validation.csv")
    table = LatencyTable.load(table_dir)
    assert [r["arch_id"] for r in rows] == [a.id for a in sample_archs(TINY_SPACE, SAMPLES, SEED)]
    for row in rows:  # predictions are the table's, at the requested iterations; measurements are real timings
        assert float(row["predicted_ms"]) == pytest.approx(table.predict(resolve_arch(row["arch_id"], TINY_SPACE), 2))
        assert float(row["measured_ms"]) > 0 and int(row["runs"]) >= FAST.runs
    p = np.array([float(r["predicted_ms"]) for r in rows])
    m = np.array([float(r["measured_ms"]) for r in rows])
    err = (p - m) / m * 100
    np.testing.assert_allclose([float(r["error_pct"]) for r in rows], err)
    x = report.metrics
    assert x["mape_pct"] == pytest.approx(np.mean(np.abs(err)))
    assert x["max_abs_pct"] == pytest.approx(np.max(np.abs(err)))
    assert x["within_5_share"] == pytest.approx(np.mean(np.abs(err) <= 5))
    assert x["within_10_share"] == pytest.approx(np.mean(np.abs(err) <= 10))
    assert x["kendall_tau"] == pytest.approx(stats.kendalltau(p, m)[0])
    assert x["spearman_rho"] == pytest.approx(stats.spearmanr(p, m)[0])
    expected = (np.max(np.abs(err)) <= 10 and np.mean(np.abs(err) <= 5) >= 0.95
                and stats.kendalltau(p, m)[0] >= 0.9)
    assert report.passed == expected
    summary = (out / "summary.md").read_text()
    assert ("PASSED" if expected else "FAILED") in summary and f"{x['mape_pct']:.2f}%" in summary
    record = json.loads((out / "validation.json").read_text())
    assert record["kind"] == "latency-validation" and record["resolution"] == list(SIZE) and record["iters"] == 2
    assert record["threads"] == 1 == record["table_threads"]  # the table's thread count by default


def test_validation_skips_the_calibration_archs(table_dir, tmp_path):
    copy = tmp_path / "t"
    copy.mkdir()
    for name in ("table.csv", "table.json"):
        (copy / name).write_bytes((table_dir / name).read_bytes())
    used = sample_archs(TINY_SPACE, SAMPLES, SEED)
    write_calibration(copy, {"scale": 1.0, "offset_ms": 0.0, "samples": 1, "seed": 5, "arch_ids": [used[0].id]})
    with pytest.raises(LatencyTableError, match="no key"):  # the replacement arch is not in the tiny table
        validate_table(copy, samples=SAMPLES, seed=SEED, iters=2, config=FAST)


def _metrics(predicted, measured):
    return check_thresholds(compute_metrics(predicted, measured))


def test_thresholds_on_hand_made_errors():
    measured = np.arange(1, 21) * 10.0
    assert all(_metrics(measured * 1.04, measured).values())  # all within 4%, same order: passes
    one_off = measured * 1.04
    one_off[5] = measured[5] * 1.11
    checks = _metrics(one_off, measured)
    assert checks == {"all_within_10": False, "within_5_share": True, "kendall_tau": True}
    two_at_6 = measured * 0.97
    two_at_6[[3, 9]] = measured[[3, 9]] * 1.06  # 18/20 = 90% within 5% < 95%
    assert _metrics(two_at_6, measured) == {"all_within_10": True, "within_5_share": False, "kendall_tau": True}
    close = 100.0 + np.arange(20) * 0.1  # measured nearly equal; predicted within 2% but in reverse order
    assert _metrics(close[::-1], close) == {"all_within_10": True, "within_5_share": True, "kendall_tau": False}
    assert (MAX_ABS_PCT, WITHIN_5_MIN_SHARE, KENDALL_TAU_MIN) == (10.0, 0.95, 0.9)


def test_calibration_fit_recovers_scale_and_offset_and_the_table_applies_it(table_dir, tmp_path):
    raw = np.array([3.0, 5.5, 8.0, 13.25, 21.0])
    scale, offset = fit_linear(raw, 1.25 * raw + 0.75)
    assert scale == pytest.approx(1.25, abs=1e-12) and offset == pytest.approx(0.75, abs=1e-12)
    narrow = np.array([10.0, 10.2, 10.4])  # predictions within 4%: only a ratio is determined
    ratio, no_offset = fit_linear(narrow, 1.05 * narrow)
    assert ratio == pytest.approx(1.05, abs=1e-12) and no_offset == 0.0
    with pytest.raises(LatencyTableError, match="positive predictions"):
        fit_linear([], [])
    copy = tmp_path / "t"
    copy.mkdir()
    for name in ("table.csv", "table.json"):
        (copy / name).write_bytes((table_dir / name).read_bytes())
    before = json.loads((copy / "table.json").read_text())
    write_calibration(copy, {"scale": scale, "offset_ms": offset, "samples": 5, "seed": 1000, "fitted_at": "x"})
    after = json.loads((copy / "table.json").read_text())
    assert {k: v for k, v in after.items() if k != "calibration"} == before
    arch = sample_archs(TINY_SPACE, 1, SEED)[0]
    table = LatencyTable.load(copy)
    assert table.predict(arch, 2) == pytest.approx(1.25 * table.predict(arch, 2, calibrated=False) + 0.75)


def test_cli_options_parse():
    parser = argparse.ArgumentParser()
    add_validate_args(parser)
    args = parser.parse_args(["--table", "T", "--samples", "4", "--seed", "3", "--iters", "4", "--calibrate", "5",
                              "--out", "O", "--threads", "2", "--runs", "7"])
    assert (args.table, args.samples, args.seed, args.iters, args.calibrate, args.out, args.threads, args.runs) == \
        ("T", 4, 3, 4, 5, "O", 2, 7)
    defaults = parser.parse_args(["--table", "T"])
    assert (defaults.samples, defaults.seed, defaults.iters, defaults.calibrate, defaults.threads) == \
        (30, 0, None, 0, None)
    assert all(a.help for a in parser._actions if a.dest != "help")


def test_cli_calibrates_then_validates(table_dir, tmp_path, capsys):
    copy = tmp_path / "t"
    copy.mkdir()
    for name in ("table.csv", "table.json"):
        (copy / name).write_bytes((table_dir / name).read_bytes())
    parser = argparse.ArgumentParser()
    add_validate_args(parser)
    args = parser.parse_args(["--table", str(copy), "--samples", str(SAMPLES), "--iters", "2", "--calibrate",
                              str(CALIBRATION), "--runs", "3", "--out", str(tmp_path / "report")])
    code = run_validate(args)
    entry = json.loads((copy / "table.json").read_text())["calibration"]
    calibration_archs = sample_archs(TINY_SPACE, CALIBRATION, 1000 + SEED)
    assert entry["arch_ids"] == [a.id for a in calibration_archs] and entry["seed"] == 1000
    raw = [LatencyTable.load(copy).predict(a, 2, calibrated=False) for a in calibration_archs]
    np.testing.assert_allclose(entry["raw_ms"], raw)
    scale, offset = entry["scale"], entry["offset_ms"]
    p, m = np.asarray(entry["raw_ms"]), np.asarray(entry["measured_ms"])
    assert offset == 0.0  # two architectures: only a ratio is fitted, so its residual is orthogonal to the predictions
    assert abs(float((p * (m - scale * p)).sum())) <= 1e-9 * float((m * p).sum())
    rows = _rows(tmp_path / "report" / "validation.csv")
    assert not {r["arch_id"] for r in rows} & set(entry["arch_ids"])  # held out from the calibration
    for row in rows:  # validation compares the calibrated prediction
        assert float(row["predicted_ms"]) == pytest.approx(scale * float(row["predicted_raw_ms"]) + offset)
    passed = json.loads((tmp_path / "report" / "validation.json").read_text())["passed"]
    assert code == (0 if passed else 1)
    assert "Latency table validation" in capsys.readouterr().out


def test_a_torch_cpu_table_validates_on_torch_cpu(tmp_path):
    """Keys and whole networks timed the same way on PyTorch: the validation runs the modules, not ONNX."""
    archs = sample_archs(TINY_SPACE, 2, SEED)
    keys = [k for a in archs for k in encoder_keys(a, TINY_SPACE, *SIZE, decoder=TINY_DECODER)]
    folder = write_key_graphs(keys + fixed_keys(*SIZE, decoder=TINY_DECODER), tmp_path / "keys", TINY_DECODER,
                              TINY_SPACE)
    measure_keys(folder, backend="torch-cpu", config=FAST, threads=1, remeasure_cv=None)
    table = assemble(folder, backend="torch-cpu")
    report = validate_table(table, samples=2, seed=SEED, iters=2, backend="torch-cpu", config=FAST, threads=1)
    assert len(report.rows) == 2 and all(r["measured_ms"] > 0 for r in report.rows)
    assert json.loads((Path(table) / "validation" / "validation.json").read_text())["backend"] == "torch-cpu"
    with pytest.raises(LatencyTableError, match="backend"):
        validate_table(table, samples=1, backend="ort-cpu", config=FAST)
