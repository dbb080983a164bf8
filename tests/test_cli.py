"""The command line, run in-process: outputs on real and synthetic data, and one-line errors."""
from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import cli
from conftest import random_published_state
from flownas.arch import resolve_arch
from flownas.data.flow_io import read_flow, read_image, write_image
from flownas.data.synthetic import make_pair, write_pair
from flownas.weights import save_checkpoint
from flownas.models import RAFT

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    torch.manual_seed(0)
    return str(save_checkpoint(tmp_path_factory.mktemp("w") / "raft-small.pt", RAFT(small=True)))


def _commands(parser=None, prefix=()):
    """Every command path of the parser (`infer`, `arch show`, `export onnx` ...), found by walking it."""
    parser = parser or cli.build_parser()
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append((*prefix, name))
                paths += _commands(sub, (*prefix, name))
    return paths


COMMAND_PATHS = _commands()


@pytest.mark.parametrize("launcher", ["python cli.py", "flownas"])
def test_help_from_a_shell_lists_every_command(launcher):
    """What the README promises: `python cli.py --help`, or `flownas --help` once installed."""
    if launcher == "flownas":
        script = Path(sys.executable).parent / "flownas"
        if not script.is_file():
            pytest.skip(f"the flownas entry point is not installed beside {sys.executable}")
        argv = [str(script), "--help"]
    else:
        argv = [sys.executable, "cli.py", "--help"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == ""
    assert len(COMMAND_PATHS) >= 13  # the walk found the nested commands (arch show, export onnx, ...)
    listed = done.stdout.split("positional arguments", 1)[1]
    for name in {path[0] for path in COMMAND_PATHS}:
        assert re.search(rf"\n    {name}\b", listed), name


def _readme_examples() -> list[list[str]]:
    """The arguments of every `python cli.py ...` line of the README (comments cut, [optional] parts kept)."""
    examples = []
    for line in (REPO / "README.md").read_text().splitlines():
        if line.startswith("python cli.py "):
            text = line.split("  #", 1)[0].replace("[", "").replace("]", "")
            examples.append(shlex.split(text)[2:])
    return examples


def test_readme_has_command_line_examples():
    assert len(_readme_examples()) >= 10


def test_readme_python_example_names_exist():
    """The README's Python API block imports and calls names that exist (its calls need weights: not run)."""
    text = (REPO / "README.md").read_text()
    block = text.split("```python", 1)[1].split("```", 1)[0]
    imports = [line for line in block.splitlines() if line.startswith(("import ", "from "))]
    namespace: dict = {}
    exec("\n".join(imports), namespace)  # noqa: S102 - the README's own import lines
    assert len(imports) >= 5
    calls = re.findall(r"\b([a-z_]+)\.([a-z_]+)\(", block)
    modules = [(owner, name) for owner, name in calls if owner in namespace and not owner.startswith("_")]
    assert modules and all(hasattr(namespace[owner], name) for owner, name in modules), modules


@pytest.mark.parametrize("argv", _readme_examples(), ids=" ".join)
def test_readme_example_parses(argv):
    """Every command line the README shows is accepted by the parser as written (nothing is run)."""
    args = cli.build_parser().parse_args(argv)
    assert args.command == argv[0]


def _undocumented(parser: argparse.ArgumentParser) -> list[str]:
    """Options and sub-commands of one parser that have no help text."""
    missing = [a.dest for a in parser._actions if a.help is None and a.dest != "help"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):  # argparse lists a sub-command only if it has help
            documented = {choice.dest for choice in action._choices_actions if choice.help}
            missing += [name for name in action.choices if name not in documented]
    return missing


def test_every_top_level_command_has_help():
    assert not _undocumented(cli.build_parser())


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=" ".join)
def test_every_command_and_option_has_help(path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*path, "--help"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("usage: flownas " + " ".join(path))
    parser = cli.build_parser()
    for name in path:  # walk down to this command's own parser
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    assert not _undocumented(parser), f"options or sub-commands without help text: {_undocumented(parser)}"


def test_infer_on_rubberwhale_writes_flow_and_picture(rubberwhale, small_weights, tmp_path):
    out, viz = tmp_path / "flow.flo", tmp_path / "flow.png"
    code = cli.main(["infer", str(rubberwhale / "frame10.png"), str(rubberwhale / "frame11.png"),
                     "--weights", small_weights, "--iters", "2", "--out", str(out), "--viz", str(viz)])
    assert code == 0
    flow, valid = read_flow(out)
    assert flow.shape == (388, 584, 2) and valid.all()
    assert read_image(viz).shape == (388, 584, 3)


def test_infer_on_a_folder_writes_one_flow_per_pair(small_weights, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(3):
        write_image(frames / f"f{index}.png", make_pair(128, 128, seed=index)["image1"])
    code = cli.main(["infer", str(frames), "--weights", small_weights, "--iters", "1", "--out", str(tmp_path / "flows")])
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "flows").iterdir()) == ["f0.flo", "f1.flo"]


def test_infer_refuses_images_of_different_sizes(small_weights, tmp_path, capsys):
    write_image(tmp_path / "a.png", np.zeros((128, 128, 3), np.uint8))
    write_image(tmp_path / "b.png", np.zeros((136, 128, 3), np.uint8))
    code = cli.main(["infer", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--weights", small_weights,
                     "--out", str(tmp_path / "f.flo")])
    err = capsys.readouterr().err
    assert code == 2 and "a.png is 128x128" in err and "b.png is 136x128" in err
    assert err.count("\n") == 1 and not (tmp_path / "f.flo").exists()


def test_evaluate_writes_csv_and_provenance(small_weights, tmp_path, capsys):
    root = tmp_path / "middlebury"
    for name, seed in (("A", 0), ("B", 1)):
        write_pair(root / name, make_pair(128, 144, seed=seed))
    out = tmp_path / "eval.csv"
    code = cli.main(["evaluate", "--dataset", "middlebury", "--root", str(root), "--weights", small_weights,
                     "--iters", "2", "--out", str(out)])
    assert code == 0
    rows = pd.read_csv(out)
    assert len(rows) == 2 and {"epe", "px1", "px3", "px5", "fl_all"} <= set(rows.columns)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["iters"] == 2 and record["model"] == {"family": "raft", "variant": "small"}
    # pooled EPE over two equal-size fully valid images is the mean of the two
    assert record["summary"]["epe"] == pytest.approx(rows["epe"].mean(), rel=1e-5)


def test_evaluate_missing_root_is_one_line(tmp_path, capsys):
    code = cli.main(["evaluate", "--dataset", "sintel-clean", "--root", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2 and "nowhere" in err and err.count("\n") == 1


def test_wrong_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    torch.save({"something.weight": torch.zeros(2)}, bad)
    pair = make_pair(128, 128, seed=0)
    write_image(tmp_path / "a.png", pair["image1"])
    write_image(tmp_path / "b.png", pair["image2"])
    code = cli.main(["infer", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--weights", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and "bad.pth" in err and err.count("\n") == 1


def test_arch_show_json_reports_counts(capsys):
    assert cli.main(["arch", "show", "raft-k", "--resolution", "128x128", "--iters", "1", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["id"] == resolve_arch("raft-k").id
    assert record["parameters"]["total"] == 5_101_712  # checked against the block formula in test_complexity
    assert record["macs"]["correlation"] == 256 * 256 * 256


def test_arch_sample_is_seeded(capsys):
    cli.main(["arch", "sample", "--n", "4", "--seed", "3"])
    first = capsys.readouterr().out
    cli.main(["arch", "sample", "--n", "4", "--seed", "3"])
    assert capsys.readouterr().out == first and len(first.splitlines()) == 4


def test_extract_round_trip(published_keys, tmp_path, capsys):
    supernet_path = tmp_path / "supernet.pth"
    torch.save(random_published_state(published_keys, "flownas", seed=2), supernet_path)
    out = tmp_path / "raft-k.pt"
    assert cli.main(["extract", "--supernet", str(supernet_path), "--arch", "raft-k", "--out", str(out)]) == 0
    raw = torch.load(out, weights_only=True)
    assert raw["model"]["arch"] == resolve_arch("raft-k").to_dict()
    assert raw["metadata"]["arch_id"] == resolve_arch("raft-k").id


def test_extract_refuses_unknown_arch(published_keys, tmp_path, capsys):
    supernet_path = tmp_path / "supernet.pth"
    torch.save(random_published_state(published_keys, "flownas", seed=2), supernet_path)
    code = cli.main(["extract", "--supernet", str(supernet_path), "--arch", "w1-k2", "--out", str(tmp_path / "x.pt")])
    assert code == 2 and not (tmp_path / "x.pt").exists()


def test_evaluate_on_real_middlebury_counts_known_pixels(rubberwhale, small_weights, tmp_path):
    out = tmp_path / "rw.csv"
    code = cli.main(["evaluate", "--dataset", "middlebury", "--root", str(rubberwhale), "--weights", small_weights,
                     "--iters", "2", "--out", str(out)])
    assert code == 0
    _, valid = read_flow(rubberwhale / "flow10.flo")
    row = pd.read_csv(out).iloc[0]
    assert row["n_valid"] == valid.sum() < valid.size  # unknown pixels are excluded
    assert np.isfinite(row["epe"])


@pytest.mark.slow  # the whole workflow: supernet, extraction, export, verification, bench
def test_demo_runs_the_workflow_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--height", "128", "--width", "128", "--iters", "1"]) == 0
    flow, _ = read_flow(out / "flow.flo")
    assert flow.shape == (128, 128, 2)
    raw = torch.load(out / "raft-k.pt", weights_only=True)
    assert raw["model"]["arch"] == resolve_arch("raft-k").to_dict()
    record = json.loads((out / "raft-k.json").read_text())
    assert record["verification"]["128x128"]["ok"]
    rows = pd.read_csv(out / "bench" / "results.csv")
    assert set(rows["backend"]) == {"torch-cpu", "ort-cpu"}


def test_the_command_line_parses_without_importing_torch():
    """Target devices run `lut measure` / `bench --onnx` with ONNX Runtime only: the parser must not need torch."""
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys, cli; cli.build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.strip() == "False"
