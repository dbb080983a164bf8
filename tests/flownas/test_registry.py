"""The read-only registries: named models (flownas.registry) and datasets (flownas.data.datasets.DATASETS).

Model tests are parametrised over the registry itself, so a newly registered model is tested by them.
"""
from __future__ import annotations

import json

import pytest
import torch

from flownas.arch import ArchConfig, SearchSpace, resolve_arch
from flownas.data.datasets import DATASETS, DatasetEntry, DatasetError, build_dataset, list_datasets
from flownas.genes import Gene
from flownas.models import TINY_DECODER, FlowNASNet, FlowNASSupernet, RAFT
from flownas.registry import (MODELS, TINY_SPACE, ModelEntry, ModelRegistry, UnknownModelError, create_model,
                              list_models, model_entry)
from flownas.weights import WeightsError, build_model, named_config, untrained_model

ALL = list_models()
TINY = list_models(tag="test")
TINY_ARCHS = [n for n in TINY if model_entry(n).family == "flownas"]


# ------------------------------------------------------------------------------------------- the table
def test_registered_names() -> None:
    assert ALL == ["flownas-supernet", "largest", "raft", "raft-k", "raft-s", "raft-small", "smallest",
                   "tiny-flownas", "tiny-flownas-smallest", "tiny-supernet"]
    assert TINY == list_models("tiny-*") == ["tiny-flownas", "tiny-flownas-smallest", "tiny-supernet"]
    assert model_entry("raft-large") is model_entry("raft")
    assert "raft-large" not in ALL and "raft-large" in MODELS.names(aliases=True)


def test_named_architectures_match_flownas_arch() -> None:
    for name in ("raft-s", "raft-k", "largest", "smallest"):
        entry = model_entry(name)
        assert (entry.family, entry.config["arch"]) == ("flownas", _frozen(resolve_arch(name).to_dict()))
        assert entry.config_dict()["space"] == SearchSpace.flownas().to_dict()
    assert model_entry("tiny-flownas").config_dict()["arch"] == TINY_SPACE.largest().to_dict()
    assert model_entry("tiny-flownas-smallest").config_dict()["decoder"] == TINY_DECODER.to_dict()


def _frozen(d: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        MODELS.entries["mine"] = model_entry("raft")  # type: ignore[index]
    entry = model_entry("raft-k")
    with pytest.raises(TypeError):
        entry.config["arch"]["width"] = [1]  # type: ignore[index]
    copy = entry.config_dict()
    copy["arch"]["width"][0] = 1
    assert model_entry("raft-k").config_dict()["arch"]["width"][0] == 64
    assert json.loads(json.dumps(copy))  # plain dicts and lists


def test_unknown_name_lists_names_and_suggests() -> None:
    with pytest.raises(UnknownModelError) as err:
        model_entry("tiny-flownsa")
    message = str(err.value)
    assert message.startswith("unknown model 'tiny-flownsa' (registered: flownas-supernet, largest, raft, raft-k, ")
    assert message.endswith("; did you mean 'tiny-flownas'?") and "\n" not in message
    with pytest.raises(UnknownModelError, match=r"unknown model 'zzz' \(registered: .*\)$"):
        create_model("zzz")


def test_a_test_can_build_its_own_registry() -> None:
    mine = ModelRegistry([ModelEntry("r", "raft", {"family": "raft", "variant": "small"}, "small RAFT", ("x",))],
                         aliases={"rs": "r"})
    assert mine.names() == ["r"] and mine.names(tag="x", aliases=True) == ["r", "rs"]
    assert isinstance(mine.create("rs"), RAFT)
    with pytest.raises(ValueError, match="registered twice"):
        ModelRegistry([mine.entry("r"), mine.entry("r")])
    with pytest.raises(ValueError, match="must name a registered model"):
        ModelRegistry([mine.entry("r")], aliases={"q": "nope"})
    with pytest.raises(ValueError, match="config family 'raft' is not 'flownas'"):
        ModelEntry("r", "flownas", {"family": "raft"}, "mismatch")


# ------------------------------------------------------------------------------------------- every model
@pytest.mark.parametrize("name", ALL)
def test_every_model_builds_and_its_config_round_trips(name: str) -> None:
    entry = model_entry(name)
    model = create_model(name)
    assert not model.training
    assert model.config() == entry.config_dict()
    assert build_model(json.loads(json.dumps(model.config()))).config() == entry.config_dict()
    expected = {"raft": RAFT, "flownas": FlowNASNet, "flownas-supernet": FlowNASSupernet}[entry.family]
    assert type(model) is expected


@pytest.mark.parametrize("name", ["raft-small", "tiny-flownas"])
def test_creation_is_seeded_and_leaves_the_global_rng_alone(name: str) -> None:
    torch.manual_seed(123)
    a, b, c = create_model(name, seed=1), create_model(name, seed=1), create_model(name, seed=2)
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(3))
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items() if v.is_floating_point())


@pytest.mark.parametrize("name", TINY)
def test_tiny_models_give_finite_flow(name: str) -> None:
    model = create_model(name)
    gen = torch.Generator().manual_seed(0)
    image1 = torch.rand(1, 3, 128, 128, generator=gen) * 255
    image2 = torch.roll(image1, shifts=(2, 1), dims=(2, 3))
    with torch.no_grad():
        flow = model(image1, image2, iters=2)
    assert flow.shape == (1, 2, 128, 128) and flow.dtype == torch.float32
    assert torch.isfinite(flow).all()


@pytest.fixture(scope="module")
def tiny_supernet() -> FlowNASSupernet:
    """The tiny supernet with random BN statistics, so that extraction must carry them over exactly."""
    supernet = create_model("tiny-supernet", seed=7)
    gen = torch.Generator().manual_seed(7)
    for name, buffer in supernet.named_buffers():
        if name.endswith("running_mean"):
            buffer.copy_(torch.randn(buffer.shape, generator=gen) * 0.2)
        elif name.endswith("running_var"):
            buffer.copy_(torch.rand(buffer.shape, generator=gen) + 0.5)
    return supernet


@pytest.mark.parametrize("name", TINY_ARCHS)
def test_registered_tiny_arch_extracts_exactly(tiny_supernet: FlowNASSupernet, name: str) -> None:
    config = model_entry(name).config_dict()
    arch = ArchConfig.from_dict(config["arch"], TINY_SPACE)
    tiny_supernet.set_active(arch)
    subnet = tiny_supernet.extract(arch).eval()
    assert subnet.config() == config  # the registered config describes exactly the extracted subnet
    create_model(name).load_state_dict(subnet.state_dict())  # and builds the same tensors (strict)
    gen = torch.Generator().manual_seed(1)
    image1 = torch.rand(1, 3, 128, 160, generator=gen) * 255
    image2 = torch.roll(image1, shifts=(1, 3), dims=(2, 3))
    with torch.no_grad():
        expected = tiny_supernet(image1, image2, iters=2)
        got = subnet(image1, image2, iters=2)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-5), (got - expected).abs().max()


# ------------------------------------------------------------------------------------------- weights helpers
def test_named_config_delegates_to_the_registry() -> None:
    flownas = SearchSpace.flownas()
    assert named_config("raft-large") == model_entry("raft").config_dict()
    assert named_config("raft-k") == named_config("raft-k", flownas) == model_entry("raft-k").config_dict()
    assert named_config("tiny-flownas", flownas) == model_entry("tiny-flownas").config_dict()
    raft_k = resolve_arch("raft-k")
    assert named_config(raft_k.id) == model_entry("raft-k").config_dict()
    # in another space, the space-relative names are that space's
    assert named_config("largest", TINY_SPACE) == {"family": "flownas", "arch": TINY_SPACE.largest().to_dict(),
                                                   "space": TINY_SPACE.to_dict()}
    with pytest.raises(UnknownModelError, match=r"unknown model 'raft-xxl' \(give a registered name: .*tiny-supernet; "
                                                r"or a FlowNAS architecture id.*\); did you mean"):
        named_config("raft-xxl")


def test_untrained_model_takes_an_architecture_id_for_a_registered_name() -> None:
    # The id is resolved through the search space, not the registry: both must build the same seeded network.
    by_id, by_name = untrained_model(resolve_arch("smallest").id, seed=3), create_model("smallest", seed=3)
    assert not by_id.training and by_id.config() == by_name.config()
    assert by_id.state_dict().keys() == by_name.state_dict().keys()
    assert all(torch.equal(v, by_name.state_dict()[k]) for k, v in by_id.state_dict().items())


def test_build_model_with_a_global_gene_in_the_space() -> None:
    space = TINY_SPACE.with_genes(Gene("iters", "i", "global", (4, 8), default=8))
    arch = space.sample(0)
    net = FlowNASNet(arch, space)
    stored = json.loads(json.dumps(net.config()))
    assert stored["arch"]["iters"] == arch.iters and stored["space"]["extra_genes"][0]["name"] == "iters"
    rebuilt = build_model(stored)
    assert rebuilt.arch == arch and rebuilt.space == space


@pytest.mark.parametrize("config, problem", [
    ({"family": "resnet"}, "unknown model family 'resnet'"),
    ({"family": "raft", "variant": "medium"}, "unknown RAFT variant 'medium'"),
    ({"family": "flownas"}, "needs an 'arch' entry"),
])
def test_build_model_refuses_bad_configs(config: dict, problem: str) -> None:
    with pytest.raises(WeightsError, match=f"^model.pt: .*{problem}"):
        build_model(config, source="model.pt")


# ------------------------------------------------------------------------------------------- datasets
def test_dataset_table() -> None:
    assert list_datasets() == sorted(DATASETS) == ["chairs", "kitti", "middlebury", "sintel-clean", "sintel-final",
                                                   "synthetic", "things-clean", "things-final"]
    for name, entry in DATASETS.items():
        assert isinstance(entry, DatasetEntry) and entry.name == name
        assert entry.default_split in entry.splits and entry.description
    assert [n for n, e in DATASETS.items() if not e.needs_root] == ["synthetic"]
    with pytest.raises(TypeError):
        DATASETS["mine"] = DATASETS["kitti"]  # type: ignore[index]


def test_synthetic_needs_no_root_and_defaults_to_val() -> None:
    val = build_dataset("synthetic", None)
    assert len(val) == 32 and len(build_dataset("synthetic", None, split="train")) == 10_000
    image1, image2, flow, valid = val[0]
    assert image1.shape == (3, 256, 320) and flow.shape == (2, 256, 320) and valid.dtype == torch.bool


@pytest.mark.parametrize("name", [n for n, e in DATASETS.items() if e.needs_root])
def test_datasets_with_a_root_refuse_none_and_missing_folders(name: str, tmp_path) -> None:
    with pytest.raises(DatasetError, match=f"^dataset '{name}' needs its root folder, got None$"):
        build_dataset(name, None)
    with pytest.raises(DatasetError, match="folder not found") as err:
        build_dataset(name, tmp_path / "missing")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name, split", [("synthetic", "test"), ("kitti", "testing"), ("chairs", "all")])
def test_unknown_split_is_one_line(name: str, split: str, tmp_path) -> None:
    with pytest.raises(DatasetError, match=f"'{split}'") as err:
        build_dataset(name, tmp_path, split=split)
    assert "\n" not in str(err.value)


def test_unknown_dataset_suggests() -> None:
    with pytest.raises(DatasetError) as err:
        build_dataset("sintel", "/data")
    assert str(err.value) == ("unknown dataset 'sintel' (expected one of chairs, kitti, middlebury, sintel-clean, "
                              "sintel-final, synthetic, things-clean, things-final); did you mean 'sintel-final'?")
