"""The seeded fuzzer (tools/fuzz.py): no bad input escapes a reader as anything but a one-line ToolkitError."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # tools/ is a folder of the repository, not an installed package
    sys.path.insert(0, str(REPO))

from tools import fuzz  # noqa: E402
from tools.fuzz_cases import TARGETS, Corpus, make_case  # noqa: E402

def _assert_no_escapes(stats: dict, n: int) -> None:
    report = fuzz.format_report(stats)
    assert set(stats) == set(TARGETS), report
    assert all(s.inputs == n and s.accepted + s.refused + s.escaped == n for s in stats.values()), report
    assert sum(s.escaped for s in stats.values()) == 0, "inputs escaped the readers:\n" + report
    unclean = {t: s.unclean for t, s in stats.items() if s.unclean}
    assert not unclean, "refusals not on one line naming the file:\n" + report
    # Each reader refuses most inputs and still accepts some mutated files that parse: the fuzzer explores both.
    assert all(s.refused > n // 2 for s in stats.values()), report


def test_seeded_fuzz_campaign_has_no_escapes(tmp_path: Path) -> None:
    n = 400  # per reader: the crafted bad files (20-40 per reader), then mutated seeds; ~15 s on 2 cores
    _assert_no_escapes(fuzz.run_campaign(n, seed=0, workdir=tmp_path), n)


@pytest.mark.slow
def test_long_fuzz_campaign_has_no_escapes(tmp_path: Path) -> None:
    n = 2000  # ~1 minute on 2 slow cores (AMD EPYC, AVX2); `python -m tools.fuzz` runs longer campaigns
    _assert_no_escapes(fuzz.run_campaign(n, seed=1, workdir=tmp_path), n)


def test_cases_are_reproducible_from_their_seed(tmp_path: Path) -> None:
    corpus = Corpus(seeds={"flo": fuzz_seed(tmp_path)}, crafted={"flo": [("empty", b"", ".flo")]})
    first = [make_case("flo", i, 7, corpus) for i in range(30)]
    assert first == [make_case("flo", i, 7, corpus) for i in range(30)]
    assert first != [make_case("flo", i, 8, corpus) for i in range(30)]
    assert first[0] == (b"", ".flo", "crafted:empty")
    assert len({data for data, _, _ in first[1:]}) > 20  # mutations differ from case to case


def fuzz_seed(folder: Path) -> list:
    from flownas.data.flow_io import write_flow
    from tools.fuzz_cases import Seed

    write_flow(folder / "s.flo", np.ones((3, 4, 2), np.float32))
    data = (folder / "s.flo").read_bytes()
    return [Seed("s.flo", data, ".flo", [(0, 12)])]


def test_outcomes_are_classified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The fuzzer must see escapes when there are some: a foreign exception, and refusals that are unclean.
    from flownas.data.flow_io import FlowFormatError

    path = tmp_path / "case-00001.flo"

    def raising(error: BaseException):
        def reader(*_args) -> None:
            raise error
        return reader

    cases = [(KeyError("width"), ("escaped", "KeyError")), (MemoryError(), ("escaped", "MemoryError")),
             (FlowFormatError(f"{path}: bad"), ("refused", "FlowFormatError")),
             (FlowFormatError("bad, but which file?"), ("unclean", "FlowFormatError")),
             (FlowFormatError(f"{path}: two\nlines"), ("unclean", "FlowFormatError"))]
    for error, expected in cases:
        monkeypatch.setattr(fuzz, "_call_reader", raising(error))
        assert fuzz._outcome("flo", str(path), 1)[:2] == expected
    monkeypatch.setattr(fuzz, "_call_reader", lambda *_args: None)
    assert fuzz._outcome("flo", str(path), 1)[0] == "accepted"


@pytest.mark.slow
def test_bad_command_lines_are_refused_in_one_line(tmp_path: Path) -> None:
    outcomes = fuzz.cli_campaign(tmp_path)
    assert len(outcomes) == len(fuzz.CLI_CASES)
    assert not any(o.problems for o in outcomes), fuzz.format_cli_report(outcomes)
