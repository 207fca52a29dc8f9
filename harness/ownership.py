"""Which output folders the harness may replace: only the ones it made, for the same purpose.

Owns: the one rule every command applies before it replaces or empties an output folder (a
prepared dataset, a training run, a submission bundle). The folder may be replaced when it is
absent, empty, or holds the harness's own marker file for that purpose (the prepare report, the
training manifest, the bundle manifest) and nothing else than what the harness writes there.
A link at the folder's name, a file, a folder of someone else's, or a harness folder with a
stray file in it is refused with one line, whatever `--force` says: `--force` only chooses
between two folders the harness made. Reads with the bounded reader; the only change it makes
is `swap_in`, which moves a finished staging folder into place once the checks passed.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from harness.errors import HarnessError
from harness.safeio import read_json

State = Literal["absent", "empty", "ours"]


@dataclass(frozen=True)
class Purpose:
    """One kind of harness-made folder: its marker file, the marker's `kind`, and its contents."""

    what: str  # "a prepared dataset", for messages
    marker: str  # file name of the marker, directly in the folder
    kind: str  # the marker's "kind" field
    max_marker_bytes: int
    # The first entry of the folder the harness would not have written there (None: all ours).
    stray: Callable[[Path, dict[str, Any]], str | None]


@dataclass(frozen=True)
class Owned:
    state: State
    marker: dict[str, Any] | None = None


def inspect(folder: Path, purpose: Purpose, *, label: str | None = None) -> Owned:
    """What `folder` is for `purpose`; HarnessError (one line, starting with `label`) unless it is
    absent, empty, or a folder the harness made for this purpose holding only what it writes."""
    folder = Path(folder)
    label = label or str(folder)
    try:
        mode = os.lstat(folder).st_mode
    except FileNotFoundError:
        return Owned("absent")
    except OSError as e:
        raise HarnessError(f"{label}: cannot be inspected ({e.strerror}); nothing written") from None
    if stat.S_ISLNK(mode):
        raise HarnessError(
            f"{label}: is a symlink; the harness does not write through it (name a real folder)"
        )
    if not stat.S_ISDIR(mode):
        raise HarnessError(f"{label}: exists and is not a folder; nothing written")
    abs_folder = Path(os.path.abspath(folder))
    if abs_folder == abs_folder.parent:
        raise HarnessError(f"{label}: is the filesystem root; choose a folder of its own")
    try:
        names = os.listdir(folder)
    except OSError as e:
        raise HarnessError(f"{label}: cannot be listed ({e.strerror}); nothing written") from None
    if not names:
        return Owned("empty")
    refuse = (
        f"{label}: not empty and not {purpose.what} the harness made (no {purpose.marker} of kind "
        f"{purpose.kind}); the harness replaces only folders it made: choose another folder or empty it"
    )
    if purpose.marker not in names:
        raise HarnessError(refuse)
    try:
        marker = read_json(folder / purpose.marker, max_bytes=purpose.max_marker_bytes)
    except HarnessError:
        raise HarnessError(refuse) from None
    if not isinstance(marker, dict) or marker.get("kind") != purpose.kind:
        raise HarnessError(refuse)
    stray = purpose.stray(folder, marker)
    if stray is not None:
        raise HarnessError(
            f"{label}: holds {stray!r}, which the harness did not write there; "
            "move it away or choose another folder (nothing written)"
        )
    return Owned("ours", marker)


def check_replaceable(folder: Path, purpose: Purpose, *, label: str | None = None) -> State:
    """'absent', 'empty' or 'ours' when the harness may replace `folder`; HarnessError otherwise."""
    return inspect(folder, purpose, label=label).state


def swap_in(staging: Path, target: Path, *, replace: bool, label: str) -> None:
    """Move the finished `staging` folder to `target`; the old one (if `replace`) is moved aside
    first and deleted only after the swap, and put back if the swap fails."""
    trash = None
    try:
        if not replace:
            os.rename(staging, target)  # fails, rather than merges, if a folder appeared meanwhile
            return
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
        os.replace(target, trash / "old")
        try:
            os.replace(staging, target)
        except OSError:
            os.replace(trash / "old", target)
            raise
    except OSError as e:
        raise HarnessError(f"{label}: could not be replaced ({e.strerror}); nothing changed") from None
    finally:
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
