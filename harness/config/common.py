"""What every config kind shares: the strict base model, seeds, paths confined to the folder
of the file that names them, and the folders a `local:` model may live in.

Owns nothing that reads a file; `story.py`, `training.py` and `scoring.py` build on it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from harness.config.refs import parse_ref
from harness.config.text import path_text
from harness.config.yamlio import Document, field_error

MAX_SEED = 2**64 - 1


class StrictModel(BaseModel):
    """Unknown fields are errors, and values are not coerced ("3" is not a number)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def confined(
    root: str | Path,
    value: str,
    *,
    start: tuple[str, ...] = (),
    what: str = "the story's folder",
    folder_ok: bool = False,
) -> Path:
    """`root / start / value` for a path written in a story (or in a config a story names), or a
    ValueError saying why not.

    A story comes from a stranger, so what it names stays inside its folder: `value` is
    relative (no `/...`, no `~`, no backslash, no control character), every `..` stays inside
    `root` (`a/../b` is fine, `../x` is not), and no component on the way is a symbolic link
    (checked with lstat, so the path the file system follows is the one checked). `start` is the
    folder, relative to `root`, that `value` is relative to (a training config's own folder).
    `folder_ok`: `value` may name `root` itself (a dataset folder beside the story).
    """
    if not isinstance(value, str) or not value:
        raise ValueError("must be a relative path")
    why = bad_character_in_path(value)
    if why:
        raise ValueError(why)
    if value.startswith("~"):
        raise ValueError(f"starts with '~': write a path relative to {what} (home folders are not read)")
    if os.path.isabs(value):
        raise ValueError(f"is an absolute path: write a path relative to {what}, inside it")
    if "\\" in value:
        raise ValueError("holds a backslash: separate folders with '/'")
    root = Path(os.path.abspath(root))
    stack = list(start)
    for part in value.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                raise ValueError(f"'..' leads out of {what} ({root}); files it names must be inside it")
            stack.pop()
            continue
        stack.append(part)
        here = root.joinpath(*stack)
        try:
            mode = os.lstat(here).st_mode
        except FileNotFoundError:
            continue  # a missing file is reported by the caller; '..' after it fails to resolve
        except OSError as e:
            raise ValueError(f"{here}: {e.strerror}") from None
        if stat.S_ISLNK(mode):
            raise ValueError(f"{here} is a symlink; paths in a story never pass through links")
    if not stack and not folder_ok:
        raise ValueError(f"names {what} itself, not a file inside it")
    return root.joinpath(*stack)


def bad_character_in_path(value: str) -> str | None:
    """Why `value` cannot be a path (a control character, NUL included), or None."""
    try:
        path_text(value)
    except ValueError as e:
        return str(e)
    return None


MODEL_ROOTS_ENV = "HARNESS_MODEL_ROOTS"


def model_roots() -> list[Path]:
    """Folders a story may name a `local:` model in: the harness cache, and the folders the user
    lists in $HARNESS_MODEL_ROOTS (separated by os.pathsep). The environment is the user's."""
    from harness.paths import cache_dir

    listed = [p for p in os.environ.get(MODEL_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    return [Path(os.path.abspath(cache_dir()))] + [
        Path(os.path.abspath(os.path.expanduser(p))) for p in listed
    ]


def check_local_model(doc: Document, base_model: str) -> None:
    """A story comes from anyone: its `local:` model must be a folder the user allowed, so that a
    stranger's story cannot make the harness load and hash a folder of its choosing."""
    ref = parse_ref(base_model)
    if ref.source != "local":
        return
    where = Path(os.path.expanduser(ref.location))
    if not where.is_absolute():
        why = f"local: needs an absolute path under ${MODEL_ROOTS_ENV} (got {ref.location!r})"
        raise field_error(doc, ("base_model",), why)
    real = Path(os.path.realpath(where))  # where it really is, links resolved, must be allowed
    if not any(real == r or r in real.parents for r in (Path(os.path.realpath(x)) for x in model_roots())):
        raise field_error(
            doc,
            ("base_model",),
            f"{where} is not in a folder you allowed for models: add its folder to ${MODEL_ROOTS_ENV} "
            "(a story may come from anyone, so it cannot pick a folder for you)",
        )
