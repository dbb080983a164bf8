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
    with pytest.raises(WeightsError, match="evil.pth: holds objects other than tensors and plain containers") as info:
        load_model(path)
    message = str(info.value)
    assert "never executes code" in message and "_Payload" in message and "\n" not in message
    assert "weights_only" not in message  # torch's advice to load it unsafely is not repeated


# --------------------------------------------------------------------------------------------- hostile checkpoints
# Every case: one WeightsError line naming the file, raised before a model of absurd size could be built.
def _own(**changes):
    """A toolkit-format RAFT-small checkpoint as save_checkpoint writes it, with entries replaced or dropped."""
    torch.manual_seed(0)
    model = RAFT(small=True)
    raw = {"format": "flownas-toolkit", "format_version": 1, "model": model.config(), "metadata": {},
           "state_dict": model.state_dict()}
    raw.update(changes)
    return {k: v for k, v in raw.items() if v is not _DROP}


_DROP = object()


def _refused(tmp_path, obj, match, name="bad.pt"):
    path = tmp_path / name
    torch.save(obj, path)
    with pytest.raises(WeightsError, match=match) as info:
        load_model(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    return message


def test_own_format_round_trip_through_the_checks(tmp_path):
    torch.manual_seed(1)
    model = RAFT(small=True).eval()
    loaded = load_model(save_checkpoint(tmp_path / "ok.pt", model))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


@pytest.mark.parametrize("obj", [[torch.zeros(1)], torch.zeros(1), None], ids=["list", "tensor", "none"])
def test_top_level_of_the_wrong_type(tmp_path, obj):
    _refused(tmp_path, obj, "expected a dict of tensors")


def test_empty_checkpoint(tmp_path):
    _refused(tmp_path, {}, "unrecognised checkpoint layout.*no tensors")


@pytest.mark.parametrize("key", ["model", "state_dict"])
def test_own_format_missing_entry(tmp_path, key):
    _refused(tmp_path, _own(**{key: _DROP}), f"needs a '{key}' entry")


@pytest.mark.parametrize("state,match", [([torch.zeros(1)], "'state_dict' is a list"),
                                         (torch.zeros(1), "'state_dict' is a Tensor"),
                                         (None, "'state_dict' is None"), ({}, "'state_dict' is empty")],
                         ids=["list", "tensor", "none", "empty"])
def test_own_format_state_dict_of_the_wrong_type(tmp_path, state, match):
    _refused(tmp_path, _own(state_dict=state), match)


@pytest.mark.parametrize("config,match", [("raft", "'model' is 'raft'"), (None, "'model' is None"),
                                          ([1], "'model' is a list"), ({"family": 5}, "model family 5"),
                                          ({"family": "raft", "variant": 7}, "variant 7")],
                         ids=["str", "none", "list", "family-int", "variant-int"])
def test_own_format_model_config_of_the_wrong_type(tmp_path, config, match):
    _refused(tmp_path, _own(model=config), match)


def test_own_format_version(tmp_path):
    _refused(tmp_path, _own(format_version="one"), "format_version")
    _refused(tmp_path, _own(format_version=99), "newer toolkit")


def test_non_string_keys(tmp_path):
    state = RAFT(small=True).state_dict()
    _refused(tmp_path, _own(state_dict={**state, 7: torch.zeros(1)}), "key 7")
    _refused(tmp_path, {1: torch.zeros(1), **{f"module.{k}": v for k, v in state.items()}}, "key 1", "pub.pth")


@pytest.mark.parametrize("value,match", [([1.0, 2.0], "is a list"), ("w", "is 'w'")], ids=["list", "str"])
def test_non_tensor_values(tmp_path, value, match):
    state = RAFT(small=True).state_dict()
    _refused(tmp_path, _own(state_dict={**state, "fnet.conv1.weight": value}), f"fnet.conv1.weight' {match}")


def _special_tensors():
    weight = RAFT(small=True).state_dict()["fnet.conv1.weight"]
    return {"sparse": (weight.to_sparse(), "sparse_coo tensor"),
            "meta": (torch.empty(weight.shape, device="meta"), "meta tensor"),
            "quantized": (torch.quantize_per_tensor(weight, 0.1, 0, torch.qint8), "quantized"),
            "complex": (weight.to(torch.complex64), "complex")}


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch deprecates quantized tensor creation
@pytest.mark.parametrize("kind", ["sparse", "meta", "quantized", "complex"])
def test_sparse_meta_quantized_tensors(tmp_path, kind):
    tensor, match = _special_tensors()[kind]
    state = RAFT(small=True).state_dict()
    _refused(tmp_path, _own(state_dict={**state, "fnet.conv1.weight": tensor}), match)
    published = {f"module.{k}": v for k, v in {**state, "fnet.conv1.weight": tensor}.items()}
    _refused(tmp_path, published, match, "published.pth")


def _supernet_config(**space_changes):
    from flownas.arch import SearchSpace

    return {"family": "flownas-supernet", "space": {**SearchSpace.flownas().to_dict(), **space_changes}}


@pytest.mark.parametrize("changes,match", [
    ({"width": [[10**9]] * 6}, "1000000000"),
    ({"width": [[10**600]] * 6}, "an integer of 1994 bits"),
    ({"depth": [[10**6]] * 6}, "1000000"),
    ({"width": [[1]] * 1000}, "1000 stages"),
    ({"stem_channels": 10**9}, "1000000000"),
], ids=["width-1e9", "600-digits", "depth-1e6", "1000-stages", "stem"])
def test_absurd_stored_search_spaces(tmp_path, changes, match):
    state = {"fnet.first_conv.weight": torch.zeros(1)}
    _refused(tmp_path, _own(model=_supernet_config(**changes), state_dict=state), match)


def test_space_within_every_maximum_but_too_large_in_total(tmp_path):
    # 16 stages of depth 16, 4096 channels, expand 8: each value is allowed, the network (~10^11 weights) is not;
    # counted on the meta device, so nothing is allocated.
    config = _supernet_config(width=[[4096]] * 16, kernel_size=[[15]] * 16, depth=[[16]] * 16,
                              expand_ratio=[[8]] * 16, strides=[1] * 16)
    _refused(tmp_path, _own(model=config, state_dict={"x": torch.zeros(1)}), "parameters, more than the")


def test_5000_digit_integers(tmp_path):
    from flownas.arch import RAFT_K, SearchSpace

    config = {"family": "flownas", "space": SearchSpace.flownas().to_dict(),
              "arch": {**RAFT_K.to_dict(), "width": [10**5000] * 6}}
    # torch's safe unpickler itself refuses integers this long (pickle opcode LONG4)...
    _refused(tmp_path, _own(model=config, state_dict={"x": torch.zeros(1)}), "not a readable PyTorch checkpoint")
    # ...an in-memory dict reaches our checks, whose message cannot print the number either.
    for model in (config, _supernet_config(width=[[10**5000]] * 6)):
        with pytest.raises(WeightsError, match="state dict: model config holds an integer of 16610 bits"):
            load_model(_own(model=model))


def test_a_300_character_arch_is_an_unknown_arch_not_an_os_error(tmp_path):
    from flownas.arch import ArchError, SearchSpace
    from flownas.models import FlowNASSupernet

    tiny = SearchSpace.from_dict({"width": [[16]] * 6, "kernel_size": [[3]] * 6, "depth": [[1]] * 6,
                                  "expand_ratio": [[1]] + [[2]] * 5})
    path = save_checkpoint(tmp_path / "supernet.pt", FlowNASSupernet(tiny))
    with pytest.raises(ArchError, match="unknown architecture"):
        load_model(path, arch="x" * 300)


def test_load_model_refuses_a_source_of_the_wrong_type():
    for source in ([torch.zeros(1)], torch.zeros(1), None):
        with pytest.raises(WeightsError, match="expected a checkpoint path or a dict of tensors"):
            load_model(source)


def test_checkpoint_path_too_long_for_the_system(tmp_path):
    with pytest.raises(WeightsError, match="checkpoint file not found"):
        load_model(tmp_path / ("x" * 300 + ".pt"))
