"""YAML read with line numbers, so a problem can name the line it is on.

Mapping keys always stay the text written (``Y:`` is the key "Y", not True),
times such as ``9:30`` stay text instead of YAML 1.1 sexagesimal numbers, and
dates stay text; a duplicate key is reported instead of silently replaced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

_KEEP_AS_TEXT = {"tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:binary"}


@dataclass
class LinedDocument:
    data: Any
    lines: dict[tuple, int] = field(default_factory=dict)
    problems: list[tuple[int, str]] = field(default_factory=list)

    def line(self, path: tuple) -> int | None:
        """Line of ``path`` (a tuple of keys and indexes), or of its nearest parent."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


def load_with_lines(text: str) -> LinedDocument:
    """Parse one YAML document; syntax errors come back as problems, not raised."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        return LinedDocument(None, {}, [(line, f"not valid YAML: {exc.problem}")])
    finally:
        loader.dispose()
    document = LinedDocument(None)
    if node is not None:
        document.data = _build(node, (), document, loader)
    return document


def _build(node, path: tuple, document: LinedDocument, loader) -> Any:
    document.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, MappingNode):
        loader.flatten_mapping(node)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                document.problems.append((line, "a key must be plain text"))
                continue
            key = key_node.value
            if key in result:
                document.problems.append((line, f"{key}: duplicate key"))
            document.lines[(*path, key)] = line
            result[key] = _build(value_node, (*path, key), document, loader)
        return result
    if isinstance(node, SequenceNode):
        return [
            _build(item, (*path, index), document, loader)
            for index, item in enumerate(node.value)
        ]
    if node.tag in _KEEP_AS_TEXT:
        return node.value
    if node.tag == "tag:yaml.org,2002:int" and ":" in node.value:
        return node.value
    if node.tag == "tag:yaml.org,2002:float" and ":" in node.value:
        return node.value
    return loader.construct_object(node, deep=True)
