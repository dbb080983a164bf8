"""Safe JSON/YAML reading (flownas.configfile) and the architecture / search-space files read through it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from flownas.arch import RAFT_K, ArchError, SearchSpace, SpaceError, resolve_arch
from flownas.configfile import MAX_FILE_BYTES, MAX_NESTING, MAX_VALUES, read_mapping_file


class _Refusal(ValueError):
    """The error class handed to the reader: it must raise exactly this."""


def _refused(path: Path, match: str, error: type = _Refusal, read=None) -> str:
    read = read or (lambda p: read_mapping_file(p, error))
    with pytest.raises(error, match=match) as info:
        read(path)
    message = str(info.value)
    assert path.name in message and "\n" not in message
    return message


def _write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"]
                 + [f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)])


# --------------------------------------------------------------------------------------------- good files
def test_json_and_yaml_give_the_same_dict(tmp_path: Path) -> None:
    space = SearchSpace.flownas().to_dict()
    from_json = read_mapping_file(_write(tmp_path / "s.json", json.dumps(space)), _Refusal)
    from_yaml = read_mapping_file(_write(tmp_path / "s.yaml", yaml.safe_dump(space)), _Refusal)
    assert from_json == from_yaml == space
    # A byte-order mark (some editors write one) is tolerated.
    assert read_mapping_file(_write(tmp_path / "bom.json", b"\xef\xbb\xbf" + json.dumps(space).encode()), _Refusal) == space


def test_small_yaml_aliases_are_expanded(tmp_path: Path) -> None:
    text = "k: &k [3, 5]\nkernel_size: [*k, *k, *k]\n"
    assert read_mapping_file(_write(tmp_path / "a.yaml", text), _Refusal)["kernel_size"] == [[3, 5]] * 3


def test_limits_are_the_documented_ones() -> None:
    assert (MAX_FILE_BYTES, MAX_NESTING, MAX_VALUES) == (1 << 20, 64, 100_000)


def test_nesting_just_inside_the_limit_is_read(tmp_path: Path) -> None:
    inside = "[" * MAX_NESTING + "]" * MAX_NESTING
    value = read_mapping_file(_write(tmp_path / "ok.json", inside), _Refusal)
    depth = 0
    while isinstance(value, list) and value:
        value, depth = value[0], depth + 1
    assert depth == MAX_NESTING - 1  # the innermost list is empty
    _refused(_write(tmp_path / "deep.json", "[" * (MAX_NESTING + 2) + "]" * (MAX_NESTING + 2)), "nesting")


# --------------------------------------------------------------------------------------------- bad files
def test_non_utf8(tmp_path: Path) -> None:
    message = _refused(_write(tmp_path / "latin1.json", '{"width": "caf\xe9"}'.encode("latin-1")), "not UTF-8")
    assert "0xe9" in message


@pytest.mark.parametrize("name,text", [("deep.json", "[" * 100_000 + "]" * 100_000),
                                       ("deep_objects.json", '{"a":' * 50_000 + "1" + "}" * 50_000),
                                       ("deep_flow.yaml", "[" * 100_000 + "]" * 100_000),
                                       ("deep_block.yaml", "- " * 60_000 + "1\n")])
def test_deep_nesting(tmp_path: Path, name: str, text: str) -> None:
    _refused(_write(tmp_path / name, text), "nesting")


@pytest.mark.parametrize("name,text", [("big.json", '{"width": [' + "9" * 5000 + "]}"),
                                       ("big.yaml", "width: [" + "9" * 5000 + "]\n")])
def test_5000_digit_integers(tmp_path: Path, name: str, text: str) -> None:
    _refused(_write(tmp_path / name, text), "digits")


def test_billion_laughs(tmp_path: Path) -> None:
    _refused(_write(tmp_path / "bomb.yaml", BOMB), "alias bomb")


def test_merge_key_bomb(tmp_path: Path) -> None:
    # Merge keys copy while constructing: refused from the node graph, before construction.
    lines = ["l0: &l0 {" + ", ".join(f"k{i}: {i}" for i in range(9)) + "}"]
    lines += [f"l{i}: &l{i} {{<<: [{', '.join([f'*l{i - 1}'] * 9)}]}}" for i in range(1, 9)]
    _refused(_write(tmp_path / "merge.yaml", "\n".join(lines)), "alias bomb")


@pytest.mark.parametrize("text", ["&a [*a]\n", "&a {width: *a}\n"])
def test_recursive_yaml(tmp_path: Path, text: str) -> None:
    _refused(_write(tmp_path / "loop.yaml", text), "contains itself")


def test_huge_file(tmp_path: Path) -> None:
    space = json.dumps(SearchSpace.flownas().to_dict())
    _refused(_write(tmp_path / "huge.json", " " * MAX_FILE_BYTES + space), "larger than")


def test_yaml_python_objects_are_never_built(tmp_path: Path) -> None:
    _refused(_write(tmp_path / "tag.yaml", "!!python/object/apply:os.system ['true']\n"), "not valid YAML")


def test_missing_file_and_folder(tmp_path: Path) -> None:
    _refused(tmp_path / "gone.yaml", "file not found")
    (tmp_path / "folder.json").mkdir()
    _refused(tmp_path / "folder.json", "cannot read")


def test_invalid_json_one_line(tmp_path: Path) -> None:
    _refused(_write(tmp_path / "bad.json", '{"width": [1, 2,\n\n'), "not valid JSON")


# --------------------------------------------------------------------------------------------- through flownas.arch
_BAD_FILES = {  # name: (content, what the message must say)
    "latin1.json": ('{"width": "caf\xe9"}'.encode("latin-1"), "not UTF-8"),
    "deep.json": (b"[" * 100_000 + b"]" * 100_000, "nesting"),
    "deep.yaml": (b"- " * 60_000 + b"1\n", "nesting"),
    "digits.yaml": (b"width: [" + b"9" * 5000 + b"]\n", "digits"),
    "bomb.yaml": (BOMB.encode(), "alias bomb"),
    "huge.json": (b" " * (MAX_FILE_BYTES + 1), "larger than"),
}


@pytest.mark.parametrize("name", sorted(_BAD_FILES))
def test_arch_files(tmp_path: Path, name: str) -> None:
    content, says = _BAD_FILES[name]
    path = _write(tmp_path / name, content)
    _refused(path, says, ArchError, lambda p: resolve_arch(str(p)))
    _refused(path, says, ArchError, resolve_arch)  # a Path goes straight to the file reader


@pytest.mark.parametrize("name", sorted(_BAD_FILES))
def test_space_files(tmp_path: Path, name: str) -> None:
    content, says = _BAD_FILES[name]
    _refused(_write(tmp_path / name, content), says, SpaceError, SearchSpace.from_file)


def test_out_of_space_values(tmp_path: Path) -> None:
    space = SearchSpace.flownas().to_dict()
    space["width"][0] = [10**9, -3]
    _refused(_write(tmp_path / "space.json", json.dumps(space)), "positive", SpaceError, SearchSpace.from_file)
    arch = RAFT_K.to_dict()
    arch["width"][0] = 10**9
    with pytest.raises(ArchError, match="1000000000"):
        resolve_arch(str(_write(tmp_path / "arch.json", json.dumps(arch))))


def test_out_of_space_arch_error_names_the_file(tmp_path: Path) -> None:
    arch = RAFT_K.to_dict()
    arch["width"][0] = 10**9
    _refused(_write(tmp_path / "arch.json", json.dumps(arch)), "1000000000", ArchError, lambda p: resolve_arch(str(p)))


def test_a_300_character_arch_string_is_not_a_file_name(tmp_path: Path) -> None:
    with pytest.raises(ArchError, match="unknown architecture"):
        resolve_arch("x" * 300)  # Path(...).is_file() raises ENAMETOOLONG for this
    with pytest.raises(ArchError, match="malformed architecture id"):
        resolve_arch("w" + "1" * 300)


def test_control_characters_in_yaml(tmp_path: Path) -> None:
    _refused(_write(tmp_path / "ctrl.yaml", "width: [1\x1a]\n"), "not valid YAML")
