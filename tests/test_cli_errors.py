"""Bad invocations, run as a user would (a subprocess): one line on stderr, a non-zero exit, no traceback, no output.

Each case is a mistake found by trying the toolkit as a new user (issue 8): the error must name the file, key or
value, and must come before any slow work.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flownas.data.flow_io import write_image
from flownas.data.synthetic import make_pair

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A pair of frames, a folder of frames, supernet / RAFT-small / raft-k subnet checkpoints, non-model files."""
    from flownas.arch import RAFT_K
    from flownas.models import FlowNASNet, FlowNASSupernet, RAFT
    from flownas.weights import save_checkpoint

    root = tmp_path_factory.mktemp("cli")
    pair = make_pair(128, 128, seed=0)
    write_image(root / "a.png", pair["image1"])
    write_image(root / "b.png", pair["image2"])
    (root / "frames").mkdir()
    for index in range(3):
        write_image(root / "frames" / f"f{index}.png", make_pair(128, 128, seed=index)["image1"])
    torch.manual_seed(0)
    save_checkpoint(root / "supernet.pt", FlowNASSupernet())
    save_checkpoint(root / "small.pt", RAFT(small=True))
    save_checkpoint(root / "subnet.pt", FlowNASNet(RAFT_K))
    (root / "notonnx.txt").write_text("not a model")
    (root / "fake.onnx").write_bytes(b"\x08\x07 definitely not protobuf \xff")
    return {"root": root, "a": root / "a.png", "b": root / "b.png", "frames": root / "frames",
            "supernet": root / "supernet.pt", "small": root / "small.pt", "subnet": root / "subnet.pt",
            "text": root / "notonnx.txt", "fake": root / "fake.onnx"}


def run_cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *argv], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


CASES = {
    "infer --device cuda without CUDA": (["infer", "{a}", "{b}", "--device", "cuda"], "sees no CUDA GPU"),
    "export trt on a text file": (["export", "trt", "{text}", "--out", "{root}/x.engine"], "expected an existing .onnx"),
    "verify a text file": (["verify", "{text}", "{fake}"], "unknown artifact type '.txt'"),
    "verify a file that is not ONNX": (["verify", "{fake}", "{fake}"], "not a readable ONNX file"),
    "bench --iters 0": (["bench", "--model", "raft-small", "--backend", "torch-cpu", "--iters", "0"], "at least 1"),
    "arch sample --n -1": (["arch", "sample", "--n", "-1"], "must be at least 1"),
    "export onnx --real-pair /missing": (["export", "onnx", "--weights", "{small}", "--resolution", "128x128",
                                          "--out", "{root}/o.onnx", "--real-pair", "/missing"],
                                         "frame10.png and frame11.png not found"),
    "bench --precision int3": (["bench", "--model", "raft-small", "--backend", "torch-cpu", "--precision", "int3"],
                               "--precision 'int3' is not one of fp32, fp16, bf16, int8"),
    "bench --precision int8 on torch-cpu": (["bench", "--model", "raft-small", "--backend", "torch-cpu",
                                             "--precision", "int8"], "torch-cpu runs fp32 here"),
    "infer frames/ --out x.flo": (["infer", "{frames}", "--out", "{root}/x.flo"], "give a folder for --out"),
    "infer --out o.txt": (["infer", "{a}", "{b}", "--out", "{root}/o.txt"], "unsupported flow file type"),
    "infer --viz o.txt": (["infer", "{a}", "{b}", "--out", "{root}/o.flo", "--viz", "{root}/o.txt"],
                          "unsupported picture type"),
    "infer a supernet without --arch": (["infer", "{a}", "{b}", "--weights", "{supernet}"],
                                        "holds a FlowNAS supernet: choose the subnet to run with --arch"),
    "infer a static subnet with another --arch": (["infer", "{a}", "{b}", "--weights", "{subnet}", "--arch", "raft-s"],
                                                  "holds the static subnet w64.72.88.104.120.136"),
    "arch show nope.json": (["arch", "show", "nope.json"], "nope.json: architecture file not found"),
    "evaluate --out e.txt": (["evaluate", "--dataset", "synthetic", "--out", "{root}/e.txt"], "expected a .csv"),
    "bench --backend ort-cuda": (["bench", "--model", "raft-small", "--backend", "ort-cuda"], "CUDAExecutionProvider"),
    "extract --calibrate-bn -1": (["extract", "--supernet", "{supernet}", "--arch", "raft-k", "--out", "{root}/x.pt",
                                   "--calibrate-bn", "-1"], "must not be negative"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_invocation_is_one_line_and_fails(files: dict[str, Path], case: str) -> None:
    argv, message = CASES[case]
    if case == "bench --backend ort-cuda":
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            pytest.skip("CUDAExecutionProvider is available here")
    if case.startswith("infer --device cuda") and torch.cuda.is_available():
        pytest.skip("a CUDA GPU is available here")
    argv = [a.format(**{k: str(v) for k, v in files.items()}) for a in argv]
    before = set(files["root"].rglob("*"))
    result = run_cli(*argv, cwd=files["root"])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, f"exit 0 for {case}: {result.stdout[-300:]}"
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert message in result.stderr and len(lines[-1]) < 400
    error_lines = [line for line in lines if line.startswith(("error:", "flownas"))]
    assert error_lines and error_lines[-1] == lines[-1], result.stderr  # one error line, printed last
    assert set(files["root"].rglob("*")) == before  # nothing written, not even a temp file
