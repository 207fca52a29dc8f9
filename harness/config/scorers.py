"""The scorer name table: which scorer names a scoring config may use. Torch-free.

Built-in scorers are listed as import paths, so naming one in a config imports nothing; a
plug-in scorer adds its name through `harness.score.registry.register`, which calls `add`.
`harness.score.registry` owns the classes; this module owns only the names, so validating a
scoring YAML never loads the scoring package.
"""

from __future__ import annotations

import difflib

BUILTIN: dict[str, str] = {
    "aesthetic": "harness.score.aesthetic:AestheticScorer",
    "consistency": "harness.score.clip_consistency:ConsistencyScorer",
    "alignment": "harness.score.alignment:AlignmentScorer",
}
_added: dict[str, str] = {}  # name -> "module:Class" of scorers registered at run time


def add(name: str, target: str) -> None:
    """Record a registered scorer's name; a name already taken by another class is an error."""
    taken = BUILTIN.get(name) or _added.get(name)
    if taken is not None and taken != target:
        raise ValueError(f"a scorer named {name!r} is already registered")
    _added[name] = target


def names() -> list[str]:
    """Every scorer name known now, sorted."""
    return sorted(set(BUILTIN) | set(_added))


def check_names(wanted: list[str]) -> None:
    """ValueError for an unknown or repeated scorer name, suggesting the nearest known one."""
    known = names()
    for n in wanted:
        if n not in known:
            near = difflib.get_close_matches(n, known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ValueError(f"unknown scorer {n!r}{hint} (known: {', '.join(known)})")
    if len(set(wanted)) != len(wanted):
        raise ValueError("a scorer is named twice")
