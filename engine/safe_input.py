"""Reading config text from users (files, ``--set`` values, Lab URLs) without being hurt by it.

A config is a few sections of scalars, a handful of levels deep and a few kilobytes long. Text
that is none of that — binary garbage, a 50 MB file, ``[[[[…`` fifty thousand levels deep, the
same key twice — is refused here with a one-line ``InputError`` naming what to fix (the caller
re-raises it as a ``ConfigError`` with the flag or key in front), before a parser can spend
minutes on it or overflow the interpreter's stack:

- size: at most ``MAX_BYTES`` (1 MB), checked while reading, so a huge file is never loaded;
- encoding: UTF-8 only (a decode error names the byte offset);
- nesting: at most ``MAX_DEPTH`` (32) levels of lists/mappings. JSON text is scanned for brackets
  before ``json.loads`` (whose C scanner recurses per level); YAML is checked while composing,
  level by level, since PyYAML's scanner and parser are iterative but its composer recurses;
- duplicate keys: refused naming the key (JSON's ``object_pairs_hook``; a YAML SafeLoader
  subclass whose ``construct_mapping`` checks keys). Silently keeping the last one trained a
  config with ``optim`` twice at the second block's lr 50;
- YAML aliases (``*name``) are refused: they would let a short file expand exponentially when the
  config is copied, and no config needs them;
- ``RecursionError`` is caught as a last resort wherever text is parsed.

Only ``yaml.SafeLoader`` semantics are used: no tags that construct Python objects.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1_000_000
MAX_DEPTH = 32

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?', re.DOTALL)  # an unterminated string runs to the end
_BRACKET = re.compile(r"[\[\]{}]")


class InputError(ValueError):
    """Text refused before or while parsing; one line, without the field prefix the caller adds.

    Kept separate from ``engine.config.ConfigError`` (which wraps it) so this module imports
    nothing from the engine.
    """


class DuplicateKeyError(ValueError):
    """Raised from inside a parser; ``where`` is the line (YAML) or empty (JSON)."""

    def __init__(self, key: Any, where: str = "") -> None:
        super().__init__(f"duplicate key {key!r}{where}; keep only one")


def json_depth(text: str) -> int:
    """Deepest bracket nesting of JSON text (brackets inside strings ignored), without parsing.

    Works on malformed text too: ``[[[[`` with no closing brackets is 4 deep, which is what the
    recursive C scanner would descend before noticing the error.
    """
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth = max(0, depth - 1)
    return deepest


def _pairs_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(key)
        out[key] = value
    return out


def loads_json(text: str) -> Any:
    """``json.loads`` with the depth cap and duplicate-key refusal (InputError).

    Other malformations raise ``json.JSONDecodeError`` / ``ValueError`` (e.g. an integer of more
    than 4,300 digits) for the caller to word.
    """
    if json_depth(text) > MAX_DEPTH:
        raise InputError(f"nested deeper than {MAX_DEPTH} levels; a config is a few sections of plain values")
    try:
        return json.loads(text, object_pairs_hook=_pairs_no_duplicates)
    except DuplicateKeyError as err:
        raise InputError(str(err)) from None
    except RecursionError:
        raise InputError(f"nested too deeply (the limit is {MAX_DEPTH} levels)") from None


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that caps nesting while composing, refuses aliases and duplicate mapping keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise InputError(f"YAML alias at line {mark.line + 1} is not supported; write the values out")
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise InputError(f"nested deeper than {MAX_DEPTH} levels (at line {mark.line + 1}); "
                                  "a config is a few sections of plain values")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: SafeLoader refuses it below with its own message
                continue
            if duplicate:
                raise DuplicateKeyError(key, f" at line {key_node.start_mark.line + 1}")
        return super().construct_mapping(node, deep=deep)


def loads_yaml(text: str) -> Any:
    """``yaml.safe_load`` with the depth cap, no aliases and duplicate-key refusal.

    Syntax errors raise ``yaml.YAMLError`` (and an absurd integer ``ValueError``) for the caller.
    """
    loader = _StrictLoader(text)
    try:
        return loader.get_single_data()
    except DuplicateKeyError as err:
        raise InputError(str(err)) from None
    except RecursionError:
        raise InputError(f"nested too deeply (the limit is {MAX_DEPTH} levels)") from None
    finally:
        loader.dispose()


def read_text(path: Path) -> str:
    """The file as UTF-8 text, refusing more than MAX_BYTES without reading the rest.

    Raises InputError (no ``--config`` prefix) or OSError for the caller to word.
    """
    with path.open("rb") as fh:
        raw = fh.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise InputError(f"larger than {MAX_BYTES // 1_000_000} MB; a config is a few kilobytes of text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
                          "save it as UTF-8 JSON or YAML") from None


def yaml_problem(err: yaml.YAMLError) -> str:
    """One line for a YAML syntax error: the problem and where, not PyYAML's multi-line report."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem:
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"{err.problem}{where}"
    return (str(err).splitlines() or [type(err).__name__])[0]


def parse_scalar_text(text: str) -> Any:
    """A ``--set`` / URL value: JSON when it parses, else the text itself (a bare string).

    Raises InputError (no key prefix) for values a config can never hold: more than MAX_BYTES,
    nesting deeper than MAX_DEPTH, duplicate keys in an object.
    """
    if len(text) > MAX_BYTES:
        raise InputError(f"value longer than {MAX_BYTES // 1_000_000} MB")
    try:
        return loads_json(text)
    except ValueError as err:  # JSONDecodeError, an integer beyond Python's digit limit, ...
        if isinstance(err, InputError):
            raise
        return text
