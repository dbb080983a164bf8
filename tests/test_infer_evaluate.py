"""`infer` and `evaluate` as ptlflow users expect: video in, side-by-side video out, --scale, --bf16/--fp16,
--gt metrics, `evaluate --write-outputs` pictures on one shared scale, and the viz helpers behind them."""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

import cli
import pipeline
from flownas.data.flow_io import read_flow, read_image, write_flow, write_image
from flownas.data.synthetic import make_pair, write_pair
from flownas.data.viz import (colour_wheel_legend, epe_error_map, flow_comparison, flow_to_color,
                              max_valid_magnitude)
from flownas.errors import UserInputError
from flownas.inference import estimate_flow
from flownas.registry import create_model
from flownas.weights import save_checkpoint

JET_LOW, JET_HIGH = [0, 0, 128], [128, 0, 0]  # OpenCV's JET at 0 and 255, as RGB


@pytest.fixture(scope="module")
def tiny_model():
    return create_model("tiny-flownas", seed=0)


@pytest.fixture(scope="module")
def tiny_weights(tiny_model, tmp_path_factory):
    return str(save_checkpoint(tmp_path_factory.mktemp("w") / "tiny.pt", tiny_model))


def _texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    image = (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)
    return cv2.GaussianBlur(image, (5, 5), 1.5)


def _shifted_video(path: Path, frames: int, height: int = 128, width: int = 128) -> Path:
    """A texture moving 2 px right per frame, written with OpenCV directly (BGR)."""
    texture = _texture(height + 8, width + 2 * frames + 8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (width, height))
    for index in range(frames):
        writer.write(np.ascontiguousarray(texture[4:4 + height, 2 * index:2 * index + width]))
    writer.release()
    return path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


# --------------------------------------------------------------------------------------------- viz helpers
def test_colour_wheel_legend_hand_worked() -> None:
    legend = colour_wheel_legend(101)
    assert legend.shape == (101, 101, 3) and legend.dtype == np.uint8
    assert legend[50, 50].tolist() == [255, 255, 255]  # zero flow: white
    assert legend[50, 100].tolist() == [255, 0, 0]  # rightmost point of the circle: +u at full scale, red
    assert legend[100, 50].tolist() == [255, 229, 0]  # bottom: +v (see test_viz's hand-worked down colour)
    assert legend[50, 0].tolist() == [0, 209, 255]  # left: -u
    assert legend[0, 0].tolist() == legend[100, 100].tolist() == [255, 255, 255]  # outside the circle
    # half way to the right edge: half magnitude -> [255, 127, 127]
    assert legend[50, 75].tolist() == [255, 127, 127]


def test_epe_error_map_hand_worked() -> None:
    gt = np.zeros((2, 3, 2), np.float32)
    pred = gt.copy()
    pred[0, 1] = (3.0, 4.0)  # EPE 5 = the map's maximum
    pred[0, 2] = (30.0, 40.0)  # EPE 50: clipped to the maximum
    valid = np.ones((2, 3), bool)
    valid[1, 2] = False
    image = epe_error_map(pred, gt, valid, max_epe=5.0)
    assert image[0, 0].tolist() == JET_LOW and image[1, 0].tolist() == JET_LOW
    assert image[0, 1].tolist() == JET_HIGH and image[0, 2].tolist() == JET_HIGH
    assert image[1, 2].tolist() == [0, 0, 0]  # no ground truth: black
    with pytest.raises(ValueError, match="max_epe"):
        epe_error_map(pred, gt, max_epe=0)


def test_flow_comparison_uses_the_ground_truth_scale() -> None:
    gt = np.zeros((4, 4, 2), np.float32)
    gt[..., 0] = 1.0  # 1 px right everywhere
    gt[3, 3] = (100.0, 0.0)  # invalid: must not set the scale
    valid = np.ones((4, 4), bool)
    valid[3, 3] = False
    pred = 2 * gt
    picture, scale = flow_comparison(pred, gt, valid, gap=2)
    assert scale == 1.0 == max_valid_magnitude(gt, valid)
    assert picture.shape == (4, 10, 3)
    assert picture[0, 6].tolist() == [255, 0, 0]  # truth at the scale: saturated red
    assert picture[0, 0].tolist() == [191, 0, 0]  # prediction twice the scale: darkened (not red, as it
    assert flow_to_color(pred)[0, 0].tolist() != [191, 0, 0]  # would be on its own scale)
    assert picture[3, 9].tolist() == [0, 0, 0]  # invalid truth: black on the truth's side only
    assert picture[0, 4].tolist() == [255, 255, 255]  # the gap


# --------------------------------------------------------------------------------------------- estimate_flow
def test_scale_matches_resizing_by_hand(tiny_model) -> None:
    pair = make_pair(256, 256, seed=1)
    flow = estimate_flow(tiny_model, pair["image1"], pair["image2"], iters=1, scale=0.5, check_memory=False)
    small = [cv2.resize(pair[k], (128, 128), interpolation=cv2.INTER_AREA) for k in ("image1", "image2")]
    expected = cv2.resize(estimate_flow(tiny_model, *small, iters=1, check_memory=False), (256, 256),
                          interpolation=cv2.INTER_LINEAR)
    assert flow.shape == (256, 256, 2)
    np.testing.assert_allclose(flow, expected * 2.0, atol=1e-4)  # flow in input pixels: twice the small one


def test_scale_errors_are_one_line(tiny_model) -> None:
    image = np.zeros((256, 256, 3), np.uint8)
    with pytest.raises(UserInputError, match="give one of them, not both"):
        estimate_flow(tiny_model, image, image, iters=1, scale=0.5, max_side=200)
    with pytest.raises(UserInputError, match=r"--scale 0\.25 shrinks 256x256 to 64x64"):
        estimate_flow(tiny_model, image, image, iters=1, scale=0.25)
    with pytest.raises(UserInputError, match="positive number"):
        estimate_flow(tiny_model, image, image, iters=1, scale=-1.0)


def test_bf16_on_cpu_is_close_to_fp32(tiny_model) -> None:
    pair = make_pair(128, 128, seed=2)
    fp32 = estimate_flow(tiny_model, pair["image1"], pair["image2"], iters=2, check_memory=False)
    bf16 = estimate_flow(tiny_model, pair["image1"], pair["image2"], iters=2, precision="bf16", check_memory=False)
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape
    diff = float(np.sqrt(((bf16 - fp32) ** 2).sum(axis=2)).mean())
    # measured ~7e-4 px (flows up to ~0.5 px, untrained); bfloat16 keeps 8 bits of mantissa (~0.4% error)
    assert 0 < diff < 0.05, diff  # > 0: autocast really ran in bfloat16


def test_fp16_on_cpu_refused(tiny_model) -> None:
    image = np.zeros((128, 128, 3), np.uint8)
    with pytest.raises(UserInputError, match="--fp16 needs a CUDA device"):
        estimate_flow(tiny_model, image, image, iters=1, precision="fp16")


# --------------------------------------------------------------------------------------------- infer
def test_infer_video_writes_flows_and_side_by_side_video(tiny_weights, tmp_path, capsys) -> None:
    video = _shifted_video(tmp_path / "in.mp4", frames=3)
    out, sbs = tmp_path / "flows", tmp_path / "sbs.mp4"
    code = cli.main(["infer", str(video), "--weights", tiny_weights, "--iters", "1", "--out", str(out),
                     "--viz", str(tmp_path / "pics"), "--video", str(sbs)])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["000000.flo", "000001.flo"]
    assert sorted(p.name for p in (tmp_path / "pics").iterdir()) == ["000000.png", "000001.png"]
    flow, valid = read_flow(out / "000001.flo")
    assert flow.shape == (128, 128, 2) and valid.all()
    capture = cv2.VideoCapture(str(sbs))
    count, height, width = (int(capture.get(p)) for p in (cv2.CAP_PROP_FRAME_COUNT, cv2.CAP_PROP_FRAME_HEIGHT,
                                                          cv2.CAP_PROP_FRAME_WIDTH))
    ok, first = capture.read()
    capture.release()
    assert (count, height, width) == (2, 128, 256)  # one frame per pair: frame | flow
    # the right half is the colour-coded flow of pair 0 (mp4v is lossy: compare on average)
    picture = read_image(tmp_path / "pics" / "000000.png")
    assert np.abs(first[:, 128:, ::-1].astype(float) - picture).mean() < 10
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_infer_video_errors_are_one_line_and_write_nothing(tiny_weights, tmp_path, capsys) -> None:
    short = _shifted_video(tmp_path / "short.mp4", frames=1)
    assert cli.main(["infer", str(short), "--weights", tiny_weights, "--out", str(tmp_path / "f")]) == 2
    assert "need at least two frames" in _one_error_line(capsys)
    video = _shifted_video(tmp_path / "in.mp4", frames=2)
    assert cli.main(["infer", str(video), "--weights", tiny_weights, "--out", str(tmp_path / "f.flo")]) == 2
    assert "give a folder for --out" in _one_error_line(capsys)
    assert cli.main(["infer", str(video), "--out", str(tmp_path / "f"), "--video", str(tmp_path / "v.gif")]) == 2
    assert "unsupported video type" in _one_error_line(capsys)
    assert cli.main(["infer", str(video), "--out", str(tmp_path / "f"), "--fp16"]) == 2
    assert "--fp16 needs a CUDA device" in _one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "short.mp4"]


def test_max_side_and_scale_together_is_a_usage_error(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["infer", "a.png", "b.png", "--max-side", "256", "--scale", "0.5"])
    assert info.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    with pytest.raises(SystemExit):
        cli.main(["infer", "a.png", "b.png", "--fp16", "--bf16"])
    with pytest.raises(UserInputError, match="not both"):  # the library refuses it too, before any work
        pipeline.run_inference(["a.png", "b.png"], max_side=256, scale=0.5)


def test_infer_with_ground_truth_prints_metrics(tiny_weights, tmp_path, capsys) -> None:
    pair = make_pair(128, 128, seed=3)
    write_image(tmp_path / "a.png", pair["image1"])
    write_image(tmp_path / "b.png", pair["image2"])
    valid = np.ones((128, 128), bool)
    valid[:16] = False  # unknown pixels are left out of the metrics
    write_flow(tmp_path / "gt.flo", pair["flow"], valid)
    code = cli.main(["infer", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--weights", tiny_weights,
                     "--iters", "1", "--out", str(tmp_path / "f.flo"), "--gt", str(tmp_path / "gt.flo"), "--bf16"])
    assert code == 0
    line = capsys.readouterr().out.splitlines()[-1]
    flow, _ = read_flow(tmp_path / "f.flo")
    epe = np.sqrt(((flow - pair["flow"]) ** 2).sum(axis=2))[valid]
    found = re.search(r"\((\d+) valid px\): EPE ([\d.]+) px, 1px ([\d.]+)%, 3px ([\d.]+)%, 5px ([\d.]+)%", line)
    assert found, line
    assert int(found[1]) == valid.sum()
    assert float(found[2]) == pytest.approx(epe.mean(), abs=1e-3)
    for group, threshold in ((3, 1), (4, 3), (5, 5)):
        assert float(found[group]) == pytest.approx(100 * (epe < threshold).mean(), abs=0.06)


def test_ground_truth_errors_before_work(tiny_weights, tmp_path, capsys) -> None:
    write_image(tmp_path / "a.png", np.zeros((128, 128, 3), np.uint8))
    write_image(tmp_path / "b.png", np.zeros((128, 128, 3), np.uint8))
    write_flow(tmp_path / "gt.flo", np.zeros((128, 144, 2), np.float32))
    args = ["infer", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--weights", tiny_weights,
            "--out", str(tmp_path / "f.flo"), "--gt"]
    assert cli.main([*args, str(tmp_path / "gt.flo")]) == 2
    assert "ground truth is 128x144" in _one_error_line(capsys)
    assert cli.main([*args, str(tmp_path / "none.flo")]) == 2
    assert "not found" in _one_error_line(capsys)
    assert not (tmp_path / "f.flo").exists()


# --------------------------------------------------------------------------------------------- evaluate
def test_evaluate_write_outputs(tiny_weights, tmp_path, capsys) -> None:
    root = tmp_path / "middlebury"
    pairs = {name: make_pair(128, 144, seed=seed) for name, seed in (("A", 0), ("B", 1))}
    for name, pair in pairs.items():
        write_pair(root / name, pair)
    valid_a = np.ones((128, 144), bool)
    valid_a[:, :20] = False
    write_flow(root / "A" / "flow10.flo", pairs["A"]["flow"], valid_a)
    out, pictures = tmp_path / "eval.csv", tmp_path / "pictures"
    code = cli.main(["evaluate", "--dataset", "middlebury", "--root", str(root), "--weights", tiny_weights,
                     "--iters", "1", "--out", str(out), "--write-outputs", str(pictures)])
    assert code == 0
    assert sorted(p.name for p in pictures.iterdir()) == ["A_epe_0-5px.png", "A_flow.png", "B_epe_0-5px.png",
                                                          "B_flow.png", "legend.png"]
    np.testing.assert_array_equal(read_image(pictures / "legend.png"), colour_wheel_legend(151))
    gt = pairs["A"]["flow"]
    scale = float(np.sqrt((gt ** 2).sum(axis=2))[valid_a].max())
    picture = read_image(pictures / "A_flow.png")
    assert picture.shape == (128, 2 * 144 + 4, 3)
    # the truth's half: on its own valid maximum, unknown pixels black
    np.testing.assert_array_equal(picture[:, 148:], flow_to_color(gt, max_flow=scale, valid=valid_a))
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["outputs"]["flow_scale_px"]["A"] == pytest.approx(scale)
    # the error map shows the prediction that was scored: clipped (>= 5 px) pixels match the CSV's px5
    error = read_image(pictures / "A_epe_0-5px.png")
    assert (error[~valid_a] == 0).all() and (error[valid_a].max(axis=1) > 0).all()
    row = pd.read_csv(out).set_index("sample_id").loc["A"]
    clipped = (error[valid_a] == JET_HIGH).all(axis=1).mean()
    assert 0.05 < clipped < 0.95  # both kinds of pixel are present, so the comparison can fail
    assert clipped == pytest.approx(1 - row["px5"], abs=0.02)
    assert "legend.png" in capsys.readouterr().out


def test_write_outputs_must_be_a_folder(tmp_path, capsys) -> None:
    code = cli.main(["evaluate", "--dataset", "synthetic", "--out", str(tmp_path / "e.csv"),
                     "--write-outputs", str(tmp_path / "x.png")])
    assert code == 2 and "a folder is expected" in _one_error_line(capsys)
