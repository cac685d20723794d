"""Reading YAML that a user (or an attacker) wrote: limits checked before anything is composed or constructed.

Ground floor: imports only PyYAML. A few hundred bytes of anchors and aliases ("billion laughs"), a few KB of
nested brackets or a 50 MB file would otherwise make a `validate` allocate gigabytes or overflow Python's stack.
So, before composing:
- the file size is capped (`MAX_BYTES`: a suite is a few KB; the largest committed one is under 4 KB);
- one streaming pass over the parser's events (libyaml's, iterative: no recursion) counts the nodes the document
  would have *after alias expansion* (each alias costs the size of its anchored subtree, computed once) and the
  nesting depth, and stops at the first limit passed.
Only then is the node tree composed (its depth is now bounded) and constructed with SafeConstructor (no object
construction, no import paths, no code from config).
"""
from __future__ import annotations

import re

import yaml

MAX_BYTES = 1_000_000  # 1 MB: ~250x the largest suite; larger files are refused before they are read
MAX_DEPTH = 32  # nesting of mappings/sequences; the deepest committed suite nests 6
MAX_NODES = 5_000  # nodes after alias expansion; the largest committed suite has 263 (`validate` < 1 s at the limit)


class YamlLimitError(ValueError):
    """The text passes a limit; `line` is 1-based (None when unknown)."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


class Loader(yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader (libyaml's parser when present) that also reads unquoted `1e-4` as a float, as YAML 1.2 does.

    YAML 1.1 needs a dot (`1.0e-4`); quoted strings stay strings."""


Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                             list("-+0123456789."))


def check_limits(text: str) -> None:
    """Raise YamlLimitError when `text` would expand past MAX_NODES nodes or nest deeper than MAX_DEPTH."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise YamlLimitError(f"larger than {MAX_BYTES:,} bytes (a suite is a few KB)")
    sizes: dict[str, int] = {}  # anchor -> expanded node count of its subtree
    stack: list[list] = []  # open collections: [anchor, expanded node count so far]
    total = 0
    for event in yaml.parse(text, Loader=Loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            stack.append([event.anchor, 1])
            if len(stack) > MAX_DEPTH:
                raise YamlLimitError(f"nested deeper than {MAX_DEPTH} levels", _line(event))
            total += 1
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            anchor, count = stack.pop()
            if anchor is not None:
                sizes[anchor] = count
            if stack:
                stack[-1][1] += count
        elif isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent)):
            if isinstance(event, yaml.AliasEvent) and event.anchor not in sizes and \
                    any(a == event.anchor for a, _ in stack):  # a cycle: every walk of the tree would recurse forever
                raise YamlLimitError(f"recursive alias *{event.anchor} (an anchor used inside itself)", _line(event))
            count = sizes.get(event.anchor, 1) if isinstance(event, yaml.AliasEvent) else 1
            if isinstance(event, yaml.ScalarEvent) and event.anchor is not None:
                sizes[event.anchor] = 1
            if stack:
                stack[-1][1] += count
            total += count
        if total > MAX_NODES:
            raise YamlLimitError(f"expands to more than {MAX_NODES:,} nodes (aliases counted at their expanded size)",
                                 _line(event))


def _line(event: yaml.Event) -> int | None:
    return event.start_mark.line + 1 if event.start_mark is not None else None


def load(text: str) -> tuple[object, yaml.Node | None]:
    """Check the limits, then compose once: (constructed data, root node for line numbers)."""
    check_limits(text)
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return data, node
