"""Precision plans: which layer group of a flow graph computes in INT8, FP16, BF16 or FP32.

A plan maps the groups of RAFT / FlowNAS (`GROUPS`) to a precision. The groups are found in the exported ONNX
graph by the node names the PyTorch tracer writes (module scopes): `/fnet/...` and `/cnet/...` for the two
encoders (stem, blocks, head), `/update_block/encoder...`, `/update_block/gru...`, `/update_block/flow_head...`,
`/update_block/mask...` for the update block (the unrolled iterations repeat the scope with a `_N` suffix,
e.g. `/update_block/gru_1/Mul`, or on the conv itself, `/update_block/gru/convz1_1/Conv`).

Whatever belongs to no group -- the correlation MatMul, the pyramid pooling, coordinate arithmetic, the
lookup Gathers / GridSample, the upsampling Softmax and the final convex upsampling -- always stays FP32
(FACTS §8: RAFT's iterative update accumulates their errors), and so do those op types inside a group and the
Convs whose output reaches sampling coordinates (the flow head's last conv, see `export.precision.coordinate_convs`).

    plan = PrecisionPlan.uniform("int8")                  # every group INT8
    plan = PrecisionPlan.load("plan.json")                # {"groups": {"gru": "fp16", ...}}, missing groups fp32
    node_precisions(onnx_model, plan)                     # node name -> precision, FP32-always nodes included
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import onnx

from flownas.errors import ToolkitError
from flownas.fileio import atomic_write_text

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# Groups in graph order; the names are those of plan files and sweep reports.
GROUPS = ("stem", "encoder_blocks", "encoder_head", "motion_encoder", "gru", "flow_head", "mask_head")
# Op types that stay FP32 wherever they are (correlation, coordinates, lookups, softmax): FACTS §8.
ALWAYS_FP32_OPS = frozenset({"MatMul", "Gemm", "Einsum", "GridSample", "Gather", "GatherElements", "GatherND",
                             "Softmax", "Floor", "Ceil", "Round"})
_SCOPES = ("fnet", "cnet")
# (group, pattern on the node name). RAFT names its encoder layers conv1/norm1/relu1, layer1-3, conv2; FlowNAS
# first_conv/norm1/Relu, blocks.N, last_conv. The stem's ReLU is traced without a submodule scope (`/fnet/Relu`).
_GROUP_PATTERNS = (
    ("stem", re.compile(r"^/(?:fnet|cnet)/(?:first_conv|conv1|norm1|bn1|relu1|Relu(?:_\d+)?)(?:/|$)")),
    ("encoder_blocks", re.compile(r"^/(?:fnet|cnet)/(?:blocks\.\d+|layer\d+)(?:/|$)")),
    ("encoder_head", re.compile(r"^/(?:fnet|cnet)/(?:last_conv|conv2)(?:/|$)")),
    ("motion_encoder", re.compile(r"^/update_block(?:_\d+)?/encoder(?:_\d+)?/")),
    ("gru", re.compile(r"^/update_block(?:_\d+)?/gru(?:_\d+)?/")),
    ("flow_head", re.compile(r"^/update_block(?:_\d+)?/flow_head(?:_\d+)?/")),
    ("mask_head", re.compile(r"^/update_block(?:_\d+)?/mask(?:_\d+)?/")),
)


class PrecisionPlanError(ToolkitError, ValueError):
    """A precision plan (file or value) is not usable; the message is one line naming the file, key or value."""


@dataclass(frozen=True)
class PrecisionPlan:
    """group -> precision; groups left out are FP32. `name` labels records ("int8", "plan.json", "mixed")."""

    groups: Mapping[str, str] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        full = {group: "fp32" for group in GROUPS}
        full.update(dict(self.groups))
        object.__setattr__(self, "groups", full)
        if not self.name:
            object.__setattr__(self, "name", self.label())
        self.validate()

    @classmethod
    def uniform(cls, precision: str) -> "PrecisionPlan":
        """Every group in `precision` (the always-FP32 parts stay FP32 all the same)."""
        _check_precision(precision, "precision")
        return cls({group: precision for group in GROUPS}, name=precision)

    @classmethod
    def from_dict(cls, data: Any, where: str = "plan") -> "PrecisionPlan":
        """`{"groups": {group: precision}}` (or the bare mapping); unknown groups or precisions are refused."""
        if isinstance(data, Mapping) and "groups" in data:
            data = data["groups"]
        if not isinstance(data, Mapping):
            raise PrecisionPlanError(f"{where}: expected an object {{group: precision}}, got {type(data).__name__}")
        for group, precision in data.items():
            if group not in GROUPS:
                raise PrecisionPlanError(f"{where}: unknown group {group!r} (expected one of {', '.join(GROUPS)})")
            _check_precision(precision, f"{where}: group {group!r}")
        return cls(dict(data), name=where if where != "plan" else "")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PrecisionPlan":
        path = Path(path)
        if not path.is_file():
            raise PrecisionPlanError(f"{path}: precision plan file not found")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise PrecisionPlanError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(data, where=str(path))

    def save(self, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> None:
        atomic_write_text(Path(path), json.dumps({**self.to_dict(), **(extra or {})}, indent=2, default=str))

    def to_dict(self) -> dict[str, Any]:
        return {"groups": dict(self.groups)}

    def validate(self) -> None:
        for group, precision in self.groups.items():
            if group not in GROUPS:
                raise PrecisionPlanError(f"plan: unknown group {group!r} (expected one of {', '.join(GROUPS)})")
            _check_precision(precision, f"plan: group {group!r}")

    def label(self) -> str:
        """The single precision when uniform ("int8"), else "mixed"."""
        used = set(self.groups.values())
        return used.pop() if len(used) == 1 else "mixed"

    def precisions(self) -> set[str]:
        return set(self.groups.values())

    def groups_in(self, precision: str) -> set[str]:
        return {group for group, value in self.groups.items() if value == precision}

    def with_group(self, group: str, precision: str) -> "PrecisionPlan":
        """A copy with one group changed (what the sensitivity sweep tries)."""
        return PrecisionPlan({**self.groups, group: precision}, name="")


def _check_precision(value: Any, where: str) -> None:
    if value not in PRECISIONS:
        raise PrecisionPlanError(f"{where}: precision {value!r} is not one of {', '.join(PRECISIONS)}")


def parse_precision(value: str) -> PrecisionPlan:
    """`--precision` value: fp32 | fp16 | bf16 | int8, or a plan JSON file (a path ending in .json)."""
    if value in PRECISIONS:
        return PrecisionPlan.uniform(value)
    if str(value).lower().endswith(".json"):
        return PrecisionPlan.load(value)
    raise PrecisionPlanError(f"--precision {value!r}: expected one of {', '.join(PRECISIONS)} or a plan .json file")


def node_group(name: str) -> str | None:
    """The layer group of an ONNX node by its name (tracer scope), or None for the always-FP32 rest."""
    for group, pattern in _GROUP_PATTERNS:
        if pattern.search(name):
            return group
    return None


def output_convs(model: onnx.ModelProto) -> frozenset[str]:
    """Output names of the Convs whose result reaches a graph output through non-Conv nodes, not counting the
    path through a Softmax: the last iteration's flow head conv (its delta becomes the output flow)."""
    from .precision import convs_reaching

    # The mask logits may be lowered; the softmax itself not: the walk stops there.
    return convs_reaching(model, [value.name for value in model.graph.output], ("Shape", "Size", "Softmax"))


def always_fp32_nodes(model: onnx.ModelProto) -> set[str]:
    """Names of the nodes no plan may lower: outside every group, FP32-only op types, and the Convs whose
    output becomes sampling coordinates (`export.precision.coordinate_convs`) or the output flow."""
    from .precision import coordinate_convs

    coords = coordinate_convs(model) | output_convs(model)
    return {node.name for node in model.graph.node
            if node_group(node.name) is None or node.op_type in ALWAYS_FP32_OPS or
            (node.op_type == "Conv" and node.output[0] in coords)}


def node_precisions(model: onnx.ModelProto, plan: PrecisionPlan) -> dict[str, str]:
    """Every named node -> the precision the plan gives it (FP32 for the always-FP32 nodes)."""
    fixed = always_fp32_nodes(model)
    return {node.name: "fp32" if node.name in fixed else plan.groups[node_group(node.name)]
            for node in model.graph.node if node.name}


def groups_present(model: onnx.ModelProto) -> list[str]:
    """Groups with at least one Conv in the graph (a model without a mask head has no `mask_head`), in order."""
    found = {node_group(node.name) for node in model.graph.node if node.op_type == "Conv"}
    return [group for group in GROUPS if group in found]


def unnamed_nodes(model: onnx.ModelProto) -> int:
    """Nodes without a name: the plan cannot place them, so they stay FP32 (the exporter names every node)."""
    return sum(1 for node in model.graph.node if not node.name)
