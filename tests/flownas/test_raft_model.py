"""RAFT end to end: forward contract, padding, parameter counts."""
from __future__ import annotations

import json

import pytest
import torch

from flownas.arch import SearchSpace
from flownas.errors import ToolkitError
from flownas.models import (
    RAFT, RAFT_LARGE, RAFT_SMALL, TINY_DECODER, DecoderSpec, DecoderSpecError, FlowNASNet, FlowNASSupernet,
)


@pytest.fixture(scope="module")
def raft_small():
    torch.manual_seed(0)
    return RAFT(small=True).eval()


def _pair(h: int, w: int, batch: int = 1, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    image1 = torch.rand(batch, 3, h, w, generator=gen) * 255
    return image1, torch.roll(image1, shifts=(1, 2), dims=(2, 3))


@pytest.mark.parametrize("small, expected", [(False, 5_257_536), (True, 990_162)])
def test_parameter_counts_match_published(small, expected):
    assert sum(p.numel() for p in RAFT(small=small).parameters()) == expected


def test_eval_returns_full_resolution_flow_for_any_size(raft_small):
    image1, image2 = _pair(131, 141)
    with torch.no_grad():
        flow = raft_small(image1, image2, iters=2)
    assert flow.shape == (1, 2, 131, 141) and flow.dtype == torch.float32
    assert torch.isfinite(flow).all()


def test_train_mode_returns_every_iteration(raft_small):
    image1, image2 = _pair(128, 136)
    raft_small.train()
    try:
        predictions = raft_small(image1, image2, iters=3)
    finally:
        raft_small.eval()
    assert isinstance(predictions, list) and len(predictions) == 3
    assert all(p.shape == (1, 2, 128, 136) for p in predictions)


def test_batch_elements_are_independent(raft_small):
    image1, image2 = _pair(128, 128, batch=2, seed=3)
    with torch.no_grad():
        both = raft_small(image1, image2, iters=2)
        second = raft_small(image1[1:], image2[1:], iters=2)
    assert torch.allclose(both[1:], second, atol=1e-4)


def test_large_model_runs():
    torch.manual_seed(0)
    model = RAFT().eval()
    image1, image2 = _pair(128, 128)
    with torch.no_grad():
        flow = model(image1, image2, iters=1)
    assert flow.shape == (1, 2, 128, 128) and torch.isfinite(flow).all()


def test_mismatched_images_are_refused(raft_small):
    with pytest.raises(ValueError, match=r"image1 \(1, 3, 128, 128\) vs image2 \(1, 3, 128, 136\)"):
        raft_small(torch.zeros(1, 3, 128, 128), torch.zeros(1, 3, 128, 136))


def test_too_small_images_are_refused(raft_small):
    with pytest.raises(ValueError, match="64x128 is too small"):
        raft_small(torch.zeros(1, 3, 64, 128), torch.zeros(1, 3, 64, 128))


def test_zero_iterations_are_refused(raft_small):
    with pytest.raises(ValueError, match="iters must be at least 1, got 0"):
        raft_small(torch.zeros(1, 3, 128, 128), torch.zeros(1, 3, 128, 128), iters=0)


# --- decoder specs -------------------------------------------------------------------------------------------

TINY_SPACE = {"width": [[8, 16], [16], [16, 24], [24], [24, 32], [32]], "kernel_size": [[3, 5]] * 6,
              "depth": [[1, 2]] * 6, "expand_ratio": [[1, 2]] * 6}


def test_raft_update_blocks_have_the_published_widths():
    """FACTS §3: 1x1 324->256, 3x3 256->192; 7x7 2->128, 3x3 128->64; 3x3 256->126; GRU on 128+128+128;
    flow head 128->256->2; mask 128->256->576."""
    shapes = {k: tuple(v.shape) for k, v in RAFT().update_block.state_dict().items() if k.endswith("weight")}
    assert shapes == {
        "encoder.convc1.weight": (256, 324, 1, 1), "encoder.convc2.weight": (192, 256, 3, 3),
        "encoder.convf1.weight": (128, 2, 7, 7), "encoder.convf2.weight": (64, 128, 3, 3),
        "encoder.conv.weight": (126, 256, 3, 3),
        **{f"gru.conv{g}1.weight": (128, 384, 1, 5) for g in "zrq"},
        **{f"gru.conv{g}2.weight": (128, 384, 5, 1) for g in "zrq"},
        "flow_head.conv1.weight": (256, 128, 3, 3), "flow_head.conv2.weight": (2, 256, 3, 3),
        "mask.0.weight": (256, 128, 3, 3), "mask.2.weight": (576, 256, 1, 1),
    }
    small = {k: tuple(v.shape) for k, v in RAFT(small=True).update_block.state_dict().items() if k.endswith("weight")}
    # RAFT small: corr 196 -> 96, flow 2 -> 64 -> 32, 128 -> 80 (+2 flow), 3x3 GRU on 96 + 64 + 82
    assert small == {
        "encoder.convc1.weight": (96, 196, 1, 1), "encoder.convf1.weight": (64, 2, 7, 7),
        "encoder.convf2.weight": (32, 64, 3, 3), "encoder.conv.weight": (80, 128, 3, 3),
        **{f"gru.conv{g}.weight": (96, 242, 3, 3) for g in "zrq"},
        "flow_head.conv1.weight": (128, 96, 3, 3), "flow_head.conv2.weight": (2, 128, 3, 3),
    }


@pytest.mark.parametrize("spec", [RAFT_LARGE, RAFT_SMALL, TINY_DECODER], ids=["large", "small", "tiny"])
def test_decoder_spec_round_trips_through_json(spec):
    assert DecoderSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def _edited(path: str, value) -> dict:
    d = RAFT_LARGE.to_dict()
    *parents, key = path.split(".")
    target = d
    for parent in parents:
        target = target[parent]
    if value is _DELETE:
        del target[key]
    else:
        target[key] = value
    return d


_DELETE = object()


@pytest.mark.parametrize("path, value, message", [
    ("hidden_dim", 0, r"decoder\.hidden_dim must be an integer in \[1, 4096\], got 0"),
    ("feature_dim", 128.0, r"decoder\.feature_dim must be an integer in \[1, 4096\], got 128\.0"),
    ("corr_levels", 9, r"decoder\.corr_levels must be an integer in \[1, 6\], got 9"),
    ("corr_radius", True, r"decoder\.corr_radius must be an integer in \[1, 16\], got True"),
    ("context_dim", _DELETE, r"missing key decoder\.context_dim"),
    ("typo_dim", 3, r"unknown key decoder\.typo_dim"),
    ("update", [1], r"update must be a dict"),
    ("update.corr_dims", [256, 192, 64], r"update\.corr_dims must be a list of 1 or 2 integers"),
    ("update.flow_dims", [128, -64], r"update\.flow_dims must be an integer in \[1, 4096\], got -64"),
    ("update.motion_dim", 2, r"update\.motion_dim must be an integer in \[3, 4096\], got 2"),
    ("update.mask_dim", 10**6, r"update\.mask_dim must be an integer in \[0, 4096\], got 1000000"),
    ("update.separable_gru", "yes", r"update\.separable_gru must be true or false, got 'yes'"),
    ("update.flow_head_dim", _DELETE, r"missing key update\.flow_head_dim"),
])
def test_decoder_spec_from_dict_names_the_bad_key(path, value, message):
    with pytest.raises(DecoderSpecError, match=message) as info:
        DecoderSpec.from_dict(_edited(path, value))
    assert isinstance(info.value, ToolkitError) and "\n" not in str(info.value)


def test_tiny_decoder_net_runs_and_equals_its_supernet():
    torch.manual_seed(0)
    space = SearchSpace.from_dict(TINY_SPACE)
    supernet = FlowNASSupernet(space, decoder=TINY_DECODER).eval()
    assert supernet.fnet(torch.zeros(1, 3, 128, 128)).shape == (1, 64, 16, 16)  # feature_dim
    assert supernet.cnet(torch.zeros(1, 3, 128, 128)).shape == (1, 64, 16, 16)  # hidden + context
    image1, image2 = _pair(128, 128)
    for arch in (space.largest(), space.smallest()):
        supernet.set_active(arch)
        net = supernet.extract(arch).eval()
        assert net.spec == TINY_DECODER
        with torch.no_grad():
            expected = supernet(image1, image2, iters=3)
            got = net(image1, image2, iters=3)
        assert got.shape == (1, 2, 128, 128) and torch.isfinite(got).all()
        assert torch.allclose(got, expected, atol=1e-4, rtol=1e-5), (got - expected).abs().max()


def test_config_records_only_a_non_default_decoder():
    space = SearchSpace.from_dict(TINY_SPACE)
    arch = space.smallest()
    assert "decoder" not in FlowNASNet(arch, space).config()
    assert "decoder" not in FlowNASSupernet(space).config()
    config = FlowNASNet(arch, space, decoder=TINY_DECODER).config()
    assert config["decoder"] == TINY_DECODER.to_dict()
    assert FlowNASSupernet(space, decoder=TINY_DECODER).config()["decoder"] == TINY_DECODER.to_dict()
    # what flownas.weights.build_model does with it: the same architecture and tensor shapes
    rebuilt = FlowNASNet(arch, space, decoder=DecoderSpec.from_dict(config["decoder"]))
    original = FlowNASNet(arch, space, decoder=TINY_DECODER)
    shapes = lambda model: {k: v.shape for k, v in model.state_dict().items()}  # noqa: E731
    assert shapes(rebuilt) == shapes(original)


def test_min_side_follows_the_number_of_levels():
    assert RAFT_LARGE.min_side_px == 128 and RAFT_SMALL.min_side_px == 128
    three_levels = DecoderSpec.from_dict({**TINY_DECODER.to_dict(), "corr_levels": 3})
    assert three_levels.min_side_px == 64
