"""The ModelScope model id of a submission: `<namespace>/<team>-可图Kolors训练-<name>`.

The installed ModelScope client (modelscope 1.40 / modelscope_hub 0.5) checks only that an id
has the form `owner/name`; the hub decides the rest on the server. So the harness applies a
documented conservative rule before anything is written (docs/bundles.md):

- namespace: 1-64 characters, ASCII letters, digits, '-', '_', '.'; starts with a letter or digit;
- team and name parts: 1-64 characters from the same set, starting and ending with a letter or
  digit, no '..';
- the repository name `<team>-可图Kolors训练-<name>` (the competition's fixed Chinese infix is
  the only non-ASCII text allowed) is at most 64 characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.errors import HarnessError

INFIX = "可图Kolors训练"
MAX_PART = 64
MAX_REPO_NAME = 64

_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?")


@dataclass(frozen=True)
class ModelId:
    namespace: str
    team: str
    name: str

    @property
    def repo_name(self) -> str:
        return f"{self.team}-{INFIX}-{self.name}"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.repo_name}"


def _check_part(what: str, value: str, pattern: re.Pattern) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value) or ".." in value:
        raise HarnessError(
            f"{what} {value!r} cannot be used in a ModelScope model id: use 1-{MAX_PART} ASCII "
            "letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )


def model_id(namespace: str, team: str, name: str) -> ModelId:
    """Build and validate the model id; HarnessError naming the offending part otherwise."""
    _check_part("namespace", namespace, _NAMESPACE)
    _check_part("team", team, _PART)
    _check_part("name", name, _PART)
    mid = ModelId(namespace, team, name)
    if len(mid.repo_name) > MAX_REPO_NAME:
        raise HarnessError(
            f"model name {mid.repo_name!r} is {len(mid.repo_name)} characters, over the limit of "
            f"{MAX_REPO_NAME}: shorten the story's team or name"
        )
    return mid


def parse_model_id(text: str) -> ModelId:
    """The inverse of str(ModelId); HarnessError unless `text` follows the naming rule."""
    if not isinstance(text, str) or text.count("/") != 1:
        raise HarnessError(f"model id {text!r} is not of the form <namespace>/<team>-{INFIX}-<name>")
    namespace, repo = text.split("/")
    marker = f"-{INFIX}-"
    if repo.count(marker) != 1:
        raise HarnessError(f"model id {text!r} lacks the required '-{INFIX}-' infix")
    team, name = repo.split(marker)
    return model_id(namespace, team, name)
