"""Read YAML config files safely and report errors as `file:line: field: message`.

Owns: the one bounded YAML reader (size, depth, alias count and alias-expansion caps checked
before anything walks the document; YAML 1.2 core scalars; PyYAML's SafeLoader underneath, so a
config names things and never builds Python objects), duplicate-key detection, and mapping a
pydantic error location back to a line in the file.
Must not know about any particular config kind.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from harness.errors import HarnessError, first_line
from harness.safeio import read_text

M = TypeVar("M", bound=BaseModel)

MAX_CONFIG_BYTES = 1 << 20  # a story or training config is a few KB; refuse anything absurd
MAX_DEPTH = 32  # nesting of mappings and sequences; a story needs 4
MAX_NODES = 20_000  # nodes after alias expansion; a story has about 50
MAX_SCALAR_CHARS = 4 << 20  # characters in all scalars after alias expansion
MAX_ALIASES = 100


# YAML 1.2 core schema: what a person writes is what runs. `1e-4` is a float; `yes`, `on`,
# `2024-01-01` and `1:30` are strings; a number with a leading zero, a base prefix or
# underscores (`010`, `0x10`, `0o7`, `1_000`) and base-60 forms (`1:30`) are refused as
# ambiguous, because YAML 1.1 readers (PyYAML's default) read them as other numbers.
_NULL = re.compile(r"~|null|Null|NULL|")
_BOOL = re.compile(r"true|True|TRUE|false|False|FALSE")
_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(
    r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)
_AMBIGUOUS = re.compile(
    r"[-+]?0[0-9_]+(?:\.[0-9_]*)?|[-+]?0[xXoObB][0-9a-fA-F_]*|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?"
    r"|[-+]?[0-9][0-9]*_[0-9_]*(?:\.[0-9_]*)?"
)
_AMBIGUOUS_TAG = "tag:harness,2026:ambiguous-number"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core resolution instead of 1.1's."""


_Loader.yaml_implicit_resolvers = {}
for _tag, _regex, _first in (
    ("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:bool", _BOOL, list("tTfF")),
    (_AMBIGUOUS_TAG, _AMBIGUOUS, list("-+0123456789")),
    ("tag:yaml.org,2002:int", _INT, list("-+0123456789")),
    ("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789.")),
):
    _Loader.add_implicit_resolver(_tag, re.compile(f"^(?:{_regex.pattern})$"), _first)


def plain_scalar_tag(value: str) -> str | None:
    """The tag this reader's YAML 1.2 core rules give an untagged plain scalar `value` (null,
    bool, int, float, or the ambiguous-number tag it refuses); None when it stays a string.
    For readers that must decide as this one does without building a document (the
    leaderboard's title reader)."""
    table = _Loader.yaml_implicit_resolvers
    for tag, regexp in table.get(value[:1] if value else "", []) + table.get(None, []):
        if regexp.match(value):
            return tag
    return None


def _bool(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> bool:
    return node.value.lower() == "true"


def _int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    value = node.value
    if not _INT.fullmatch(value):  # an explicit !!int on something else
        raise yaml.constructor.ConstructorError(
            None, None, f"{value!r} is not a decimal integer", node.start_mark
        )
    return int(value)


def _float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    value = node.value.lower()
    if value.endswith(("inf", "nan")):
        return float(value.replace(".", ""))
    return float(value)


def _ambiguous(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    raise yaml.constructor.ConstructorError(
        None,
        None,
        f"{node.value!r} is ambiguous (YAML 1.1 reads it as another number); write a plain decimal "
        "number, or quote it if it is text",
        node.start_mark,
    )


_Loader.add_constructor("tag:yaml.org,2002:bool", _bool)
_Loader.add_constructor("tag:yaml.org,2002:int", _int)
_Loader.add_constructor("tag:yaml.org,2002:float", _float)
_Loader.add_constructor(_AMBIGUOUS_TAG, _ambiguous)


class Document:
    """A parsed YAML file: its data plus the node tree, for line numbers."""

    def __init__(self, path: Path, data: Any, root: yaml.Node | None):
        self.path = path
        self.data = data
        self.root = root

    def line_of(self, loc: tuple[str | int, ...]) -> int | None:
        """1-based line of the deepest node on `loc` that exists in the file."""
        node = self.root
        line = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            child = None
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if key.value == part:
                        child = value
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if 0 <= part < len(node.value):
                    child = node.value[part]
            if child is None:
                break
            node = child
            line = node.start_mark.line + 1
        return line


def _scan_events(text: str, path: Path) -> None:
    """Bound depth and aliases on the event stream (PyYAML's parser is iterative; its composer
    and constructor recurse), so a deep or alias-heavy file is refused before either runs."""
    depth = aliases = events = chars = 0
    for event in yaml.parse(text, Loader=_Loader):
        events += 1
        if isinstance(event, yaml.ScalarEvent):
            chars += len(event.value)
        if events > MAX_NODES * 2 + 8 or chars > MAX_SCALAR_CHARS:  # stop before composing it all
            line = event.start_mark.line + 1
            raise HarnessError(
                f"{path}:{line}: more than {MAX_NODES} values or {MAX_SCALAR_CHARS} characters; not a config"
            )
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1
                raise HarnessError(f"{path}:{line}: nested more than {MAX_DEPTH} levels deep; not a config")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                line = event.start_mark.line + 1
                raise HarnessError(f"{path}:{line}: more than {MAX_ALIASES} aliases; not a config")


def _check_expansion(root: yaml.Node | None, path: Path) -> None:
    """Refuse alias cycles and documents whose alias expansion exceeds the node or text caps.

    Sizes are memoised per node, so the check is linear in the composed graph even when the
    expansion is exponential (the 'billion laughs')."""
    if root is None:
        return
    size: dict[int, tuple[int, int]] = {}
    on_stack: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_stack.discard(key)
            if isinstance(node, yaml.ScalarNode):
                total = (1, len(node.value))
            else:
                children = (
                    [c for pair in node.value for c in pair]
                    if isinstance(node, yaml.MappingNode)
                    else list(node.value)
                )
                nodes = 1 + sum(size[id(c)][0] for c in children)
                chars = sum(size[id(c)][1] for c in children)
                total = (nodes, chars)
            if total[0] > MAX_NODES or total[1] > MAX_SCALAR_CHARS:
                line = node.start_mark.line + 1
                raise HarnessError(
                    f"{path}:{line}: aliases expand to more than {MAX_NODES} values or "
                    f"{MAX_SCALAR_CHARS} characters; not a config"
                )
            size[key] = total
            continue
        if key in size:
            continue
        if key in on_stack:
            line = node.start_mark.line + 1
            raise HarnessError(f"{path}:{line}: an alias refers to itself (recursive data)")
        on_stack.add(key)
        stack.append((node, True))
        if isinstance(node, yaml.MappingNode):
            stack.extend((c, False) for pair in node.value for c in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((c, False) for c in node.value)


def _check_duplicates(root: yaml.Node | None, path: Path) -> None:
    seen_nodes: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key, value in node.value:
                k = key.value
                if not isinstance(k, str):
                    raise HarnessError(f"{path}:{key.start_mark.line + 1}: a key must be plain text")
                if k in seen:
                    raise HarnessError(
                        f"{path}:{key.start_mark.line + 1}: duplicate key {k!r} "
                        f"(first given on line {seen[k]})"
                    )
                seen[k] = key.start_mark.line + 1
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def loads_yaml(text: str, path: Path) -> Document:
    """Parse YAML text with the bounds above; malformed or oversized input raises one line."""
    if len(text) > MAX_CONFIG_BYTES:
        raise HarnessError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; not a config")
    try:
        _scan_events(text, path)
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
            _check_duplicates(root, path)
            _check_expansion(root, path)
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = first_line(e.problem or e.context or "parse error")
        if not isinstance(e, yaml.constructor.ConstructorError):
            what = f"malformed YAML: {what}"
        raise HarnessError(f"{where}: {what}") from None
    except yaml.YAMLError as e:
        raise HarnessError(f"{path}: malformed YAML: {first_line(e)}") from None
    except RecursionError:  # the event scan bounds depth; kept as a last guard
        raise HarnessError(f"{path}: nested too deeply; not a config") from None
    return Document(path, data, root)


def read_yaml(path: str | Path, *, follow_links: bool = False) -> Document:
    """Read and parse a YAML file with the bounded YAML 1.2 reader.

    The file is opened without following links (`follow_links` only for a path the user typed),
    must be a regular UTF-8 file under MAX_CONFIG_BYTES, and is then bounded in depth, aliases and
    expanded size before anything walks it. Any problem is one HarnessError line.
    """
    path = Path(path)
    text = read_text(path, max_bytes=MAX_CONFIG_BYTES, what=str(path), follow_links=follow_links)
    return loads_yaml(text, path)


# Top-level keys only one kind of file has: a file of the other kind is named as such.
_STORY_KEYS = {"panels", "team", "sampling"}
_TRAINING_KEYS = {"data", "max_steps", "optimizer", "resolution"}


def expect_kind(doc: Document, kind: str) -> None:
    """Refuse a training config given as a story, or a story given as a training config."""
    if not isinstance(doc.data, dict):
        return
    keys = set(doc.data)
    if kind == "story" and not keys & _STORY_KEYS and keys & _TRAINING_KEYS:
        raise HarnessError(
            f"{doc.path}: this is a LoRA training config, not a story; train it with "
            f"`harness train {doc.path}`, or name it in a story's lora.train"
        )
    if kind == "training" and not keys & _TRAINING_KEYS and keys & _STORY_KEYS:
        raise HarnessError(
            f"{doc.path}: this is a story, not a LoRA training config; render it with "
            f"`harness run {doc.path}` (which trains the LoRA first when lora.train names a training config)"
        )


def format_loc(loc: tuple[str | int, ...]) -> str:
    """('panels', 3, 'seed') -> 'panels[3].seed'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def field_error(doc: Document, loc: tuple[str | int, ...], message: str) -> HarnessError:
    """A HarnessError pointing at `loc` in `doc`: 'story.yaml:12: panels[3].seed: message'."""
    line = doc.line_of(loc)
    where = f"{doc.path}:{line}" if line else str(doc.path)
    return HarnessError(f"{where}: {format_loc(loc)}: {message}")


def _describe(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    msg = str(err.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if isinstance(err.get("input"), (str, int, float, bool)) and "(got " not in msg:
        shown = repr(err["input"])
        if len(shown) > 60:
            shown = shown[:57] + "..."
        msg = f"{msg} (got {shown})"
    return msg


def parse_model(doc: Document, model: type[M]) -> M:
    """Validate `doc.data` against a strict model; the first error becomes one clear line."""
    if not isinstance(doc.data, dict):
        raise HarnessError(f"{doc.path}: expected a mapping of fields at the top level")
    try:
        return model.model_validate(doc.data)
    except ValidationError as e:
        errors = e.errors()
        first = errors[0]
        loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise field_error(doc, loc, _describe(first) + more) from None
