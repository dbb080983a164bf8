"""Safe reading of small JSON / YAML files (architectures, search spaces): every failure is one line naming the file.

A hostile or corrupt file must not exhaust memory, the stack or the CPU before it is refused, so before and
after parsing the reader enforces documented limits:

- size: at most `MAX_FILE_BYTES` (1 MiB; real files are well under 10 KB), checked before parsing;
- text: UTF-8 (a leading byte-order mark is tolerated);
- numbers: no run of more than `MAX_NUMBER_DIGITS` digits (Python refuses to convert integers of more than 4300
  digits, and no width or depth needs more than a few);
- nesting: at most `MAX_NESTING` levels of lists / mappings (parsers recurse: 100k levels overflow the stack);
- YAML aliases: the document, with every alias expanded, holds at most `MAX_VALUES` values (a "billion
  laughs" file of a few hundred bytes expands to 10^9) and no alias may contain itself. This is checked on the
  composed node graph, before any Python object is constructed (merge keys `<<:` copy while constructing).

JSON is used for `.json` files, YAML (the safe loader: plain data types only, never Python objects) otherwise.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable

MAX_FILE_BYTES = 1 << 20
MAX_NUMBER_DIGITS = 1000
MAX_NESTING = 64
MAX_VALUES = 100_000
_LONG_NUMBER = re.compile(r"\d{%d}" % (MAX_NUMBER_DIGITS + 1))


class _Refused(Exception):
    """Internal: why a file was refused; `read_mapping_file` re-raises it as the caller's error class."""


def read_mapping_file(path: str | os.PathLike, error_cls: type[Exception]) -> Any:
    """Parse a JSON (`.json`) or YAML (any other extension) file within the limits above.

    Returns the parsed value (a dict for well-formed files; callers check the type). Raises `error_cls`
    with a one-line message `"<path>: <what was wrong> (<what was expected>)"` for anything unreadable.
    """
    path = Path(path)
    try:
        text = _decode(_read_limited(path))
        if _LONG_NUMBER.search(text):
            raise _Refused(f"holds a number of more than {MAX_NUMBER_DIGITS} digits (expected small integers)")
        return _parse_json(text) if path.suffix.lower() == ".json" else _parse_yaml(text)
    except _Refused as exc:
        raise error_cls(f"{path}: {exc}") from None


def _read_limited(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)  # never more, even from a device or a growing file
    except FileNotFoundError:
        raise _Refused("file not found") from None
    except OSError as exc:  # a directory, no permission, a name too long
        raise _Refused(f"cannot read: {exc.strerror or type(exc).__name__}") from None
    except ValueError:  # an embedded NUL byte in the name
        raise _Refused("not a usable file name") from None
    if len(data) > MAX_FILE_BYTES:
        raise _Refused(f"file larger than {MAX_FILE_BYTES} bytes (expected a small JSON/YAML file)")
    return data


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _Refused(f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}; "
                       "expected a JSON/YAML text file)") from None


def _parse_json(text: str) -> Any:
    try:
        value = json.loads(text)
    except RecursionError:
        raise _Refused(f"not valid JSON: nesting too deep (at most {MAX_NESTING} levels)") from None
    except ValueError as exc:  # JSONDecodeError, and integer-conversion limits
        raise _Refused(f"not valid JSON: {' '.join(str(exc).split())}") from None
    _check_graph(value, _python_children)
    return value


def _parse_yaml(text: str) -> Any:
    import yaml  # lazy: only file-based specs need it

    try:
        loader = yaml.SafeLoader(text)  # its reader refuses control characters right away
    except yaml.YAMLError as exc:
        raise _Refused(f"not valid YAML: {' '.join(str(exc).split())}") from None
    try:
        node = loader.get_single_node()
        if node is None:  # an empty document
            return None
        _check_graph(node, _yaml_children)
        return loader.construct_document(node)
    except RecursionError:
        raise _Refused(f"not valid YAML: nesting too deep (at most {MAX_NESTING} levels)") from None
    except yaml.YAMLError as exc:  # its message spans lines; keep the error to one
        raise _Refused(f"not valid YAML: {' '.join(str(exc).split())}") from None
    except ValueError as exc:  # integer-conversion limits, bad timestamps and the like inside the constructor
        raise _Refused(f"not valid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()


def _python_children(value: Any) -> Iterable[Any]:
    if isinstance(value, dict):
        return [*value.keys(), *value.values()]
    return value if isinstance(value, list) else ()


def _yaml_children(node: Any) -> Iterable[Any]:
    import yaml

    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return node.value if isinstance(node, yaml.SequenceNode) else ()


def _check_graph(root: Any, children: Callable[[Any], Iterable[Any]]) -> None:
    """Refuse structures nested deeper than MAX_NESTING, expanding to more than MAX_VALUES values, or cyclic.

    Iterative post-order walk with one entry per distinct object, so an alias bomb costs its compact size,
    not its expanded size; `sizes` holds the expanded count of every finished object.
    """
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        item, finished = stack.pop()
        key = id(item)
        if finished:
            on_path.discard(key)
            kids = list(children(item))
            sizes[key] = 1 + sum(sizes[id(kid)] for kid in kids)
            depths[key] = 1 + max((depths[id(kid)] for kid in kids), default=0)
            if depths[key] > MAX_NESTING + 1:  # +1: the scalars at the bottom are not a level of nesting
                raise _Refused(f"nesting deeper than {MAX_NESTING} levels (expected a flat mapping of lists)")
            if sizes[key] > MAX_VALUES:
                raise _Refused(f"expands to more than {MAX_VALUES} values (YAML aliases repeated: an alias bomb?)")
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise _Refused("a YAML alias contains itself (recursive structures are not allowed)")
        on_path.add(key)
        stack.append((item, True))
        stack.extend((kid, False) for kid in children(item))
