"""Helpers for hostile-input tests: a tree snapshot that neither follows links, opens FIFOs nor
moves access times, and access-time tripwires on files that nothing may read."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

_NOATIME = getattr(os, "O_NOATIME", 0)


def _sha256(path: Path) -> str:
    """sha256 of a regular file read without following a link or updating its access time."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _NOATIME)
    h = hashlib.sha256()
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def snapshot(root: str | Path) -> dict[str, tuple]:
    """Every entry under `root` (relative posix path -> (type, size, sha256) for a file, ("link",
    target) for a symlink, ("dir",) for a folder, ("fifo",)/("special", mode) otherwise), as
    lstat sees it: no link followed, no FIFO opened, no access time changed (O_NOATIME)."""
    root = Path(root)
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = p.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", st.st_size, _sha256(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            elif stat.S_ISFIFO(st.st_mode):
                out[rel] = ("fifo",)
            else:
                out[rel] = ("special", stat.S_IFMT(st.st_mode))
    return out


def changed(before: dict[str, tuple], after: dict[str, tuple]) -> set[str]:
    """Paths added, removed or different between two snapshots."""
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def tripwire(path: Path) -> None:
    """Set `path`'s access time to 1970 (mtime now): any read moves it, even on relatime mounts."""
    os.utime(path, (0, os.lstat(path).st_mtime), follow_symlinks=False)


def tripped(path: Path) -> bool:
    """True when `path` was read since `tripwire(path)`."""
    return os.lstat(path).st_atime != 0
