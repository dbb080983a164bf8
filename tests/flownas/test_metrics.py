"""Flow metrics against hand-worked values (FACTS §4), layouts, and dataset aggregation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flownas.metrics import MetricAccumulator, detect_layout, flow_metrics

# A 2x2 image [H,W,2]. Error vectors (0,0), (1,0), (0,3), (3,4) give EPEs 0, 1, 3, 5.
GT = np.array([[[0.0, 0.0], [3.0, 4.0]],
               [[0.0, 10.0], [30.0, 40.0]]])  # |gt| = 0, 5, 10, 50
ERR = np.array([[[0.0, 0.0], [1.0, 0.0]],
                [[0.0, 3.0], [3.0, 4.0]]])
PRED = GT + ERR


def _random_pair(seed: int, shape=(5, 7, 2)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = rng.normal(0, 20, shape)
    pred = gt + rng.normal(0, 3, shape)
    valid = rng.random(shape[:-1]) > 0.3
    return pred, gt, valid


def test_hand_worked_2x2() -> None:
    m = flow_metrics(PRED, GT, layout="hwc")
    assert m["epe"] == pytest.approx((0 + 1 + 3 + 5) / 4)  # 2.25
    assert m["px1"] == pytest.approx(0.25)  # only EPE 0 is < 1 (1 is not: strict)
    assert m["px3"] == pytest.approx(0.50)  # 0, 1
    assert m["px5"] == pytest.approx(0.75)  # 0, 1, 3
    # Only EPE 5 exceeds 3 px; it is an outlier because 5 > 0.05 * |gt| = 0.05 * 50 = 2.5.
    assert m["fl_all"] == pytest.approx(25.0)
    assert set(m) == {"epe", "px1", "px3", "px5", "fl_all"}


def test_fl_all_relative_condition() -> None:
    # Same errors, but the EPE-5 pixel moves by |gt| = 200: 5 < 0.05 * 200 = 10, so no outlier.
    gt = GT.copy()
    gt[1, 1] = (120.0, 160.0)
    assert flow_metrics(gt + ERR, gt, layout="hwc")["fl_all"] == 0.0
    # EPEs 4, 4, 6, 0.5 against |gt| 10, 100, 200, 0: only the first is > 3 and > 5% of |gt|.
    gt = np.array([[[6.0, 8.0], [0.0, 100.0]], [[200.0, 0.0], [0.0, 0.0]]])
    err = np.array([[[4.0, 0.0], [0.0, 4.0]], [[0.0, 6.0], [0.5, 0.0]]])
    m = flow_metrics(gt + err, gt, layout="hwc")
    assert m["fl_all"] == pytest.approx(25.0)
    assert m["epe"] == pytest.approx((4 + 4 + 6 + 0.5) / 4)


def test_valid_mask_excludes_pixels() -> None:
    valid = np.array([[True, True], [True, False]])  # drop the EPE-5 pixel
    m = flow_metrics(PRED, GT, valid, layout="hwc")
    assert m["epe"] == pytest.approx(4 / 3)
    assert (m["px1"], m["px3"], m["px5"]) == pytest.approx((1 / 3, 2 / 3, 1.0))
    assert m["fl_all"] == 0.0
    # Float masks (KITTI's valid channel) count as valid from 0.5 up.
    assert flow_metrics(PRED, GT, valid.astype(np.float32), layout="hwc") == m


def test_2x2_is_ambiguous_without_layout() -> None:
    with pytest.raises(ValueError, match=r"ambiguous.*layout=.*pred shape \(2, 2, 2\), gt shape \(2, 2, 2\)"):
        flow_metrics(PRED, GT)
    chw = flow_metrics(PRED.transpose(2, 0, 1), GT.transpose(2, 0, 1), layout="chw")
    assert chw == flow_metrics(PRED, GT, layout="hwc")


def test_layout_detection() -> None:
    assert detect_layout((4, 6, 2)) == "hwc"
    assert detect_layout((2, 4, 6)) == "chw"
    assert detect_layout((3, 2, 4, 6)) == "bchw"
    assert detect_layout((3, 4, 6, 2)) == "bhwc"
    for bad in [(2, 4, 2), (3, 2, 4, 2), (4, 6, 3), (4, 6), (1, 1, 4, 6, 2)]:
        with pytest.raises(ValueError):
            detect_layout(bad)


def test_all_layouts_and_backends_agree() -> None:
    pred, gt, valid = _random_pair(0)
    ref = flow_metrics(pred, gt, valid)
    chw = (pred.transpose(2, 0, 1), gt.transpose(2, 0, 1))
    variants = [
        flow_metrics(*chw, valid),
        flow_metrics(pred[None], gt[None], valid[None]),  # [1,H,W,2]
        flow_metrics(chw[0][None], chw[1][None], valid[None, None]),  # [1,2,H,W] with [1,1,H,W] mask
        flow_metrics(chw[0], gt, valid),  # channels-first prediction, channels-last ground truth
        flow_metrics(torch.from_numpy(chw[0]).float(), torch.from_numpy(chw[1]).float(), torch.from_numpy(valid)),
        flow_metrics(torch.from_numpy(pred).requires_grad_(), gt, torch.from_numpy(valid)),
    ]
    for m in variants:
        assert m.keys() == ref.keys()
        for key in ref:
            assert m[key] == pytest.approx(ref[key], rel=1e-6), key


def test_batch_is_pooled_over_pixels() -> None:
    (p1, g1, v1), (p2, g2, v2) = _random_pair(1), _random_pair(2)
    batch = flow_metrics(np.stack([p1, p2]).transpose(0, 3, 1, 2), np.stack([g1, g2]).transpose(0, 3, 1, 2),
                         np.stack([v1, v2]))
    n1, n2 = v1.sum(), v2.sum()
    e1, e2 = flow_metrics(p1, g1, v1)["epe"], flow_metrics(p2, g2, v2)["epe"]
    assert batch["epe"] == pytest.approx((e1 * n1 + e2 * n2) / (n1 + n2))


def test_shape_errors_quote_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(4, 5, 2\).*\(4, 6, 2\)"):
        flow_metrics(np.zeros((4, 5, 2)), np.zeros((4, 6, 2)))
    with pytest.raises(ValueError, match=r"pred shape \(4, 5, 3\), gt shape \(4, 5, 2\)"):
        flow_metrics(np.zeros((4, 5, 3)), np.zeros((4, 5, 2)))
    with pytest.raises(ValueError, match=r"valid mask shape \(5, 4\)"):
        flow_metrics(np.zeros((4, 5, 2)), np.zeros((4, 5, 2)), np.ones((5, 4), bool))
    with pytest.raises(ValueError, match="does not fit layout 'chw'"):
        flow_metrics(np.zeros((4, 5, 2)), np.zeros((4, 5, 2)), layout="chw")


def test_no_valid_pixels() -> None:
    with pytest.raises(ValueError, match="no valid pixels"):
        flow_metrics(np.zeros((4, 5, 2)), np.zeros((4, 5, 2)), np.zeros((4, 5), bool))


# ------------------------------------------------------------------------------------ aggregation
def _two_images(acc: MetricAccumulator) -> MetricAccumulator:
    """Image "a": the 2x2 case (4 valid, EPEs 0,1,3,5, one outlier).
    Image "b": 1x4 against zero motion, valid first two: EPEs 4 and 2 (one outlier: 4 > 3 and > 0)."""
    acc.update(PRED, GT, None, sample_id="a", layout="hwc")
    pred_b = np.array([[[4.0, 0.0], [0.0, 2.0], [100.0, 0.0], [0.0, 100.0]]])
    acc.update(torch.from_numpy(pred_b).permute(2, 0, 1), np.zeros((1, 4, 2)),
               np.array([[True, True, False, False]]), sample_id="b")
    return acc


def test_pooled_aggregation_by_hand() -> None:
    s = _two_images(MetricAccumulator("pooled")).summary()
    assert s["epe"] == pytest.approx((9 + 6) / 6)  # EPE sums 9 and 6 over 4 + 2 pixels = 2.5
    assert s["px1"] == pytest.approx(1 / 6)
    assert s["px3"] == pytest.approx(3 / 6)  # a: 0, 1; b: 2
    assert s["px5"] == pytest.approx(5 / 6)  # a: 0, 1, 3; b: 4, 2
    assert s["fl_all"] == pytest.approx(100 * 2 / 6)
    assert (s["n_images"], s["n_valid"]) == (2, 6)


def test_per_image_aggregation_by_hand() -> None:
    s = _two_images(MetricAccumulator("per_image")).summary()
    assert s["epe"] == pytest.approx((2.25 + 3.0) / 2)  # 2.625: each image weighs the same
    assert s["px1"] == pytest.approx((0.25 + 0.0) / 2)
    assert s["px3"] == pytest.approx((0.5 + 0.5) / 2)
    assert s["px5"] == pytest.approx((0.75 + 1.0) / 2)
    assert s["fl_all"] == pytest.approx(100 * 2 / 6)  # still pooled: 33.3, not (25 + 50) / 2


def test_rows() -> None:
    rows = _two_images(MetricAccumulator()).rows()
    assert [r["sample_id"] for r in rows] == ["a", "b"]
    assert rows[0]["epe"] == pytest.approx(2.25) and rows[0]["n_valid"] == 4
    assert rows[1]["epe"] == pytest.approx(3.0) and rows[1]["fl_all"] == pytest.approx(50.0)
    assert rows[1]["n_valid"] == 2
    assert set(rows[0]) == {"sample_id", "epe", "px1", "px3", "px5", "fl_all", "n_valid"}


def test_batched_update_and_default_ids() -> None:
    (p1, g1, v1), (p2, g2, v2) = _random_pair(3), _random_pair(4)
    batched = MetricAccumulator("per_image")
    batched.update(np.stack([p1, p2]), np.stack([g1, g2]), np.stack([v1, v2]), sample_id=["x", "y"])
    single = MetricAccumulator("per_image")
    single.update(p1, g1, v1)
    single.update(p2, g2, v2)
    assert [r["sample_id"] for r in single.rows()] == [0, 1]
    assert batched.summary() == pytest.approx(single.summary())
    with pytest.raises(ValueError, match="one sample id 'z' for a batch of 2"):
        batched.update(np.stack([p1, p2]), np.stack([g1, g2]), sample_id="z")


def test_accumulator_errors() -> None:
    with pytest.raises(ValueError, match="unknown aggregation 'mean'"):
        MetricAccumulator("mean")
    acc = MetricAccumulator()
    with pytest.raises(ValueError, match="no samples"):
        acc.summary()
    with pytest.raises(ValueError, match="sample 'empty': no valid pixels"):
        acc.update(np.zeros((4, 5, 2)), np.zeros((4, 5, 2)), np.zeros((4, 5), bool), sample_id="empty")
    assert len(acc) == 0
