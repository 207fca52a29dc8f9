"""Content hashes for files and model folders, with a cache so 20 GB of weights hash once.

A folder's hash is the sha256 of its sorted (relative path, file sha256) list, so it does not
depend on where the folder lives. Per-file digests are cached by (path, size, mtime, ctime,
inode): a write always moves ctime, which no user can set back, so an edited file never hits a
stale entry even when its size and mtime were restored.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

_CHUNK = 1 << 20
# Bookkeeping that download tools leave beside the weights; not part of the model's content.
_IGNORED_PREFIXES = (".", "__pycache__")


def sha256_file(path: str | Path, *, untrusted: bool = False) -> str:
    """sha256 of a file's bytes. `untrusted` (a file in a folder the harness did not make): a
    link is not followed and a FIFO or device is refused instead of blocking (OSError)."""
    h = hashlib.sha256()
    if not untrusted:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        return h.hexdigest()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path}: not a regular file")
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class DigestCache:
    """A JSON file mapping 'path|size|mtime_ns|ctime_ns|inode' to sha256; stale entries miss.

    `prune`: `save` keeps only the entries used since loading (a cache over a folder whose files
    come and go, such as the leaderboard's, does not grow forever).
    """

    def __init__(self, file: Path | None, *, prune: bool = False, untrusted: bool = False):
        self.file = file
        self.prune = prune
        self.untrusted = untrusted  # hash without following links (see sha256_file)
        self.entries: dict[str, str] = {}
        self.used: set[str] = set()
        if file is not None and file.is_file() and not file.is_symlink():
            from harness.errors import HarnessError
            from harness.safeio import read_json

            try:
                loaded = read_json(file, max_bytes=256 << 20, max_depth=2)
                loaded = loaded if isinstance(loaded, dict) else {}
                self.entries = {k: v for k, v in loaded.items() if isinstance(v, str)}
            except HarnessError:
                self.entries = {}
        self.dirty = False

    def digest(self, path: Path) -> str:
        st = path.lstat() if self.untrusted else path.stat()
        where = path.absolute() if self.untrusted else path.resolve()
        key = f"{where}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"
        self.used.add(key)
        if key not in self.entries:
            self.entries[key] = sha256_file(path, untrusted=self.untrusted)
            self.dirty = True
        return self.entries[key]

    def save(self) -> None:
        if self.file is None:
            return
        if self.prune and len(self.used) != len(self.entries):
            self.entries = {k: v for k, v in self.entries.items() if k in self.used}
            self.dirty = True
        if not self.dirty:
            return
        from harness.safeio import write_atomic

        self.file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.file, json.dumps(self.entries))


def tree_files(root: Path) -> list[Path]:
    """Regular files under `root` that make up its content, sorted by relative path."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(_IGNORED_PREFIXES))
        for name in sorted(filenames):
            if not name.startswith(_IGNORED_PREFIXES):
                out.append(Path(dirpath) / name)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def sha256_tree(root: str | Path, cache_file: Path | None = None) -> str:
    """Content hash of a folder (see module docstring)."""
    root = Path(root)
    cache = DigestCache(cache_file)
    h = hashlib.sha256()
    for path in tree_files(root):
        h.update(f"{path.relative_to(root).as_posix()}\0{cache.digest(path)}\n".encode())
    cache.save()
    return h.hexdigest()
