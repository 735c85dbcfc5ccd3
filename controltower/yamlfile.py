"""YAML configuration files with line-precise errors.

Every config file (SLA definitions, alert rules, masking rules) is loaded here so that a
mistake is reported as `file:line: what is wrong` instead of a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from controltower.errors import ConfigError


@dataclass(frozen=True)
class Located:
    """A loaded YAML document plus the line (1-based) of every mapping key and list item."""

    source: str
    data: Any
    lines: dict[tuple[Any, ...], int]

    def line(self, *path: Any) -> int:
        """Line of the deepest known node on `path` (falls back towards the root)."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)

    def error(self, message: str, *path: Any) -> ConfigError:
        return ConfigError(f"{self.source}:{self.line(*path)}: {message}")

    def where(self, *path: Any) -> str:
        return f"{self.source}:{self.line(*path)}"


MAX_NODES = 100_000  # values in one config file, counted after aliases expand


class _Budget:
    """Values left to walk: aliases re-use nodes, so a "billion laughs" file of a few lines
    would otherwise expand to 9^9 values (minutes of CPU, gigabytes) before any check runs."""

    def __init__(self, source: str) -> None:
        self.left, self.source = MAX_NODES, source

    def take(self, node: yaml.Node) -> None:
        self.left -= 1
        if self.left < 0:
            raise ConfigError(f"{self.source}:{node.start_mark.line + 1}: more than {MAX_NODES} values "
                              "(anchors and aliases expanding?)")


def _walk(node: yaml.Node, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int], source: str,
          budget: _Budget) -> Any:
    budget.take(node)
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node, source)
            if key in out:
                raise ConfigError(f"{source}:{key_node.start_mark.line + 1}: duplicate key {key!r}")
            lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _walk(value_node, (*path, key), lines, source, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, (*path, i), lines, source, budget) for i, item in enumerate(node.value)]
    return _scalar(node, source)


_SEXAGESIMAL_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


def _scalar(node: yaml.Node, source: str = "<string>") -> Any:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.ScalarNode) and node.tag in _SEXAGESIMAL_TAGS and ":" in node.value:
        # YAML 1.1 reads an unquoted 17:00 as 1020 and 1:5 as 65 (base 60): nobody means that in a
        # config file (a time of day, a day range). Keep the text as written.
        return node.value
    try:
        value = yaml.constructor.SafeConstructor().construct_object(node, deep=True)
        value = tuple(value) if isinstance(value, list) else value
        hash(value)  # a key must be hashable; a mapping used as a key is not
    except yaml.MarkedYAMLError as exc:  # an unknown tag (!!python/object)
        raise ConfigError(f"{source}:{line}: not valid here: {exc.problem or exc}") from None
    except (TypeError, ValueError, OverflowError) as exc:  # `2026-13-45`, a mapping as a key
        raise ConfigError(f"{source}:{line}: not a valid value: {exc}") from None
    return value


def loads(text: str, source: str = "<string>") -> Located:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        lines: dict[tuple[Any, ...], int] = {}
        data = None if node is None else _walk(node, (), lines, source, _Budget(source))
    except RecursionError:
        raise ConfigError(f"{source}:1: nested too deeply") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError(f"{source}:{line}: not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        line = text.count("\n", 0, getattr(exc, "position", 0) or 0) + 1  # a ReaderError: a character YAML forbids
        raise ConfigError(f"{source}:{line}: not valid YAML: {exc}") from None
    return Located(source, data, lines)


def load(path: Path | str) -> Located:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    return loads(text, str(path))
