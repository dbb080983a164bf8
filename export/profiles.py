"""TensorRT optimization profiles: the shapes each engine input may take, and trtexec-style shape specs.

Pure Python (no TensorRT): profiles are parsed and checked against a network's inputs before any build.
"""
from __future__ import annotations

from dataclasses import dataclass

from flownas.errors import UserInputError

from .inputs import parse_shape_spec  # trtexec's shape syntax, shared with --input-shape


@dataclass(frozen=True)
class ShapeProfile:
    """Shapes one input may take in an engine: TensorRT's optimization profile (min <= opt <= max per axis)."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self) -> None:
        for field in ("min", "opt", "max"):
            object.__setattr__(self, field, tuple(int(d) for d in getattr(self, field)))
        if not len(self.min) == len(self.opt) == len(self.max):
            raise UserInputError(f"profile ranks differ: min {self.min}, opt {self.opt}, max {self.max}")
        if any(d < 1 for d in self.min) or not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max)):
            raise UserInputError(f"profile needs 1 <= min <= opt <= max per axis: min {self.min}, opt {self.opt}, "
                             f"max {self.max}")

    @classmethod
    def fixed(cls, shape: tuple[int, ...]) -> "ShapeProfile":
        return cls(shape, shape, shape)

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def profiles_from_specs(min_shapes: str, opt_shapes: str | None = None,
                        max_shapes: str | None = None) -> dict[str, ShapeProfile]:
    """Profiles from three trtexec-style specs; a missing opt/max spec repeats the min shapes."""
    low = parse_shape_spec(min_shapes, "--min")
    opt = parse_shape_spec(opt_shapes, "--opt") if opt_shapes else low
    high = parse_shape_spec(max_shapes, "--max") if max_shapes else low
    if not set(low) == set(opt) == set(high):
        raise UserInputError(f"min/opt/max shape specs name different inputs: {sorted(low)}, {sorted(opt)}, "
                         f"{sorted(high)}")
    return {name: ShapeProfile(low[name], opt[name], high[name]) for name in low}


def validate_profiles(input_shapes: dict[str, tuple[int, ...]],
                      profiles: dict[str, ShapeProfile]) -> dict[str, ShapeProfile]:
    """Check profiles against a network's inputs (`-1` marks a dynamic axis); returns the profiles to set.

    Every dynamic input needs a profile; profiles may not name unknown inputs, must have the input's rank
    and must keep fixed axes at their size.
    """
    unknown = sorted(set(profiles) - set(input_shapes))
    if unknown:
        raise UserInputError(f"profiles for unknown inputs {unknown}; the network's inputs are {sorted(input_shapes)}")
    missing = [f"{name} {tuple(shape)}" for name, shape in input_shapes.items()
               if any(d < 0 for d in shape) and name not in profiles]
    if missing:
        raise UserInputError(f"dynamic inputs need shape profiles (min/opt/max): {', '.join(missing)}")
    for name, profile in profiles.items():
        shape = tuple(input_shapes[name])
        if len(profile.min) != len(shape):
            raise UserInputError(f"profile for {name} has rank {len(profile.min)}, the input has shape {shape}")
        for axis, dim in enumerate(shape):
            if dim >= 0 and {profile.min[axis], profile.opt[axis], profile.max[axis]} != {dim}:
                raise UserInputError(f"profile for {name} varies axis {axis}, which the network fixes at {dim}")
    return dict(profiles)
