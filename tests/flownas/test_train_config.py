"""Training configuration: presets, files with `base:`, overrides, validation messages, YAML round trip."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from flownas.errors import ToolkitError
from flownas.train_config import (PRESET_DIR, TrainConfig, TrainConfigError, list_presets, load_train_config,
                                  parse_override)

# RAFT's schedule, copied by hand from FACTS §6: steps, batch, lr, crop, wdecay, gamma, freeze_bn, dataset.
RAFT_STAGES = {
    "chairs": (100_000, 10, 4e-4, (368, 496), 1e-4, 0.8, False, "chairs"),
    "things": (100_000, 6, 1.25e-4, (400, 720), 1e-4, 0.8, True, "things-clean"),
    "sintel": (100_000, 6, 1.25e-4, (368, 768), 1e-5, 0.85, True, "sintel-clean"),
    "kitti": (50_000, 6, 1e-4, (288, 960), 1e-5, 0.85, True, "kitti"),
}


def _error(config="synthetic", overrides=(), **kwargs) -> str:
    with pytest.raises(TrainConfigError) as info:
        load_train_config(config, overrides, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message  # one line for the command line
    return message


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_error_class_is_a_toolkit_and_value_error():
    assert issubclass(TrainConfigError, ToolkitError) and issubclass(TrainConfigError, ValueError)


def test_presets_listed():
    assert set(list_presets()) >= {"chairs", "things", "sintel", "kitti", "synthetic", "synthetic-small"}
    assert all((PRESET_DIR / f"{name}.yaml").is_file() for name in list_presets())


@pytest.mark.parametrize("name", sorted(RAFT_STAGES))
def test_raft_presets_have_facts_values(name, tmp_path):
    config = load_train_config(name, [f"root={tmp_path}"])
    steps, batch, lr, size, wdecay, gamma, freeze_bn, dataset = RAFT_STAGES[name]
    assert (config.steps, config.batch_size, config.image_size, config.freeze_bn, config.dataset) == \
           (steps, batch, size, freeze_bn, dataset)
    assert config.lr == pytest.approx(lr, rel=1e-12)
    assert config.wdecay == pytest.approx(wdecay, rel=1e-12)
    assert config.gamma == pytest.approx(gamma, rel=1e-12)
    # RAFT's fixed settings (FACTS §6) hold for every stage
    assert (config.iters, config.seed, config.clip, config.epsilon, config.pct_start, config.max_flow) == \
           (12, 1234, 1.0, 1e-8, 0.05, 400.0)
    assert config.root == str(tmp_path)
    assert config.val_root == str(tmp_path)  # null val_root means the training folder
    assert config.stage == name


@pytest.mark.parametrize("name", ["synthetic", "synthetic-small"])
def test_synthetic_presets_need_no_folder(name):
    config = load_train_config(name)
    assert config.dataset == config.val_dataset == "synthetic" and config.root is None
    assert min(config.image_size) >= 128 and config.batch_size == 2 and config.steps <= 500
    assert config.checkpoint_every <= config.steps and config.val_every <= config.steps


def test_synthetic_small_inherits_and_shrinks():
    base, small = load_train_config("synthetic"), load_train_config("synthetic-small")
    assert (small.image_size, small.steps, small.iters) == ((128, 128), 200, 6)
    assert small.lr == base.lr and small.log_every == base.log_every  # not repeated, so inherited
    assert small.steps < base.steps


def test_every_preset_loads_without_paths_check():
    for name in list_presets():
        assert isinstance(load_train_config(name, check_paths=False), TrainConfig)


def test_default_config_is_valid_and_runs_on_synthetic():
    config = TrainConfig()
    config.check_paths()
    assert (config.num_random_subnets, config.seed, config.keep_last, config.num_workers) == (2, 1234, 3, 0)
    assert config.model == "flownas-supernet" and config.dataset == "synthetic"


# -- overrides --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, key, value", [
    ("steps=4", "steps", 4),
    ("steps=1e5", "steps", 100_000),        # YAML 1.1 reads 1e5 as a string; still an integer to a user
    ("steps=2000.0", "steps", 2000),
    ("lr=1e-4", "lr", 1e-4),
    ("lr=3", "lr", 3.0),
    ("fad_weight=0", "fad_weight", 0.0),
    ("freeze_bn=true", "freeze_bn", True),
    ("add_noise=false", "add_noise", False),
    ("image_size=368x496", "image_size", (368, 496)),
    ("image_size=[368, 496]", "image_size", (368, 496)),
    ("image_size=[368,496]", "image_size", (368, 496)),
    ("root=/data/2015", "root", "/data/2015"),   # a path stays text, never the integer of a YAML scalar
    ("root=null", "root", None),
    ("split=", "split", None),
    ("mixed_precision=bf16", "mixed_precision", "bf16"),
    ("model=raft-small", "model", "raft-small"),
    (" batch_size = 8 ", "batch_size", 8),
])
def test_parse_override_types(text, key, value):
    parsed_key, parsed = parse_override(text)
    assert parsed_key == key and parsed == value and type(parsed) is type(value)


def test_overrides_apply_last_wins():
    config = load_train_config("synthetic", ["steps=7", "lr=2e-4", "steps=9", "image_size=256x320"])
    assert (config.steps, config.lr, config.image_size) == (9, 2e-4, (256, 320))


def test_malformed_override_names_the_text():
    message = _error(overrides=["steps"])
    assert "'steps'" in message and "key=value" in message


def test_unknown_key_hint_in_override():
    message = _error(overrides=["stpes=3"])
    assert "unknown key 'stpes'" in message and "did you mean 'steps'" in message and "stpes=3" in message


def test_unknown_key_hint_names_the_file(tmp_path):
    path = _write(tmp_path / "mine.yaml", {"base": "synthetic", "batchsize": 4})
    message = _error(path)
    assert str(path) in message and "'batchsize'" in message and "did you mean 'batch_size'" in message


@pytest.mark.parametrize("text, expected", [
    ("steps=abc", "an integer"), ("steps=4.5", "an integer"), ("steps=true", "an integer"),
    ("lr=fast", "a number"), ("lr=.inf", "a number"), ("freeze_bn=1", "true or false"),
    ("image_size=368", "[H, W]"), ("image_size=[368, 496, 3]", "[H, W]"), ("image_size=368x", "[H, W]"),
])
def test_wrong_type_names_key_value_and_type(text, expected):
    key, value = text.split("=", 1)
    message = _error(overrides=[text])
    assert f"key '{key}'" in message and expected in message and value in message


def test_wrong_type_in_file_names_file_key_and_type(tmp_path):
    path = _write(tmp_path / "bad.yaml", {"steps": "many"})
    message = _error(path)
    assert str(path) in message and "key 'steps'" in message and "'many'" in message and "an integer" in message


@pytest.mark.parametrize("text, fragment", [
    ("steps=0", ">= 1"), ("batch_size=0", ">= 1"), ("lr=0", "> 0"), ("lr=-1e-4", "> 0"),
    ("fad_weight=-0.5", ">= 0"), ("checkpoint_every=0", ">= 1"), ("keep_last=0", ">= 1"),
    ("num_random_subnets=-1", ">= 0"), ("pct_start=1", "< 1"), ("gamma=1.5", "<= 1"), ("iters=0", ">= 1"),
    ("image_size=130x128", "multiples of 8"), ("image_size=120x128", "between 128"),
    ("image_size=[128, 8192]", "between 128"), ("mixed_precision=fp32", "none, bf16, fp16"),
    ("dataset=chair", "did you mean 'chairs'"), ("val_dataset=nope", "synthetic"),
    ("model=raf", "did you mean 'raft'"),
])
def test_out_of_range_values(text, fragment):
    message = _error(overrides=[text])
    assert fragment in message and f"key '{text.split('=')[0]}'" in message


def test_invalid_yaml_value_is_one_line():
    assert "not valid YAML" in _error(overrides=["image_size=[368,496"])


# -- dataset folders --------------------------------------------------------------------------------------------
def test_missing_root_for_chairs_names_root():
    message = _error("chairs")
    assert "'root'" in message and "root=DIR" in message and "chairs" in message


def test_missing_root_path_is_named(tmp_path):
    missing = tmp_path / "no-such-folder"
    message = _error("chairs", [f"root={missing}"])
    assert f"root={missing}" in message and "not found" in message


def test_root_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    assert "is not a folder" in _error("kitti", [f"root={tmp_path / 'file'}"])


def test_validation_folder_checked_only_when_validating(tmp_path):
    overrides = [f"root={tmp_path}", f"val_root={tmp_path / 'gone'}"]
    assert "val_root=" in _error("chairs", overrides)
    assert load_train_config("chairs", overrides + ["val_every=0"]).val_every == 0


def test_check_paths_false_loads_without_root():
    assert load_train_config("chairs", check_paths=False).root is None


# -- files and inheritance --------------------------------------------------------------------------------------
def test_unknown_preset_lists_presets():
    message = _error("chair")
    assert "'chair'" in message and "did you mean 'chairs'" in message
    assert all(name in message for name in list_presets())


def test_chained_base_inheritance(tmp_path):
    _write(tmp_path / "a.yaml", {"base": "synthetic", "steps": 11, "lr": 1e-3})
    _write(tmp_path / "b.yaml", {"base": "a.yaml", "steps": 22})  # relative to the file naming it
    config = load_train_config(tmp_path / "b.yaml", ["batch_size=3"])
    synthetic = load_train_config("synthetic")
    assert (config.steps, config.lr, config.batch_size) == (22, 1e-3, 3)
    assert config.image_size == synthetic.image_size and config.checkpoint_every == synthetic.checkpoint_every


def test_preset_chain_things_inherits_from_chairs(tmp_path):
    things = load_train_config("things", [f"root={tmp_path}"])
    chairs = load_train_config("chairs", [f"root={tmp_path}"])
    assert things.checkpoint_every == chairs.checkpoint_every and things.val_samples == chairs.val_samples


def test_base_cycle_is_refused(tmp_path):
    _write(tmp_path / "a.yaml", {"base": "b.yaml", "steps": 1})
    _write(tmp_path / "b.yaml", {"base": str(tmp_path / "a.yaml")})
    message = _error(tmp_path / "a.yaml")
    assert "loops back" in message and "a.yaml -> b.yaml -> a.yaml" in message


def test_base_of_itself_is_refused(tmp_path):
    _write(tmp_path / "self.yaml", {"base": "./self.yaml"})
    assert "loops back" in _error(tmp_path / "self.yaml")


def test_base_to_unknown_preset(tmp_path):
    path = _write(tmp_path / "x.yaml", {"base": "chiars"})
    message = _error(path)
    assert str(path) in message and "did you mean 'chairs'" in message


def test_json_file_and_size_string(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"steps": 3, "image_size": "256x256", "lr": "5e-4"}))
    config = load_train_config(path)
    assert (config.steps, config.image_size, config.lr) == (3, (256, 256), 5e-4)


def test_non_mapping_file(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- steps\n- 3\n")
    message = _error(path)
    assert str(path) in message and "mapping" in message


def test_missing_file_named(tmp_path):
    message = _error(str(tmp_path / "absent.yaml"))
    assert "absent.yaml" in message and "not found" in message


# -- conversions ------------------------------------------------------------------------------------------------
def test_save_yaml_round_trip(tmp_path):
    config = load_train_config("kitti", [f"root={tmp_path}", "lr=3.5e-5", "freeze_bn=false", "seed=7",
                                         "mixed_precision=bf16", "inplace_distill=0.5"])
    out = tmp_path / "run" / "config.yaml"
    config.save_yaml(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["config.yaml"]  # atomic: no temporaries left
    again = load_train_config(out)
    assert again == config
    assert yaml.safe_load(out.read_text())["image_size"] == [288, 960]


def test_to_dict_from_dict_round_trip():
    config = load_train_config("synthetic-small", ["fad_weight=0", "model=raft-small"])
    data = config.to_dict()
    assert list(data) == [f.name for f in dataclasses.fields(TrainConfig)]
    assert data["image_size"] == [128, 128] and json.loads(json.dumps(data)) == data
    assert TrainConfig.from_dict(data) == config


def test_from_dict_names_source():
    with pytest.raises(TrainConfigError, match=r"^state\.pt: unknown key 'stage_name'; did you mean 'stage'"):
        TrainConfig.from_dict({"stage_name": "x"}, source="state.pt")


def test_replace_revalidates():
    with pytest.raises(TrainConfigError, match="key 'batch_size'"):
        dataclasses.replace(TrainConfig(), batch_size=0)
