"""Parse model references: `modelscope:<id>[@revision]`, `local:<path>`, `tiny`, or a registry name.

Pure string handling: no torch, no network. Resolving a reference to files is `resolve.py`'s job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Source = Literal["modelscope", "local", "tiny"]

_MS_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9\u4e00-\u9fff][\w.\u4e00-\u9fff-]*$")


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference."""

    source: Source
    location: str = ""  # ModelScope id or local path; empty for tiny
    revision: str | None = None

    def __str__(self) -> str:
        if self.source == "tiny":
            return "tiny"
        rev = f"@{self.revision}" if self.revision else ""
        return f"{self.source}:{self.location}{rev}"


def parse_ref(text: str) -> ModelRef:
    """Parse a reference string; raises ValueError naming what is wrong."""
    from harness.config.registry import BASE_MODELS

    text = text.strip()
    if text == "tiny":
        return ModelRef("tiny")
    if text in BASE_MODELS:
        return parse_ref(BASE_MODELS[text].ref)
    source, sep, rest = text.partition(":")
    if not sep:
        known = ", ".join(sorted(BASE_MODELS))
        raise ValueError(
            f"unknown model reference {text!r}: use modelscope:<id>, local:<path>, tiny "
            f"or a registered name ({known})"
        )
    if source == "modelscope":
        model_id, _, revision = rest.partition("@")
        if not _MS_ID.match(model_id):
            raise ValueError(f"not a ModelScope model id: {model_id!r} (expected owner/name)")
        return ModelRef("modelscope", model_id, revision or None)
    if source == "local":
        if not rest:
            raise ValueError("local: needs a path to a diffusers-layout folder")
        return ModelRef("local", rest)
    raise ValueError(f"unknown model source {source!r}: use modelscope:, local: or tiny")
