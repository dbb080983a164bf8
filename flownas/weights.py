"""Checkpoint I/O: the toolkit's own format and the published RAFT / torchvision / FlowNAS layouts.

Everything is read with `torch.load(..., weights_only=True)`: no code from a file is ever executed. What a file
holds is checked (flownas.checkpoint_checks) before a model is built from it: a bad file gives one `WeightsError`
line naming it, never a KeyError or an allocation of absurd size.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from .fileio import atomic_path
from .arch import ArchConfig, SearchSpace, resolve_arch
from .models import RAFT, DecoderSpec, FlowModel, FlowNASNet, FlowNASSupernet, model_identity
from .errors import ToolkitError, one_line
from . import checkpoint_checks as checks

FORMAT_NAME = "flownas-toolkit"
FORMAT_VERSION = 1
StateDict = Mapping[str, Tensor]


class WeightsError(ToolkitError, ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message is one readable line."""


# --------------------------------------------------------------------------------------------- reading
def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file safely (tensors and plain containers only); returns the raw top-level dict."""
    path = Path(path)
    try:
        is_file = path.is_file()
    except (OSError, ValueError):  # a name too long for the system, an embedded NUL
        is_file = False
    if not is_file:
        raise WeightsError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        raise WeightsError(f"{path}: {_load_failure(exc)}") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    return obj


def _load_failure(exc: Exception) -> str:
    """Why torch.load failed, in one line; never torch's advice to retry with weights_only=False."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return (f"holds objects other than tensors and plain containers (it refers to {found.group(1)}); "
                "the toolkit never executes code from files, so it cannot be loaded")
    # torch's own reason sits between "WeightsUnpickler error:" and its advice; the advice is left out.
    unpickler = re.search(r"WeightsUnpickler error:(.*?)(Check the documentation|$)", text, re.S)
    reason = " ".join(unpickler.group(1).split()) if unpickler else ""
    reason = reason or f"{type(exc).__name__}: {one_line(exc)}"
    return f"not a readable PyTorch checkpoint ({reason[:200]})"


def unwrap_state_dict(obj: Mapping[str, Any]) -> dict[str, Tensor]:
    """Strip training containers ('state_dict', 'model') and the DataParallel `module.` prefix.

    Non-tensor entries (epochs, optimiser settings) are dropped; a key that is not a string, or a tensor
    that is sparse, meta, quantized or complex, raises `WeightsError` (without the file name: callers add it).
    """
    for container in ("state_dict", "model_state_dict", "model"):
        inner = obj.get(container)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
            obj = inner
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if tensors:  # an empty one is refused by detect_layout, which lists what it expected
        try:
            checks.check_state_dict(tensors, "the state dict")
        except checks.CheckpointProblem as exc:
            raise WeightsError(str(exc)) from None
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in tensors.items()}


# --------------------------------------------------------------------------------------------- layouts
def detect_layout(state: StateDict) -> str:
    """Name the published layout of an (unwrapped) state dict."""
    if "fnet.first_conv.weight" in state and any(".mobile_inverted_conv." in k for k in state):
        return "flownas-supernet"
    if "fnet.conv1.weight" in state:
        return "raft-small" if "update_block.gru.convz.weight" in state else "raft-large"
    if "feature_encoder.convnormrelu.0.weight" in state:
        small = "update_block.recurrent_block.convgru2.convz.weight" not in state
        return "torchvision-raft-small" if small else "torchvision-raft-large"
    sample = ", ".join(sorted(state)[:3]) or "no tensors"
    raise WeightsError(
        "unrecognised checkpoint layout (expected princeton-vl RAFT, torchvision RAFT, FlowNAS or a "
        f"flownas-toolkit checkpoint; first keys: {sample})"
    )


_TORCHVISION_RULES: list[tuple[str, str]] = [
    (r"^feature_encoder\.", "fnet."),
    (r"^context_encoder\.", "cnet."),
    (r"\.convnormrelu\.0\.", ".conv1."),
    (r"\.convnormrelu\.1\.", ".norm1."),
    (r"\.convnormrelu(\d)\.0\.", r".conv\1."),
    (r"\.convnormrelu(\d)\.1\.", r".norm\1."),
    (r"^(fnet|cnet)\.conv\.", r"\1.conv2."),
    (r"\.motion_encoder\.convcorr(\d)\.0\.", r".encoder.convc\1."),
    (r"\.motion_encoder\.convflow(\d)\.0\.", r".encoder.convf\1."),
    (r"\.motion_encoder\.conv\.0\.", ".encoder.conv."),
    (r"^mask_predictor\.convrelu\.0\.", "update_block.mask.0."),
    (r"^mask_predictor\.conv\.", "update_block.mask.2."),
]


def torchvision_to_raft(state: StateDict) -> dict[str, Tensor]:
    """Rename torchvision's RAFT keys to the princeton-vl names this toolkit's RAFT uses."""
    small = "update_block.recurrent_block.convgru2.convz.weight" not in state
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        new = key
        for pattern, repl in _TORCHVISION_RULES:
            new = re.sub(pattern, repl, new)
        gru = re.match(r"^update_block\.recurrent_block\.convgru(\d)\.conv([zrq])\.(.*)$", new)
        if gru:
            step, gate, rest = gru.groups()
            new = f"update_block.gru.conv{gate}.{rest}" if small else f"update_block.gru.conv{gate}{step}.{rest}"
        out[new] = value
        # princeton-vl registers the downsample norm twice (normK and downsample.1): fill both names.
        down = re.match(r"^(.*\.layer\d\.0)\.downsample\.1\.(.*)$", new)
        if down:
            out[f"{down.group(1)}.{'norm4' if small else 'norm3'}.{down.group(2)}"] = value
    return out


# --------------------------------------------------------------------------------------------- applying
def load_into(model: nn.Module, state: StateDict, source: str, ignore: Callable[[str], bool] | None = None) -> None:
    """Strict load that reports every missing, unexpected and mis-shaped key in one error."""
    expected = model.state_dict()
    given = {k: v for k, v in state.items() if not (ignore and ignore(k))}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    misshaped = sorted(
        f"{k} {tuple(given[k].shape)}!={tuple(expected[k].shape)}"
        for k in set(given) & set(expected)
        if given[k].shape != expected[k].shape
    )
    problems = [
        f"{label} ({len(keys)}): {_shorten(keys)}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
        if keys
    ]
    if problems:
        raise WeightsError(f"{source}: weights do not fit {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(given, strict=True)


def _shorten(keys: list[str], limit: int = 6) -> str:
    more = f", ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


# --------------------------------------------------------------------------------------------- own format
def checkpoint_record(model: nn.Module, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """How a checkpoint was made: the toolkit's provenance record (kind "checkpoint") plus the parameter count.

    Standard keys given in `extra` (e.g. "arch_id", "iters") fill the record's own fields.
    """
    from .provenance import RECORD_KEYS, provenance

    extra = dict(extra or {})
    standard = {k: extra.pop(k) for k in ("arch_id", "resolution", "iters", "precision") if k in extra}
    standard.setdefault("arch_id", model_identity(model))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    extra = {k: v for k, v in extra.items() if k not in RECORD_KEYS}
    return provenance("checkpoint", backend="torch", device=name, **standard,
                      extra={"num_parameters": sum(p.numel() for p in model.parameters()), **extra})


def save_checkpoint(path: str | os.PathLike, model: nn.Module, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write weights + model config + metadata atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model": model.config(),
        "metadata": checkpoint_record(model, metadata),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    atomic_torch_save(payload, path)
    return path


def atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def is_toolkit_checkpoint(obj: Mapping[str, Any]) -> bool:
    return obj.get("format") == FORMAT_NAME


# --------------------------------------------------------------------------------------------- models
def build_model(config: Mapping[str, Any], source: str = "config") -> FlowModel:
    """Instantiate an (untrained) model from `FlowModel.config()`; `flownas.registry` names the usual ones.

    Families: `{"family": "raft", "variant": "large" | "small"}`; `{"family": "flownas", "arch": {...},
    "space": {...}}` (a static subnet) and `{"family": "flownas-supernet", "space": {...}}`, both with an
    optional `"decoder": DecoderSpec.to_dict()` (default RAFT large's) and space (default FlowNAS's).
    """
    family = config.get("family")
    if family == "raft":
        variant = config.get("variant", "large")
        if variant not in ("large", "small"):
            raise WeightsError(f"{source}: unknown RAFT variant {variant!r} (expected large or small)")
        return RAFT(small=variant == "small")
    if family not in ("flownas", "flownas-supernet"):
        raise WeightsError(f"{source}: unknown model family {family!r} (expected raft, flownas-supernet or flownas)")
    space = SearchSpace.from_dict(config["space"]) if "space" in config else SearchSpace.flownas()
    decoder = {"decoder": DecoderSpec.from_dict(config["decoder"])} if "decoder" in config else {}
    if family == "flownas-supernet":
        return FlowNASSupernet(space, **decoder)
    if "arch" not in config:
        raise WeightsError(f"{source}: a flownas model config needs an 'arch' entry (the published arch dict)")
    return FlowNASNet(ArchConfig.from_dict(config["arch"], space), space, **decoder)


def named_config(name: str, space: SearchSpace | None = None) -> dict[str, Any]:
    """Model config for a registered name (`flownas.registry.list_models()`) or any FlowNAS architecture
    spec (an id, a JSON/YAML file, JSON text) in `space` (default FlowNAS).

    With a `space`, architecture names (`raft-s`, `raft-k`, `largest`, `smallest`) are resolved in it;
    other registered names (`raft`, `raft-small`, `tiny-*`) keep their registered config.
    """
    from .arch import NAMED_ARCHS, SPACE_RELATIVE_NAMES, UnknownArchError
    from .registry import MODELS, UnknownModelError

    entry = MODELS.find(name)
    if entry is not None and (space is None or name not in (*NAMED_ARCHS, *SPACE_RELATIVE_NAMES)):
        return entry.config_dict()
    space = space or SearchSpace.flownas()
    try:
        arch = resolve_arch(name, space)
    except UnknownArchError:
        raise UnknownModelError(
            f"unknown model {name!r} (give a registered name: {', '.join(MODELS.names(aliases=True))}; or a "
            f"FlowNAS architecture id, JSON text or JSON/YAML file){MODELS.suggest(name)}"
        ) from None
    return {"family": "flownas", "arch": arch.to_dict(), "space": space.to_dict()}


def untrained_model(name: str, seed: int = 0) -> FlowModel:
    """A seeded, untrained model (eval mode) by name or architecture spec (for speed measurements and
    demos: latency ignores weight values). The global torch RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(named_config(name), source=f"model {name!r}").eval()


def _published_model(layout: str) -> FlowModel:
    if layout == "flownas-supernet":
        return FlowNASSupernet()
    return RAFT(small=layout.endswith("small"))


def _is_unused_release_buffer(key: str) -> bool:
    # The FlowNAS release carries per-subnet BN trackers that its own forward never reads.
    return ".bn_tracking." in key


def load_model(
    source: str | os.PathLike | Mapping[str, Any],
    arch: Any = None,
    device: str | torch.device = "cpu",
) -> FlowModel:
    """A ready model (eval mode) from a checkpoint path or a state dict, whatever its published layout.

    Layouts: princeton-vl RAFT large/small (with or without `module.`), torchvision RAFT large/small,
    the FlowNAS release (a whole supernet), and this toolkit's own format. With `arch` (a name, an id,
    a JSON file or a dict in the published format), a supernet is returned as the extracted static subnet.
    """
    if isinstance(source, (str, os.PathLike)):
        raw, label = read_checkpoint(source), str(source)
    elif isinstance(source, Mapping):
        raw, label = dict(source), "state dict"
    else:
        raise WeightsError(f"load_model: expected a checkpoint path or a dict of tensors, got {type(source).__name__}")
    if is_toolkit_checkpoint(raw):
        model = _build_checked(raw, label)
        load_into(model, raw["state_dict"], label)
    else:
        try:
            state = unwrap_state_dict(raw)
            layout = detect_layout(state)
        except WeightsError as exc:
            raise WeightsError(f"{label}: {exc}") from None
        if layout.startswith("torchvision"):
            state = torchvision_to_raft(state)
        model = _published_model(layout)
        load_into(model, state, label, ignore=_is_unused_release_buffer)
    if arch is not None:
        model = _select_arch(model, arch, label)
    return model.to(device).eval()


def _build_checked(raw: Mapping[str, Any], label: str) -> FlowModel:
    """The untrained model a toolkit checkpoint describes, after checking everything that sizes it."""
    for key in ("model", "state_dict"):
        if key not in raw:
            raise WeightsError(f"{label}: a {FORMAT_NAME} checkpoint needs a {key!r} entry (it has: "
                               f"{', '.join(checks.preview(k) for k in list(raw)[:8])})")
    config = raw["model"]
    try:
        checks.check_format_version(raw.get("format_version"), FORMAT_VERSION)
        checks.check_model_config(config)
        checks.check_state_dict(raw["state_dict"])
        if config["family"] != "raft":  # sizes come from the file: count them without allocating
            with torch.device("meta"):
                checks.check_parameter_count(_parameters(_build(config, label)))
    except checks.CheckpointProblem as exc:
        raise WeightsError(f"{label}: {exc}") from None
    return _build(config, label)


def _build(config: Mapping[str, Any], label: str) -> FlowModel:
    # ArchError / SpaceError / DecoderSpecError do not know the file: name it here.
    try:
        return build_model(config, label)
    except WeightsError:
        raise
    except ToolkitError as exc:
        raise WeightsError(f"{label}: model config: {one_line(exc)}") from None


def _parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _select_arch(model: FlowModel, arch: Any, label: str) -> FlowModel:
    if isinstance(model, FlowNASSupernet):
        return model.extract(resolve_arch(arch, model.space))
    if isinstance(model, FlowNASNet) and resolve_arch(arch, model.space) == model.arch:
        return model
    arch_of = getattr(model, "arch", None)
    holds = f"the static subnet {arch_of.id}" if arch_of is not None else f"{type(model).__name__}"
    raise WeightsError(f"{label}: --arch chooses a subnet of a FlowNAS supernet checkpoint; this one holds {holds} "
                       "(drop --arch to run it)")
