"""A bundle's stat fingerprint: how `leaderboard build` knows, without reading, that nothing changed.

Owns: taking a fingerprint of a bundle folder (every name under it - folders, files, links and
special files alike, never followed: folders are opened one name at a time with O_NOFOLLOW and
listed through their descriptor - with its type, size, mtime_ns, ctime_ns, inode and device) and
checking one later with one lstat per recorded name and no open, read or parse. Nothing here
reads a byte of a file.

Why a match means "unchanged": writing a file moves its ctime (and usually its size and mtime);
adding, removing or renaming a name moves its folder's mtime and ctime; a file swapped for
another gets a new inode or ctime, and no user can set a ctime back. So when every recorded
stat is the same, no byte and no name under the bundle changed since the fingerprint was taken.

Racy stats: a filesystem stamps times with a granularity (a clock tick on Linux, 1 or 2 s on
some filesystems), so a change in the same tick as the stat that was recorded could leave every
stat equal. A fingerprint is therefore trusted only when every ctime in it is at least `RACY_NS`
older than the moment it was taken (git's "racily clean" rule); otherwise `take` returns one
with `trusted` False, which the index stores as "read again next time". A bundle written less
than 2 s before a build is thus read once more at the following build.

A bundle with more than `MAX_NAMES` names, folders nested deeper than the manifest allows, or a
folder that cannot be listed gets no fingerprint: it is read at every build (its reading is
bounded by the manifest's own caps).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from harness.bundle import manifest as mf

RACY_NS = 2_000_000_000
MAX_NAMES = 2 * mf.MAX_FILES + 64  # names under one bundle worth a fingerprint (a bundle has ~15)
_SEP = b"\0"  # never part of a file name


@dataclass(frozen=True)
class Fingerprint:
    paths: bytes  # bundle-relative names, NUL-separated; the first (empty) is the bundle folder
    digest: str  # over the stats of those names, in that order
    trusted: bool = True  # False: some ctime was too recent to vouch for a later match


def _token(st: os.stat_result) -> bytes:
    return b"%o %d %d %d %d %d\n" % (
        st.st_mode,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_ino,
        st.st_dev,
    )


def _join(base: bytes, rel: bytes) -> bytes:
    return base + b"/" + rel if rel else base


def take(bundle: Path, now_ns: int) -> Fingerprint | None:
    """The fingerprint of `bundle` as it is now (`now_ns`: time.time_ns() taken before this call).

    None when the folder is too large or deep to fingerprint or cannot be listed.
    """
    base = os.fsencode(bundle)
    try:
        st = os.lstat(base)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    names: list[bytes] = [b""]
    h = hashlib.blake2b(_token(st), digest_size=20)
    newest = st.st_ctime_ns
    folders: list[tuple[bytes, int]] = [(b"", 0)]
    try:
        while folders:
            rel, depth = folders.pop()
            fd = _open_folder(base, rel)
            try:
                with os.scandir(fd) as it:  # names and lstat-s relative to the folder's descriptor
                    found = [
                        (os.fsencode(e.name), e.stat(follow_symlinks=False))
                        for e in itertools.islice(it, MAX_NAMES)
                    ]
            finally:
                os.close(fd)
            if len(names) + len(found) > MAX_NAMES:
                return None
            for entry_name, st in found:
                name = rel + b"/" + entry_name if rel else entry_name
                names.append(name)
                h.update(_token(st))
                newest = max(newest, st.st_ctime_ns)
                if stat.S_ISDIR(st.st_mode):
                    if depth + 1 > mf.MAX_DEPTH:
                        return None
                    folders.append((name, depth + 1))
    except OSError:
        return None
    return Fingerprint(_SEP.join(names), h.hexdigest(), trusted=newest < now_ns - RACY_NS)


_FOLDER = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _open_folder(base: bytes, rel: bytes) -> int:
    """A descriptor of base/rel, opened one name at a time without following any link
    (a folder swapped for a link after it was listed is refused, not listed)."""
    fd = os.open(base, _FOLDER)
    try:
        for part in rel.split(b"/") if rel else ():
            inner = os.open(part, _FOLDER, dir_fd=fd)
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def unchanged(bundle: Path, paths: bytes, digest: str) -> bool:
    """True when every name recorded in a trusted fingerprint still has the stats it had."""
    base = os.fsencode(bundle)
    names = paths.split(_SEP)
    if len(names) > MAX_NAMES + 1:
        return False
    h = hashlib.blake2b(digest_size=20)
    try:
        for rel in names:
            h.update(_token(os.lstat(_join(base, rel))))
    except OSError:
        return False
    return h.hexdigest() == digest


def file_token(path: Path, now_ns: int) -> str:
    """The stats of one file (the judges' ledger) as text; "" when absent or too recent to trust."""
    try:
        st = os.lstat(path)
    except OSError:
        return "absent"
    if st.st_ctime_ns >= now_ns - RACY_NS:
        return ""
    return _token(st).decode().strip()
