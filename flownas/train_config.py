"""Training configuration: one typed, validated `TrainConfig` built from a preset or file plus `key=value` overrides.

    from flownas.train_config import load_train_config
    config = load_train_config("chairs", ["root=/data/FlyingChairs_release", "batch_size=8"])
    config = load_train_config("runs/supernet/config.yaml")        # a run's saved config, or any YAML/JSON file

Where values come from, later winning over earlier:

1. the dataclass defaults below (RAFT's optimiser settings, FACTS §6; the synthetic dataset, so a bare
   `TrainConfig()` is a valid CPU configuration);
2. the config file: a preset name (`flownas/configs/train/<name>.yaml`, see `list_presets()`) or a path to a
   YAML/JSON file. A file may say `base: NAME-or-PATH` to start from another one (chains allowed, cycles
   refused; a relative path is relative to the file that names it);
3. the overrides, `key=value` each, the value read as a YAML scalar (`steps=1000`, `lr=1e-4`,
   `freeze_bn=true`, `image_size=368x496` or `[368,496]`, `root=null`).

Every mistake a user can make is one line naming where it came from (file or override), the key, the value and
what was expected: unknown keys (with a "did you mean" hint), wrong types, out-of-range values, unknown datasets
or models, and a dataset folder that is missing. Folder checks can be turned off (`check_paths=False`) to look
at a preset without its data.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .configfile import read_mapping_file
from .errors import ToolkitError, one_line

PRESET_DIR = Path(__file__).parent / "configs" / "train"
PRECISIONS = ("none", "bf16", "fp16")
MIN_SIDE = 128      # RAFT's 4-level correlation pyramid at 1/8 resolution needs >= 2 px at its coarsest level
SIDE_MULTIPLE = 8   # features are at 1/8 resolution; the crop must divide evenly
MAX_SIDE = 4096     # far beyond any training crop; refuses a typo that would allocate terabytes
MAX_BASE_DEPTH = 16
MAX_OVERRIDE_CHARS = 4096
_PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class TrainConfigError(ToolkitError, ValueError):
    """A training configuration that cannot be used; one line naming the file/override, key and value."""


# -- field specifications ---------------------------------------------------------------------------------------
# Each field carries its kind and bounds in dataclass metadata, so validation, override parsing and the error
# messages are driven by one table instead of per-key code.
def _f(default: Any, kind: str, doc: str, **bounds: Any) -> Any:
    return field(default=default, metadata={"kind": kind, "doc": doc, **bounds})


@dataclass
class TrainConfig:
    """Everything a training run needs besides the output folder and the teacher weights (see the module doc)."""

    # what is trained, on what
    model: str = _f("flownas-supernet", "model", "registry name of the architecture trained")
    stage: str = _f("train", "str", "name of the stage shown in logs")
    dataset: str = _f("synthetic", "dataset", "training dataset (flownas.data.datasets.list_datasets())")
    root: str | None = _f(None, "path", "dataset folder (every dataset but synthetic needs one)")
    split: str | None = _f(None, "optstr", "dataset split (null: the dataset's default)")
    synthetic_length: int = _f(10_000, "int", "training pairs of the synthetic dataset", min=1)
    image_size: tuple[int, int] = _f((368, 496), "size", "training crop [H, W]")
    add_noise: bool = _f(False, "bool", "RAFT's input noise, sigma ~ U(0, 5)")
    # schedule and optimiser (RAFT, FACTS §6)
    steps: int = _f(100_000, "int", "optimizer steps", min=1)
    batch_size: int = _f(6, "int", "pairs per step (per process)", min=1)
    lr: float = _f(4e-4, "float", "peak learning rate of the one-cycle schedule", gt=0.0)
    wdecay: float = _f(1e-4, "float", "AdamW weight decay", min=0.0)
    epsilon: float = _f(1e-8, "float", "AdamW epsilon", gt=0.0)
    pct_start: float = _f(0.05, "float", "fraction of the schedule spent warming up", gt=0.0, lt=1.0)
    clip: float = _f(1.0, "float", "gradient-norm clip", gt=0.0)
    gamma: float = _f(0.8, "float", "sequence-loss decay per refinement iteration", gt=0.0, max=1.0)
    max_flow: float = _f(400.0, "float", "ground truth above this magnitude is ignored", gt=0.0)
    iters: int = _f(12, "int", "refinement iterations while training", min=1, max=64)
    seed: int = _f(1234, "int", "seed of weights, data order and subnet sampling", min=0, max=2**63 - 1)
    mixed_precision: str = _f("none", "choice", "autocast precision", choices=PRECISIONS)
    channels_last: bool = _f(False, "bool", "channels-last memory format")
    freeze_bn: bool = _f(False, "bool", "BatchNorm frozen (RAFT: every stage after chairs)")
    # supernet training (sandwich rule, FAD, in-place distillation)
    num_random_subnets: int = _f(2, "int", "random subnets per step besides the largest and smallest", min=0)
    fad_weight: float = _f(1.0, "float", "weight of feature-alignment distillation (0 = off)", min=0.0)
    inplace_distill: float = _f(0.0, "float", "weight of in-place distillation from the largest (0 = off)",
                                min=0.0)
    # checkpoints, logs, validation
    checkpoint_every: int = _f(5000, "int", "steps between checkpoints", min=1)
    keep_last: int = _f(3, "int", "checkpoints kept", min=1)
    log_every: int = _f(100, "int", "steps between log lines", min=1)
    val_every: int = _f(5000, "int", "steps between validations (0 = never)", min=0)
    val_dataset: str = _f("synthetic", "dataset", "validation dataset")
    val_root: str | None = _f(None, "path", "validation dataset folder (null: the same as root)")
    val_split: str | None = _f(None, "optstr", "validation split (null: the dataset's default)")
    val_samples: int = _f(200, "int", "validation pairs (at most)", min=1)
    val_iters: int = _f(24, "int", "refinement iterations while validating", min=1, max=256)
    bn_calib_batches: int = _f(200, "int", "pairs used to re-estimate subnet BatchNorm statistics", min=0)
    num_workers: int = _f(0, "int", "data-loading worker processes", min=0)

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            setattr(self, spec.name, _check_value(spec.name, getattr(self, spec.name)))
        # null val_root means "the training folder": RAFT validates each stage on data beside its training data
        if self.val_root is None and self.root is not None and _needs_root(self.val_dataset):
            self.val_root = self.root

    # -- conversions ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON/`weights_only`-safe values, in field order (image_size as a list)."""
        data = dataclasses.asdict(self)
        data["image_size"] = list(self.image_size)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> "TrainConfig":
        """A config from a mapping of keys (missing ones take their defaults); errors name `source`."""
        if not isinstance(data, Mapping):
            raise TrainConfigError(f"{source}: expected a mapping of keys to values, got {type(data).__name__}")
        values = {}
        for key, value in data.items():
            _known_key(key, source)
            values[key] = _prefixed(source, _check_value, key, value)
        return cls(**values)

    def save_yaml(self, path: str | os.PathLike) -> Path:
        """Write the config atomically as YAML that `load_train_config(path)` reads back equal."""
        import yaml

        from . import __version__
        from .fileio import atomic_write_text
        from .provenance import utc_now

        header = (f"# FlowNAS training config, written by flownas-toolkit {__version__} at {utc_now()}.\n"
                  f"# Every key is listed; load it with --config {Path(path).name} (overrides: key=value).\n")
        atomic_write_text(path, header + yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None))
        return Path(path)

    def check_paths(self) -> None:
        """Refuse a dataset that needs a folder without one, or a folder that does not exist."""
        _check_root("dataset", self.dataset, "root", self.root)
        if self.val_every > 0:
            _check_root("val_dataset", self.val_dataset, "val_root", self.val_root)


# -- per-value checks -------------------------------------------------------------------------------------------
FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}
_EXPECTED = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
             "optstr": "a string or null", "path": "a folder path or null", "size": "[H, W] or HxW, e.g. 368x496",
             "dataset": "a dataset name", "model": "a model name", "choice": "one of {choices}"}


def _known_key(key: Any, source: str) -> None:
    if key in FIELDS:
        return
    close = difflib.get_close_matches(str(key), list(FIELDS), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f" (known keys: {', '.join(FIELDS)})"
    raise TrainConfigError(f"{source}: unknown key {key!r}{hint}")


def _prefixed(source: str, check: Callable[..., Any], *args: Any) -> Any:
    """Run `check(*args)`, prefixing a refusal with where the value came from."""
    try:
        return check(*args)
    except TrainConfigError as exc:
        raise TrainConfigError(f"{source}: {exc}") from None


def _wrong_type(key: str, value: Any, kind: str) -> TrainConfigError:
    expected = _EXPECTED[kind].format(choices=", ".join(FIELDS[key].metadata.get("choices", ())))
    return TrainConfigError(f"key {key!r}: {_show(value)} has the wrong type (expected {expected}, "
                            f"e.g. {key}={_example(key)})")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _example(key: str) -> str:
    default = FIELDS[key].default
    if isinstance(default, tuple):
        return "x".join(map(str, default))
    if isinstance(default, bool):
        return str(default).lower()
    return "null" if default is None else str(default)


def _check_value(key: str, value: Any) -> Any:
    """`value` converted to field `key`'s type and checked against its bounds; TrainConfigError otherwise."""
    meta = FIELDS[key].metadata
    kind = meta["kind"]
    converted = _CONVERTERS[kind](key, value)
    if converted is _BAD:
        raise _wrong_type(key, value, kind)
    _check_bounds(key, converted, meta)
    return converted


_BAD = object()


def _as_int(key: str, value: Any) -> Any:
    if isinstance(value, bool):
        return _BAD
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)  # YAML 1.1 reads 1.0e5 as a float
    if isinstance(value, str) and len(value) <= 32:
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            number = _as_float(key, text)  # "1e5": YAML 1.1 keeps exponents without a dot as strings
            return int(number) if number is not _BAD and number.is_integer() else _BAD
    return _BAD


def _as_float(key: str, value: Any) -> Any:
    if isinstance(value, bool):
        return _BAD
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and len(value) <= 64:
        try:
            number = float(value.strip())  # "1e-4": a string in YAML 1.1, a number to any user
        except ValueError:
            return _BAD
    else:
        return _BAD
    return number if math.isfinite(number) else _BAD


def _as_bool(key: str, value: Any) -> Any:
    return value if isinstance(value, bool) else _BAD


def _as_str(key: str, value: Any) -> Any:
    return value.strip() if isinstance(value, str) and value.strip() else _BAD


def _as_optstr(key: str, value: Any) -> Any:
    return None if value is None else _as_str(key, value)


def _as_path(key: str, value: Any) -> Any:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    text = _as_optstr(key, value)
    return os.path.expanduser(text) if isinstance(text, str) else text


def _as_size(key: str, value: Any) -> Any:
    if isinstance(value, str):
        parts = value.strip().lower().replace(" ", "").split("x")
        if len(parts) != 2 or not all(p.isdigit() and len(p) <= 6 for p in parts):
            return _BAD
        return int(parts[0]), int(parts[1])
    if isinstance(value, (list, tuple)) and len(value) == 2 and \
            all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return int(value[0]), int(value[1])
    return _BAD


def _as_choice(key: str, value: Any) -> Any:
    return value.strip() if isinstance(value, str) else _BAD


_CONVERTERS: dict[str, Callable[[str, Any], Any]] = {
    "int": _as_int, "float": _as_float, "bool": _as_bool, "str": _as_str, "optstr": _as_optstr,
    "path": _as_path, "size": _as_size, "dataset": _as_str, "model": _as_str, "choice": _as_choice}


def _check_bounds(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    kind = meta["kind"]
    if kind == "size":
        _check_size(key, value)
    elif kind == "choice" and value not in meta["choices"]:
        raise TrainConfigError(f"key {key!r}: {value!r} is not one of {', '.join(meta['choices'])}")
    elif kind == "dataset":
        _check_dataset(key, value)
    elif kind == "model":
        _check_model(key, value)
    rules = (("min", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
             ("max", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<"))
    for name, ok, sign in rules:
        if name in meta and not ok(value, meta[name]):
            raise TrainConfigError(f"key {key!r}: {value!r} is out of range (expected {sign} {meta[name]})")


def _check_size(key: str, size: tuple[int, int]) -> None:
    for side in size:
        if side < MIN_SIDE or side > MAX_SIDE or side % SIDE_MULTIPLE:
            raise TrainConfigError(
                f"key {key!r}: {size[0]}x{size[1]} is out of range (expected sides that are multiples of "
                f"{SIDE_MULTIPLE} between {MIN_SIDE} and {MAX_SIDE}: RAFT's 4-level pyramid at 1/8 resolution)")


def _check_dataset(key: str, name: str) -> None:
    from .data.datasets import list_datasets

    names = list_datasets()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise TrainConfigError(f"key {key!r}: unknown dataset {name!r} (expected one of {', '.join(names)}){hint}")


def _check_model(key: str, name: str) -> None:
    from .registry import model_entry

    try:
        model_entry(name)
    except ToolkitError as exc:
        raise TrainConfigError(f"key {key!r}: {one_line(exc)}") from None


def _needs_root(dataset: str) -> bool:
    from .data.datasets import DATASETS

    entry = DATASETS.get(dataset)
    return bool(entry and entry.needs_root)


def _check_root(dataset_key: str, dataset: str, root_key: str, root: str | None) -> None:
    if not _needs_root(dataset):
        return
    if root is None:
        raise TrainConfigError(f"{dataset_key} {dataset!r} needs its folder but {root_key!r} is not set "
                               f"(pass {root_key}=DIR, the folder holding the dataset)")
    if not Path(root).is_dir():
        what = "is not a folder" if Path(root).exists() else "folder not found"
        raise TrainConfigError(f"{root_key}={root}: {what} (expected the folder of dataset {dataset!r})")


# -- overrides --------------------------------------------------------------------------------------------------
def parse_override(text: str) -> tuple[str, Any]:
    """`"key=value"` -> `(key, value)`, the value read as a YAML scalar and converted to the key's type.

    String-valued keys (paths, names) keep the text after '=' as written, so `root=/data/2015` stays a string;
    `null` (or nothing) unsets an optional one.
    """
    source = f"override {_show(text)}"
    if not isinstance(text, str) or "=" not in text:
        raise TrainConfigError(f"{source}: not of the form key=value (e.g. steps=1000)")
    if len(text) > MAX_OVERRIDE_CHARS:
        raise TrainConfigError(f"{source}: longer than {MAX_OVERRIDE_CHARS} characters")
    key, raw = (part.strip() for part in text.split("=", 1))
    _known_key(key, source)
    return key, _prefixed(source, _check_value, key, _override_value(key, raw, source))


def _override_value(key: str, raw: str, source: str) -> Any:
    kind = FIELDS[key].metadata["kind"]
    if raw.lower() in ("", "null", "~", "none") and kind in ("optstr", "path"):
        return None
    if kind in ("str", "optstr", "path", "dataset", "model", "choice", "size") and "[" not in raw:
        return raw  # names and paths as typed: YAML would turn 2015 into an int or yes into True
    import yaml

    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise TrainConfigError(f"{source}: value is not valid YAML ({' '.join(str(exc).split())[:120]})") from None
    if isinstance(value, dict):
        raise TrainConfigError(f"{source}: value is a mapping (expected {_EXPECTED[kind]})")
    return value


# -- presets and files ------------------------------------------------------------------------------------------
def list_presets() -> list[str]:
    """Names of the presets shipped with the toolkit (`flownas/configs/train/*.yaml`)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The file of preset `name`; an unknown name lists the presets (with a "did you mean" hint)."""
    if _PRESET_NAME.fullmatch(name) and (PRESET_DIR / f"{name}.yaml").is_file():
        return PRESET_DIR / f"{name}.yaml"
    names = list_presets()
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise TrainConfigError(f"unknown training preset {name!r} and no such file (presets: {', '.join(names)}; "
                           f"or give a path to a .yaml/.json file){hint}")


def _resolve(config: str | os.PathLike, relative_to: Path | None = None) -> Path:
    """A preset name or a file path -> the file. A bare word is a preset; anything path-like is a file."""
    if isinstance(config, os.PathLike):
        return Path(config)
    if not isinstance(config, str) or not config.strip():
        raise TrainConfigError(f"config {config!r}: expected a preset name or a path to a YAML/JSON file")
    text = config.strip()
    looks_like_path = os.sep in text or "/" in text or Path(text).suffix.lower() in (".yaml", ".yml", ".json")
    if not looks_like_path:
        return preset_path(text)
    path = Path(os.path.expanduser(text))
    return relative_to / path if relative_to is not None and not path.is_absolute() else path


def _read_chain(path: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The file and its `base:` ancestors, most basic first; cycles and over-long chains are refused."""
    chain: list[tuple[Path, dict[str, Any]]] = []
    seen: list[Path] = []
    while True:
        real = path.resolve()
        if real in seen:
            loop = " -> ".join(p.name for p in [*seen, real])
            raise TrainConfigError(f"{path}: 'base' chain loops back ({loop}); a config cannot inherit from itself")
        if len(seen) >= MAX_BASE_DEPTH:
            raise TrainConfigError(f"{path}: 'base' chain longer than {MAX_BASE_DEPTH} files")
        seen.append(real)
        data = read_mapping_file(path, TrainConfigError)
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise TrainConfigError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
        data = dict(data)
        base = data.pop("base", None)
        chain.append((path, data))
        if base is None:
            return chain[::-1]
        if not isinstance(base, str):
            raise TrainConfigError(f"{path}: key 'base': {_show(base)} is not a preset name or file path")
        path = _prefixed(str(path), _resolve, base, path.parent)


def load_train_config(config: str | os.PathLike, overrides: Sequence[str] = (), *,
                      check_paths: bool = True) -> TrainConfig:
    """The config of preset or file `config` (with its `base:` chain) plus `overrides` ("key=value" each).

    `check_paths=False` skips the dataset-folder checks (to show or test a preset without its data); training
    always wants them, so they are on by default. Errors are one line naming the file or override at fault.
    """
    if isinstance(overrides, str):
        raise TrainConfigError(f"overrides {overrides!r}: expected a list of key=value strings, not one string")
    values: dict[str, Any] = {}
    for path, data in _read_chain(_resolve(config)):
        for key, value in data.items():
            _known_key(key, str(path))
            values[key] = _prefixed(str(path), _check_value, key, value)
    for text in overrides:
        key, value = parse_override(text)
        values[key] = value
    result = TrainConfig(**values)
    if check_paths:
        _prefixed(f"config {config}", result.check_paths)
    return result
