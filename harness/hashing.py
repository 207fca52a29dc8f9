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
from pathlib import Path

_CHUNK = 1 << 20
# Bookkeeping that download tools leave beside the weights; not part of the model's content.
_IGNORED_PREFIXES = (".", "__pycache__")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
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

    def __init__(self, file: Path | None, *, prune: bool = False):
        self.file = file
        self.prune = prune
        self.entries: dict[str, str] = {}
        self.used: set[str] = set()
        if file is not None and file.is_file():
            try:
                loaded = json.loads(file.read_text())
                self.entries = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self.entries = {}
        self.dirty = False

    def digest(self, path: Path) -> str:
        st = path.stat()
        key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"
        self.used.add(key)
        if key not in self.entries:
            self.entries[key] = sha256_file(path)
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
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.entries))
        os.replace(tmp, self.file)


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
