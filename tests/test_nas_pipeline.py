"""`pipeline` at tiny settings: every stage runs, writes its outputs, and a re-run skips what is done."""
from __future__ import annotations

import json

import pytest

from nas_pipeline import PipelineConfig, PipelineError, run_pipeline

TINY = dict(supernet_model="tiny-supernet", teacher_model="tiny-flownas", resolution=[128, 128], threads=1,
            table_runs=2, teacher_steps=2, supernet_steps=2, train_image_size=[128, 128], train_iters=2,
            iters_choices=[1, 2], population=3, generations=1, val_samples=1, calibrate_bn=1, finalists=2,
            budget_ms=1e6)  # tiny graphs are all overhead: a budget between them would test the machine's load


@pytest.mark.slow
def test_pipeline_runs_every_stage_and_resumes(tmp_path):
    lines = []
    record = run_pipeline(PipelineConfig(out=str(tmp_path), **TINY), log=lines.append)
    for name in ("report.md", "pipeline.json", "table/table.json", "teacher/last.pt", "supernet/last.pt",
                 "search/best.json", "search/best_subnet.onnx", "search/pareto.png", "search/references.csv"):
        assert (tmp_path / name).is_file(), name
    best = record["stages"]["search"]["best"]
    assert best["measured_ms"] <= record["stages"]["search"]["budget_ms"]
    report = (tmp_path / "report.md").read_text()
    assert best["arch_id"] in report and "largest" in report and "| smallest |" in report
    again = []
    run_pipeline(PipelineConfig(out=str(tmp_path), **TINY), log=again.append)
    assert any("teacher" in line and "skipped" in line for line in again)
    assert not any("measuring every key" in line for line in again)
    assert json.loads((tmp_path / "pipeline.json").read_text())["stages"]["table"]["origin"] == "built earlier"


def test_pipeline_config_refuses_unknown_keys_and_wrong_types(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("populaton: 3\n")
    with pytest.raises(PipelineError, match="unknown key 'populaton'"):
        PipelineConfig.load(str(path))
    path.write_text("population: many\n")
    with pytest.raises(PipelineError, match="'population' = 'many' should be int"):
        PipelineConfig.load(str(path))
    with pytest.raises(PipelineError, match="not found"):
        PipelineConfig.load(str(tmp_path / "missing.yaml"))
    assert PipelineConfig.load(None, {"out": "x", "device": None}).out == "x"


@pytest.mark.parametrize("recorded, reused", [({}, True), ({"cpu_isa": "avx2 fma"}, True),
                                              ({"cpu_isa": "avx2 fma avx512f avx512_vnni"}, False),
                                              ({"device": "another CPU"}, False), ({"threads": 2}, False)])
def test_the_shipped_table_is_reused_only_on_the_cpu_it_was_measured_on(tmp_path, monkeypatch, recorded, reused):
    import flownas.provenance
    import nas_pipeline

    monkeypatch.setattr(flownas.provenance, "cpu_model", lambda: "AMD EPYC")
    monkeypatch.setattr(flownas.provenance, "cpu_features", lambda cpuinfo=None: ("avx2", "fma"))
    shipped = tmp_path / "shipped" / "ort-cpu-128x128"
    shipped.mkdir(parents=True)
    (shipped / "table.json").write_text(json.dumps({"device": "AMD EPYC", "threads": 1, **recorded}))
    monkeypatch.setattr(nas_pipeline, "SHIPPED_TABLES", tmp_path / "shipped")
    built = tmp_path / "out" / "table"  # a table built here earlier: what is used when the shipped one is not
    built.mkdir(parents=True)
    (built / "table.json").write_text("{}")
    lines = []
    folder, origin = nas_pipeline._stage_table(PipelineConfig(resolution=[128, 128], threads=1), tmp_path / "out",
                                               lines.append)
    assert (folder, origin) == ((str(shipped), "shipped") if reused else (str(built), "built earlier"))
    assert reused or "building one here" in lines[0]
