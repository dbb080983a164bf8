"""Global --verbose / --quiet / --log-file, the command echo, and --help that imports no heavy library."""
from __future__ import annotations

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
