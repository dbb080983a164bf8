"""The FlowNAS supernet: published checkpoint layout, exact subnet extraction, feature taps, BN calibration."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import random_published_state
from flownas.arch import ArchError, SearchSpace, resolve_arch
from flownas.evaluate import recalibrate_bn
from flownas.models import FlowNASNet, FlowNASSupernet
from flownas.weights import load_model, save_checkpoint

SPACE = SearchSpace.flownas()
RANDOM_ARCHS = [SPACE.sample(np.random.default_rng(seed)) for seed in range(12)]
NAMED = [resolve_arch(name) for name in ("raft-s", "raft-k", "largest", "smallest")]


@pytest.fixture(scope="module")
def supernet(published_keys) -> FlowNASSupernet:
    """A supernet holding random values under the published release's names (BN statistics included)."""
    return load_model(random_published_state(published_keys, "flownas", seed=3))


def _pair(size=(128, 160), seed=0):
    gen = torch.Generator().manual_seed(seed)
    image1 = torch.rand(1, 3, *size, generator=gen) * 255
    return image1, torch.roll(image1, shifts=(1, 3), dims=(2, 3))


def test_published_layout_loads_with_nothing_missing(published_keys):
    state = random_published_state(published_keys, "flownas", seed=1)
    model = load_model(state)
    assert isinstance(model, FlowNASSupernet)
    loaded = model.state_dict()
    used = [k for k in state if ".bn_tracking." not in k]
    assert len(used) == len(loaded)  # every model tensor comes from the file
    for key in used:
        assert torch.equal(loaded[key.removeprefix("module.")], state[key]), key


@pytest.mark.parametrize("arch", NAMED + RANDOM_ARCHS, ids=lambda a: a.id)
def test_extracted_subnet_equals_supernet(supernet, arch):
    supernet.set_active(arch)
    subnet = supernet.extract(arch).eval()
    image1, image2 = _pair()
    with torch.no_grad():
        expected = supernet(image1, image2, iters=2)
        got = subnet(image1, image2, iters=2)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-5), (got - expected).abs().max()


def test_extracted_subnet_has_only_static_modules(supernet):
    subnet = supernet.extract(resolve_arch("raft-k"))
    dynamic = {type(m).__name__ for m in subnet.modules() if type(m).__module__ == "flownas.nn.dynamic"}
    assert not dynamic
    leaf_types = {type(m) for m in subnet.modules() if list(m.parameters(recurse=False))}
    assert leaf_types <= {nn.Conv2d, nn.BatchNorm2d}, leaf_types
    # stage 1 of raft-k: depth 1, expand 4 on 64 input channels -> 256 mid channels, kernel 5
    block = subnet.cnet.blocks[2]
    assert block.mobile_inverted_conv.inverted_bottleneck.conv.weight.shape == (256, 64, 1, 1)
    assert block.mobile_inverted_conv.depth_conv.conv.weight.shape == (256, 1, 5, 5)


def test_slicing_takes_leading_channels_and_centre_kernel(supernet):
    arch = resolve_arch("raft-s")  # stage 0 kernel 3: the centre of the stored 5x5 depthwise kernel
    subnet = supernet.extract(arch)
    stored = supernet.fnet.blocks[0].mobile_inverted_conv.depth_conv.conv.conv.weight
    assert torch.equal(subnet.fnet.blocks[0].mobile_inverted_conv.depth_conv.conv.weight, stored[:64, :, 1:4, 1:4])
    stored_bn = supernet.cnet.blocks[5].mobile_inverted_conv.point_linear.bn.bn.running_mean
    assert torch.equal(subnet.cnet.blocks[4].mobile_inverted_conv.point_linear.norm.running_mean, stored_bn[:96])


def test_feature_taps_match_and_have_fad_resolutions(supernet):
    arch = resolve_arch("raft-k")
    supernet.set_active(arch)
    subnet = supernet.extract(arch)
    image = torch.rand(1, 3, 128, 160) * 2 - 1
    super_taps, static_taps = [], []
    with torch.no_grad():
        supernet.cnet(image, taps=super_taps)
        subnet.cnet(image, taps=static_taps)
    sizes = [tuple(t.shape[-2:]) for t in static_taps]
    assert sizes == [(64, 80), (64, 80), (32, 40), (16, 20), (16, 20)]
    assert [t.shape[1] for t in static_taps] == [64, 72, 104, 136, 256]
    for a, b in zip(super_taps, static_taps):
        assert torch.allclose(a, b, atol=1e-5)


def test_invalid_architecture_is_refused(supernet):
    bad = resolve_arch("raft-k").to_dict()
    bad["kernel_size"][2] = 7
    with pytest.raises(ArchError, match=r"stage 2 kernel_size=7 is not one of \(3, 5\)"):
        supernet.set_active(type(resolve_arch("raft-k")).from_dict(bad))


def test_load_with_arch_returns_the_extracted_subnet(published_keys, supernet, tmp_path):
    path = tmp_path / "flownas.pth"
    torch.save(random_published_state(published_keys, "flownas", seed=3), path)
    subnet = load_model(path, arch="raft-s")
    assert isinstance(subnet, FlowNASNet) and subnet.arch == resolve_arch("raft-s")
    image1, image2 = _pair(seed=4)
    supernet.set_active(resolve_arch("raft-s"))
    with torch.no_grad():
        assert torch.allclose(subnet(image1, image2, iters=2), supernet(image1, image2, iters=2), atol=1e-4)


def test_saved_subnet_records_its_architecture(supernet, tmp_path):
    arch = resolve_arch("raft-k")
    subnet = supernet.extract(arch).eval()
    path = save_checkpoint(tmp_path / "raft-k.pt", subnet, {"arch_id": arch.id})
    raw = torch.load(path, weights_only=True)
    assert raw["model"]["family"] == "flownas" and raw["model"]["arch"] == arch.to_dict()
    assert raw["metadata"]["arch_id"] == arch.id
    reloaded = load_model(path)
    image1, image2 = _pair(seed=5)
    with torch.no_grad():
        assert torch.equal(reloaded(image1, image2, iters=2), subnet(image1, image2, iters=2))


def test_bn_recalibration_sets_batch_statistics(supernet):
    subnet = supernet.extract(resolve_arch("smallest"))
    image1, image2 = _pair(seed=6)
    recalibrate_bn(subnet, [(image1, image2)], iters=1)
    # the stem BN now holds the mean/variance of the stem conv output on this one batch
    stem = subnet.cnet.first_conv(2 * (image1 / 255) - 1)
    assert torch.allclose(subnet.cnet.norm1.running_mean, stem.mean(dim=(0, 2, 3)), atol=1e-4)
    assert torch.allclose(subnet.cnet.norm1.running_var, stem.var(dim=(0, 2, 3), unbiased=True), rtol=1e-3)
    assert not subnet.training


def test_bn_recalibration_needs_data(supernet):
    with pytest.raises(ValueError, match="at least one batch"):
        recalibrate_bn(supernet.extract(resolve_arch("smallest")), [])
