"""Loading published layouts and the toolkit's own checkpoint format."""
from __future__ import annotations

import pytest
import torch

from conftest import random_published_state
from flownas.models import RAFT
from flownas.weights import WeightsError, detect_layout, load_model, save_checkpoint, unwrap_state_dict


def _run(model, size=128):
    gen = torch.Generator().manual_seed(0)
    image1 = torch.rand(1, 3, size, size, generator=gen) * 255
    with torch.no_grad():
        return model(image1, torch.roll(image1, 2, dims=3), iters=2)


@pytest.mark.parametrize("layout", ["raft-large", "raft-small"])
@pytest.mark.parametrize("strip_module", [False, True])
def test_princeton_layout_loads_every_tensor_in_place(published_keys, tmp_path, layout, strip_module):
    state = random_published_state(published_keys, layout, strip_module=strip_module)
    path = tmp_path / "raft.pth"
    torch.save(state, path)
    model = load_model(path)
    assert isinstance(model, RAFT) and model.spec.small == (layout == "raft-small") and not model.training
    loaded = model.state_dict()
    for name, value in state.items():
        assert torch.equal(loaded[name.removeprefix("module.")], value), name
    assert torch.isfinite(_run(model)).all()


# Hand-picked correspondences between torchvision's names and the princeton-vl names.
TORCHVISION_PAIRS = {
    "torchvision-large": [
        ("feature_encoder.convnormrelu.0.weight", "fnet.conv1.weight"),
        ("context_encoder.convnormrelu.1.running_mean", "cnet.norm1.running_mean"),
        ("context_encoder.layer2.0.convnormrelu2.1.weight", "cnet.layer2.0.norm2.weight"),
        ("context_encoder.layer3.0.downsample.1.running_var", "cnet.layer3.0.norm3.running_var"),
        ("context_encoder.layer3.0.downsample.0.weight", "cnet.layer3.0.downsample.0.weight"),
        ("feature_encoder.conv.weight", "fnet.conv2.weight"),
        ("update_block.motion_encoder.convcorr2.0.weight", "update_block.encoder.convc2.weight"),
        ("update_block.motion_encoder.convflow1.0.bias", "update_block.encoder.convf1.bias"),
        ("update_block.motion_encoder.conv.0.weight", "update_block.encoder.conv.weight"),
        ("update_block.recurrent_block.convgru1.convr.weight", "update_block.gru.convr1.weight"),
        ("update_block.recurrent_block.convgru2.convq.bias", "update_block.gru.convq2.bias"),
        ("mask_predictor.convrelu.0.weight", "update_block.mask.0.weight"),
        ("mask_predictor.conv.bias", "update_block.mask.2.bias"),
    ],
    "torchvision-small": [
        ("feature_encoder.layer1.0.convnormrelu3.0.weight", "fnet.layer1.0.conv3.weight"),
        ("context_encoder.layer2.0.downsample.0.bias", "cnet.layer2.0.downsample.0.bias"),
        ("update_block.recurrent_block.convgru1.convz.weight", "update_block.gru.convz.weight"),
        ("update_block.motion_encoder.convcorr1.0.weight", "update_block.encoder.convc1.weight"),
        ("update_block.flow_head.conv2.weight", "update_block.flow_head.conv2.weight"),
    ],
}


@pytest.mark.parametrize("layout", sorted(TORCHVISION_PAIRS))
def test_torchvision_layout_maps_to_the_same_tensors(published_keys, layout):
    state = random_published_state(published_keys, layout, seed=5)
    model = load_model(state)
    assert model.spec.small == layout.endswith("small")
    loaded = model.state_dict()
    for tv_name, our_name in TORCHVISION_PAIRS[layout]:
        assert torch.equal(loaded[our_name], state[tv_name]), tv_name
    assert torch.isfinite(_run(model)).all()


def test_layouts_are_detected(published_keys):
    for layout, expected in [("raft-large", "raft-large"), ("raft-small", "raft-small"),
                             ("torchvision-large", "torchvision-raft-large"),
                             ("torchvision-small", "torchvision-raft-small")]:
        state = unwrap_state_dict(random_published_state(published_keys, layout))
        assert detect_layout(state) == expected


def test_own_format_round_trip_keeps_flow_and_metadata(tmp_path):
    torch.manual_seed(0)
    model = RAFT(small=True).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, {"note": "unit test"})
    raw = torch.load(path, weights_only=True)
    assert raw["model"] == {"family": "raft", "variant": "small"}
    assert raw["metadata"]["note"] == "unit test" and raw["metadata"]["num_parameters"] == 990_162
    assert torch.equal(_run(load_model(path)), _run(model))
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_mis_shaped_and_missing_keys_are_listed(published_keys):
    state = random_published_state(published_keys, "raft-small", strip_module=True)
    state["fnet.conv1.weight"] = torch.zeros(16, 3, 7, 7)
    del state["update_block.flow_head.conv2.bias"]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError) as info:
        load_model(state)
    message = str(info.value)
    assert "\n" not in message
    assert "missing (1): update_block.flow_head.conv2.bias" in message
    assert "unexpected (1): extra.weight" in message
    assert "fnet.conv1.weight (16, 3, 7, 7)!=(32, 3, 7, 7)" in message


def test_bad_files_give_one_line_errors(tmp_path):
    with pytest.raises(WeightsError, match="missing.pth: checkpoint file not found"):
        load_model(tmp_path / "missing.pth")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="notes.pth: not a readable PyTorch checkpoint"):
        load_model(text)
    other = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, other)
    with pytest.raises(WeightsError, match="other.pth: unrecognised checkpoint layout"):
        load_model(other)


class _Payload:
    """An arbitrary Python object: weights_only loading must refuse to build it."""


def test_pickled_objects_are_never_executed(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"payload": _Payload()}, path)
    with pytest.raises(WeightsError, match="evil.pth: not a readable PyTorch checkpoint"):
        load_model(path)
