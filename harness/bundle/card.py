"""The bundle's README.md: a ModelScope model card rendered from a jinja2 template.

Owns: the template (`templates/model_card.md.j2`, shipped as package data), the values it gets,
and escaping: Markdown table cells, YAML front-matter strings and Python string literals in the
usage snippets. Chinese text is written as is (UTF-8), never escaped.
"""

from __future__ import annotations

import json
from typing import Any

TEMPLATE = "model_card.md.j2"
DEFAULT_LICENSE = "apache-2.0"


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _pystr(value: Any) -> str:
    # json.dumps gives a valid Python double-quoted literal body; keep CJK readable
    return json.dumps("" if value is None else str(value), ensure_ascii=False)[1:-1]


def _yaml_str(value: Any) -> str:
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid YAML scalar


def environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("harness.bundle", "templates"),
        autoescape=False,  # Markdown, not HTML; cells are escaped by the filters below
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=False,
    )
    env.filters.update(cell=_cell, pystr=_pystr, yaml_str=_yaml_str)
    return env


def score_rows(scores: dict[str, Any] | None, limit: int = 24) -> list[tuple[str, Any]]:
    """Scalar values of a scores.json (nested keys joined with '.'), per-panel lists left out."""
    if not isinstance(scores, dict):
        return []
    rows: list[tuple[str, Any]] = []

    def walk(prefix: str, value: Any, depth: int) -> None:
        if len(rows) >= limit:
            return
        if isinstance(value, dict) and depth < 3:
            for k, v in value.items():
                if k in ("per_panel", "panels", "models"):
                    continue
                walk(f"{prefix}.{k}" if prefix else str(k), v, depth + 1)
        elif isinstance(value, (str, int, float, bool)) or value is None:
            rows.append((prefix, round(value, 4) if isinstance(value, float) else value))

    walk("", scores, 0)
    return rows


def render_card(values: dict[str, Any]) -> str:
    """The README.md text for a bundle; `values` is built by `harness.bundle.writer`."""
    return environment().get_template(TEMPLATE).render(**values)
