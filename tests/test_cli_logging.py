"""Global --verbose / --quiet / --log-file, the command echo, and --help that imports no heavy library."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cli

ROOT = Path(__file__).resolve().parents[1]


def test_quiet_keeps_results_off_and_errors_on_and_verbose_echoes_the_command(tmp_path, capsys):
    assert cli.main(["--quiet", "arch", "show", "raft-k"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == ""
    assert cli.main(["--verbose", "arch", "show", "raft-k"]) == 0
    verbose = capsys.readouterr()
    assert "[V] === Command === flownas --verbose arch show raft-k" in verbose.err.splitlines()[0]
    assert "arch finished in" in verbose.err
    assert cli.main(["--quiet", "arch", "show", "no-such-arch"]) == 2
    assert capsys.readouterr().err.count("\n") == 1  # a user error is still one line, even when quiet


def test_log_file_gets_every_level_with_timestamps(tmp_path, capsys):
    log = tmp_path / "logs" / "run.log"
    assert cli.main(["--quiet", "--log-file", str(log), "lut", "predict", "--table",
                     str(ROOT / "latency_tables" / "tables" / "ort-cpu-128x192"), "--arch", "raft-k", "--force"]) == 0
    text = log.read_text()
    assert "[DEBUG] flownas: === Command === flownas --quiet --log-file" in text
    assert "lut finished in" in text and text[:4].isdigit()  # timestamped lines


def test_verbose_and_quiet_together_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--verbose", "--quiet", "arch", "show", "raft-k"])
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def _imported_after(argv: list[str]) -> set[str]:
    code = ("import sys, runpy; sys.argv = ['cli.py', *%r]\n"
            "try:\n    runpy.run_path('cli.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(' '.join(sorted(m.split('.')[0] for m in sys.modules)), file=sys.stderr)" % (argv,))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    return set(done.stderr.split())


@pytest.mark.parametrize("argv", [["--help"], ["bench", "--help"], ["export", "onnx", "--help"], ["lut", "--help"]])
def test_help_imports_no_heavy_library(argv):
    # what makes --help slow: each of these takes from 0.3 s to seconds to import
    assert not _imported_after(argv) & {"torch", "onnx", "onnxruntime", "cv2", "matplotlib", "scipy", "pandas"}


def _actions(parser):
    for action in parser._actions:
        if action.dest == "help":
            continue
        if hasattr(action, "choices") and isinstance(action.choices, dict):  # sub-commands
            for name, sub in action.choices.items():
                yield from ((f"{name} {where}", a) for where, a in _actions(sub))
        else:
            yield "", action


def test_every_command_and_option_has_help_text():
    missing = [f"{where}{action.option_strings or action.dest}" for where, action in _actions(cli.build_parser())
               if not (action.help and action.help.strip())]
    assert missing == []


def test_log_file_keeps_results_and_errors_of_every_run_appended(tmp_path, capsys):
    log = tmp_path / "run.log"
    assert cli.main(["--log-file", str(log), "arch", "show", "raft-k"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert cli.main(["--quiet", "--log-file", str(log), "arch", "show", "no-such-arch"]) == 2
    error = capsys.readouterr().err.strip()
    text = log.read_text()
    assert text.count("=== Command === flownas") == 2  # appended, one echo per run
    # each printed result line, in order, and the one-line error at error level
    logged = [line.split("] flownas: ", 1)[1] for line in text.splitlines() if "[INFO] flownas: " in line]
    assert logged == shown and len(shown) >= 3
    assert f"[ERROR] flownas: {error}" in text and "no-such-arch" in error


def test_lines_go_where_their_kind_says(tmp_path, capsys):
    from flownas.logs import progress, result, results_to_log_file, say, setup_logging

    warnings = "[W] warning: disk almost full\n[W] tensorrt\n"  # shown whatever the level
    for quiet, out, err in ((False, "commentary\nresult\n", "[I] progress\n" + warnings), (True, "result\n", warnings)):
        log = tmp_path / f"quiet-{quiet}.log"
        setup_logging(quiet=quiet, log_file=log)
        with results_to_log_file():
            say("commentary")
            result("result")
            progress("progress")
            progress("warning: disk almost full")
            logging.getLogger("export.tensorrt").warning("tensorrt")  # a library module's own logger
            logging.getLogger("flownas.search").debug("detail")
        assert capsys.readouterr() == (out, err)
        levels = [line.split(" [", 1)[1] for line in log.read_text().splitlines()]
        assert levels == ["INFO] flownas: commentary", "INFO] flownas: result", "INFO] flownas: progress",
                          "WARNING] flownas: warning: disk almost full", "WARNING] export.tensorrt: tensorrt",
                          "DEBUG] flownas.search: detail"]
    setup_logging()


def test_quiet_turns_progress_bars_off_for_one_run_only(monkeypatch, capsys):
    from flownas.logs import progress_enabled

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert cli.main(["--quiet", "arch", "show", "raft-k"]) == 0
    assert os.environ.get("TQDM_DISABLE") == "1" and not progress_enabled()
    assert cli.main(["arch", "show", "raft-k"]) == 0  # a later command in the same process draws bars again
    assert "TQDM_DISABLE" not in os.environ and progress_enabled()
    monkeypatch.setenv("TQDM_DISABLE", "1")  # the user's own setting outlives a non-quiet run
    assert cli.main(["--quiet", "arch", "show", "raft-k"]) == 0 and cli.main(["arch", "show", "raft-k"]) == 0
    assert os.environ.get("TQDM_DISABLE") == "1"


def test_a_log_file_that_cannot_be_written_is_one_line(tmp_path, capsys):
    assert cli.main(["--log-file", str(tmp_path), "arch", "show", "raft-k"]) == 2  # a folder
    captured = capsys.readouterr()
    assert captured == ("", f"error: --log-file {tmp_path}: cannot append to it (Is a directory)\n")


def test_quiet_infer_prints_its_result_and_its_warning_only(tmp_path, capsys):
    from flownas.data.flow_io import write_image
    from flownas.data.synthetic import make_pair

    pair = make_pair(128, 128, seed=0)
    write_image(tmp_path / "a.png", pair["image1"])
    write_image(tmp_path / "b.png", pair["image2"])
    flow = tmp_path / "f.flo"
    assert cli.main(["--quiet", "infer", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--iters", "1",
                     "--out", str(flow)]) == 0
    assert capsys.readouterr() == (f"a.png -> b.png: flow {flow}\n",
                                   "[W] warning: no --weights given: using an untrained RAFT (random weights)\n")
    assert flow.is_file()


@pytest.mark.parametrize("supernet", [False, True])
def test_quiet_evaluate_draws_no_bar(tmp_path, capsys, monkeypatch, supernet):
    """evaluate's bar is drawn with an explicit disable=, which TQDM_DISABLE alone would not silence."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    args = ["evaluate", "--dataset", "synthetic", "--max-samples", "2", "--iters", "1"]
    if supernet:
        from flownas.registry import create_model
        from flownas.weights import save_checkpoint

        path = save_checkpoint(tmp_path / "supernet.pt", create_model("tiny-supernet", seed=0))
        args += ["--supernet", str(path), "--arch", "largest", "--calibrate-bn", "1"]
    assert cli.main([*args, "--out", str(tmp_path / "a.csv")]) == 0
    assert "evaluate: 100%" in capsys.readouterr().err  # the bar, when not quiet
    assert cli.main(["--quiet", *args, "--out", str(tmp_path / "b.csv")]) == 0
    assert "evaluate:" not in capsys.readouterr().err
