"""Find a file by its content: the one search for "the LoRA with this sha256".

Owns: `find_by_sha256`, used wherever a recorded hash names a file (the bundle writer finding the
LoRA a run was rendered with, the re-render finding the LoRA a panel names). Names are only
places to look; the content decides. Must not decide what a miss means: callers word that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable


def find_by_sha256(
    candidates: Iterable[Path], sha256: str | None, *, untrusted: bool = False
) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the first candidate whose content hash is `sha256`, or None; (path, sha256) of every
    other candidate that could be hashed, for the refusal line).

    Each path is looked at once. Absent files and folders are skipped. `untrusted`: a candidate
    is hashed without following a link or opening a FIFO, and one that cannot be read that way
    is skipped (`harness.hashing.sha256_file(untrusted=True)`).
    """
    from harness.hashing import sha256_file

    others: list[tuple[Path, str]] = []
    for path in dict.fromkeys(Path(c) for c in candidates):
        try:
            if untrusted:
                digest = sha256_file(path, untrusted=True)
            elif path.is_file():
                digest = sha256_file(path)
            else:
                continue
        except OSError:
            continue
        if sha256 is not None and digest == sha256:
            return path, others
        others.append((path, digest))
    return None, others
