"""Output folders: refuse to mix runs, one writer at a time, and write without following links.

A run folder holds `manifest.json`, whose `identity` names everything that decides the pixels
(story content, model and LoRA hashes, device, dtype, batch size). Rendering into a folder is
allowed when it is empty, absent, holds the same identity (re-rendering or finishing panels), or
holds only the record of a run that rendered no panel (a render stopped before its first panel:
nothing is lost by replacing it); a different run is never silently overwritten.

One process at a time writes into a run folder: `locked` holds an flock on `.<folder>.lock`
beside it, so a second `render` or `run` into the same folder is refused with one line, and a
killed process's lock is released by the kernel (the next run proceeds). Every file is written
through `harness.safeio.write_atomic`: a link planted in the folder is replaced, never followed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from harness.errors import HarnessError
from harness.layout import CONTACT_SHEET, IMAGES, LORA_DIR, STORY_COPY  # noqa: F401  (kept importable from here)
from harness.layout import RUN_MANIFEST as MANIFEST
from harness.layout import RUN_OWNED as OWNED
from harness.ownership import Purpose
from harness.render.records import RENDER_KIND, RunManifest

MAX_MANIFEST_BYTES = 16 << 20  # a run manifest is a few KB; the cap bounds a planted one
LOCK_SUFFIX = ".lock"


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The run manifest in `out`, None if there is none; HarnessError if it is unreadable.

    Read with `harness.safeio.read_json`: a link, FIFO, huge or deeply nested file is refused
    with one line instead of being followed, blocking or crashing the parser.
    """
    from harness.safeio import read_json

    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        data = read_json(path, max_bytes=MAX_MANIFEST_BYTES)
    except HarnessError as e:
        raise HarnessError(f"{e}; use another --out") from None
    if (
        not isinstance(data, dict)
        or data.get("kind") != RENDER_KIND
        or not isinstance(data.get("identity"), dict)
    ):
        raise HarnessError(f"{path}: not a harness run manifest; use another --out (or empty the folder)")
    return data


def parse_manifest(out: Path, data: dict[str, Any]) -> RunManifest:
    """A run manifest read by `read_manifest`, as the typed record; one line naming the field
    otherwise (the identity check needs only `kind` and `identity`; everything else reads this)."""
    from harness.render.records import parse

    return parse(RunManifest, data, str(out / MANIFEST))


def read_run_manifest(out: Path) -> RunManifest | None:
    """The typed run manifest in `out` (None if there is none); HarnessError if unreadable."""
    data = read_manifest(out)
    return None if data is None else parse_manifest(out, data)


def _no_stray(folder: Path, marker: dict[str, Any]) -> str | None:
    return None  # --force clears only the OWNED names; anything else in the folder is left alone


# A run folder the harness made: its manifest.json says kind harness.render (harness.ownership).
RENDER = Purpose("a run folder", MANIFEST, RENDER_KIND, MAX_MANIFEST_BYTES, _no_stray)


def is_stale(manifest: dict[str, Any]) -> bool:
    """A record left by a render that stopped before its first panel: replacing it loses nothing."""
    return manifest.get("status") == "rendering" and not manifest.get("panels")


def check_out_dir(out: Path, identity: dict[str, Any], *, force: bool) -> dict[str, Any] | None:
    """Check that `out` may receive this run; returns the existing manifest of the same run.

    Only the keys present in `identity` are compared, so a cheap early check (story only) can
    run before the model is downloaded, and the full check after. Nothing is written here.
    """
    try:
        return _check_out_dir(out, identity, force=force)
    except OSError as e:  # a name too long, a folder that may not be listed
        raise HarnessError(f"{out}: cannot be used as a run folder ({e.strerror})") from None


def _check_out_dir(out: Path, identity: dict[str, Any], *, force: bool) -> dict[str, Any] | None:
    if out.exists() and not out.is_dir():
        raise HarnessError(f"{out}: exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return None
    if force:  # --force replaces a run the harness made, never a folder of the user's
        from harness.ownership import inspect

        real = Path(os.path.realpath(out)) if out.is_symlink() else out  # --out as typed
        inspect(real, RENDER, label=str(out))
        return None
    manifest = read_manifest(out)
    if manifest is None:
        raise HarnessError(
            f"{out}: folder is not empty and holds no harness run; use another --out or --force"
        )
    for name in (IMAGES, LORA_DIR):  # folders the harness writes into are never reached by a link
        if (out / name).is_symlink():
            raise HarnessError(
                f"{out / name}: is a link, not what the harness wrote; use another --out or --force"
            )
    if (out / IMAGES).exists() and not (out / IMAGES).is_dir():
        raise HarnessError(f"{out / IMAGES}: is not a folder; use another --out or --force")
    theirs = manifest["identity"]
    changed = [k for k, v in identity.items() if theirs.get(k) != v]
    if changed:
        if is_stale(manifest):
            return None
        raise HarnessError(
            f"{out}: holds a different run ({', '.join(changed)} differ); "
            "use another --out, or --force to replace it"
        )
    return manifest


_held: dict[str, int] = {}  # lock path -> depth, so `run` and the `render` inside it share one


def lock_path(out: Path) -> Path:
    """Where the lock of run folder `out` lives: `.<name>.lock` beside the (real) folder."""
    real = Path(os.path.realpath(out))
    if not real.name:
        raise HarnessError(f"{out}: not a folder a run can be written into")
    name = real.name
    if len(os.fsencode(name)) > 200:  # keep `.<name>.lock` within the file system's 255 bytes
        import hashlib

        name = name[:40] + "-" + hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    return real.parent / f".{name}{LOCK_SUFFIX}"


@contextmanager
def locked(out: Path) -> Iterator[Path]:
    """Hold `out`'s write lock (creating the folders above `out` if needed); refuse if held.

    flock on a file beside the folder: the kernel drops it when the holder dies, so kill -9
    never leaves a lock that blocks the next run. The lock file is opened without following a
    link and removed on release (the inode check after locking makes that safe).
    """
    lock = lock_path(out)
    key = str(lock)
    if key in _held:
        _held[key] += 1
        try:
            yield lock
        finally:
            _held[key] -= 1
        return
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HarnessError(f"{lock.parent}: cannot create the folder for {out} ({e.strerror})") from None
    fd = _acquire(lock, out)
    _held[key] = 1
    try:
        yield lock
    finally:
        del _held[key]
        try:
            if _same_file(lock, os.fstat(fd)):
                os.unlink(lock)
        except OSError:
            pass
        os.close(fd)


def _same_file(path: Path, st: os.stat_result) -> bool:
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


def _acquire(lock: Path, out: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    for _ in range(10):
        try:
            fd = os.open(lock, flags, 0o644)
        except OSError as e:
            why = "a link is there" if e.errno == errno.ELOOP else e.strerror
            raise HarnessError(f"{lock}: cannot take the lock of {out} ({why})") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise HarnessError(f"{lock}: is not a lock file the harness made; remove it")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                who = f" (process {holder})" if holder.isdigit() else ""
                raise HarnessError(
                    f"{out}: another harness render or run is writing into this folder{who}; "
                    "wait for it to finish, or use another --out"
                ) from None
            if _same_file(lock, st):  # not removed by its last holder while we opened it
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise HarnessError(f"{lock}: the lock of {out} keeps changing; try again")


def clear_run(out: Path) -> None:
    """Remove the files a previous run wrote (for --force); leaves anything else alone."""
    for name in OWNED:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def write_manifest(out: Path, manifest: RunManifest) -> None:
    """Replace `out/manifest.json` atomically (a link planted there is replaced, not followed)."""
    from harness.safeio import write_json

    write_json(out / MANIFEST, manifest.to_json())
