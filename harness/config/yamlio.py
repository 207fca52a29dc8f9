"""Read YAML config files safely and report errors as `file:line: field: message`.

Owns: parsing (SafeLoader only: a config names things, it never builds Python objects),
duplicate-key detection, and mapping a pydantic error location back to a line in the file.
Must not know about any particular config kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from harness.errors import HarnessError

M = TypeVar("M", bound=BaseModel)

MAX_CONFIG_BYTES = 1 << 20  # a story or training config is a few KB; refuse anything absurd


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


def _check_duplicates(node: yaml.Node | None, path: Path) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key, value in node.value:
            k = key.value
            if k in seen:
                raise HarnessError(
                    f"{path}:{key.start_mark.line + 1}: duplicate key {k!r} (first given on line {seen[k]})"
                )
            seen[k] = key.start_mark.line + 1
            _check_duplicates(value, path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicates(item, path)


def read_yaml(path: str | Path) -> Document:
    """Parse a YAML file with the safe loader; malformed input raises HarnessError with a line."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{path}: no such file")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise HarnessError(f"{path}: file is larger than {MAX_CONFIG_BYTES} bytes; not a config")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise HarnessError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = e.problem or e.context or "parse error"
        raise HarnessError(f"{where}: malformed YAML: {what}") from None
    except yaml.YAMLError as e:
        raise HarnessError(f"{path}: malformed YAML: {e}") from None
    _check_duplicates(root, path)
    return Document(path, data, root)


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
