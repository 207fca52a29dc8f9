"""Reading and writing files in folders the harness did not create.

Owns: the one bounded reader of untrusted text and JSON (size cap before reading, no link
followed, no FIFO or device opened, nesting depth checked before the parser recurses) and the one
writer into untrusted folders (an exclusive, randomly named temporary file opened without
following links, then a rename that replaces whatever name is there - a planted link or hardlink
is replaced, never written through; a planted folder or special file is refused). Every refusal
is one `HarnessError` line starting with the path. Must not know what the files mean.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Any, Callable

from harness.errors import HarnessError

MiB = 1 << 20
MAX_JSON_BYTES = 1 * MiB
MAX_JSON_DEPTH = 32
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "not a regular file"


def read_bytes(
    path: str | Path, *, max_bytes: int, what: str | None = None, follow_links: bool = False
) -> bytes:
    """The bytes of a regular file, refusing links, FIFOs, devices and files over `max_bytes`.

    The file is opened with O_NOFOLLOW|O_NONBLOCK (a FIFO never blocks), checked with fstat on
    the open descriptor (no swap between check and read), and read up to `max_bytes` + 1.
    `follow_links` is only for a path the user typed (the command line), never for a path found
    inside an untrusted folder.
    """
    path = Path(path)
    label = what or str(path)
    flags = os.O_RDONLY | _NONBLOCK | _CLOEXEC | (0 if follow_links else _NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise HarnessError(f"{label}: no such file") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise HarnessError(f"{label}: is a symlink (not followed)") from None
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            mode = None
        if mode is not None and not stat.S_ISREG(mode):
            raise HarnessError(f"{label}: is {_kind(mode)}, not a file") from None
        raise HarnessError(f"{label}: cannot be read ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise HarnessError(f"{label}: is {_kind(st.st_mode)}, not a file")
        if st.st_size > max_bytes:
            raise HarnessError(f"{label}: {st.st_size} bytes is over the cap of {max_bytes}")
        chunks, left = [], max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # grew while being read
        raise HarnessError(f"{label}: over the cap of {max_bytes} bytes")
    return data


def read_text(
    path: str | Path, *, max_bytes: int, what: str | None = None, follow_links: bool = False
) -> str:
    """`read_bytes` decoded as UTF-8 (a BOM is dropped); one line naming the byte otherwise."""
    label = what or str(path)
    data = read_bytes(path, max_bytes=max_bytes, what=label, follow_links=follow_links)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise HarnessError(f"{label}: not UTF-8 text ({e.reason} at byte {e.start})") from None


# A string runs to its closing quote, or (unterminated) to the end of the text, so a run of
# escaped quotes never makes the search restart at each one (that was quadratic).
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)', re.S)


def json_depth(text: str) -> int:
    """The deepest nesting of [ and { in a JSON text, strings skipped; linear, no recursion."""
    depth = deepest = 0
    for ch in _JSON_STRING.sub("", text):
        if ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
        elif ch in "]}":
            depth -= 1
    return deepest


def loads_json(text: str, *, source: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON whose nesting was checked first: deep documents never reach the recursive
    parser; NaN/Infinity literals and over-long integers are refused. One line otherwise."""
    depth = json_depth(text)
    if depth > max_depth:
        raise HarnessError(f"{source}: JSON nested {depth} levels deep, over the limit of {max_depth}")

    def _no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:  # belt and braces: the depth check should make this unreachable
        raise HarnessError(f"{source}: JSON nested too deeply") from None
    except ValueError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise HarnessError(f"{source}: not valid JSON ({msg[:200]})") from None


def read_json(
    path: str | Path,
    *,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
    what: str | None = None,
) -> Any:
    """A JSON file read with `read_text`'s guards and `loads_json`'s depth check."""
    label = what or str(path)
    return loads_json(read_text(path, max_bytes=max_bytes, what=label), source=label, max_depth=max_depth)


def _open_dir(folder: Path) -> int:
    try:
        return os.open(folder, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise HarnessError(f"{folder}: is not a folder (a link or a file); nothing written") from None
        raise HarnessError(f"{folder}: cannot write here ({e.strerror})") from None


def write_atomic(
    path: str | Path, data: str | bytes | Callable[[Callable[[Any], None]], None], *, mode: int = 0o644
) -> Path:
    """Write `data` to `path` so that no reader sees half a file and nothing planted is followed.

    The folder is opened without following a link; the temporary file is created exclusively
    (O_EXCL|O_NOFOLLOW, random name) inside it; the rename replaces the directory entry at
    `path`, so a symlink or hardlink planted there is replaced, never written through. A folder
    or special file at `path` is refused with one line and nothing is written. `data` may be a
    function that is given `write(buffer)` and streams the content (large weights files).
    """
    path = Path(path)
    if isinstance(data, (str, bytes, bytearray, memoryview)):
        payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)

        def produce(write: Callable[[Any], None]) -> None:
            write(payload)
    else:
        produce = data
    dfd = _open_dir(path.parent)
    tmp = f".{path.name[:100]}.{secrets.token_hex(8)}.tmp"
    try:
        try:
            existing = os.stat(path.name, dir_fd=dfd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            existing = None
        if existing is not None and not (stat.S_ISREG(existing) or stat.S_ISLNK(existing)):
            raise HarnessError(f"{path}: exists and is {_kind(existing)}; not replaced")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, mode, dir_fd=dfd)
        try:

            def write(buffer: Any) -> None:
                view = memoryview(buffer).cast("B")
                while view:
                    view = view[os.write(fd, view) :]

            produce(write)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError as e:  # a folder appeared at the name between the check and the rename
            raise HarnessError(f"{path}: cannot be replaced ({e.strerror}); nothing written") from None
        tmp = None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
        os.close(dfd)
    return path


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """`obj` as indented UTF-8 JSON through `write_atomic`. Strict JSON, as `loads_json` reads it:
    a NaN or infinite number is written as null."""
    try:
        text = json.dumps(obj, ensure_ascii=False, indent=2, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(obj), ensure_ascii=False, indent=2, allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a folder name that is not UTF-8 (a lone surrogate): \udcff escapes
        text = json.dumps(json.loads(text), ensure_ascii=True, indent=2)
    return write_atomic(path, text + "\n")


def inside(root: str | Path, path: str | Path) -> bool:
    """True when `path` is `root` or below it with no symlink on the way (checked with lstat)."""
    root, path = Path(os.path.abspath(root)), Path(os.path.abspath(path))
    if path != root and root not in path.parents:
        return False
    here = root
    for part in path.relative_to(root).parts:
        here = here / part
        try:
            if stat.S_ISLNK(os.lstat(here).st_mode):
                return False
        except FileNotFoundError:
            return True
        except OSError:
            return False
    return True


def resolve_inside(root: str | Path, rel: str, *, what: str | None = None) -> Path:
    """`root / rel` for a relative path that stays inside `root` and crosses no symlink."""
    label = what or rel
    if not isinstance(rel, str) or not rel or "\x00" in rel or os.path.isabs(rel) or "\\" in rel:
        raise HarnessError(f"{label}: not a relative path inside {root}")
    if any(p == ".." for p in Path(rel).parts):
        raise HarnessError(f"{label}: '..' leaves {root}")
    target = Path(root) / rel
    if not inside(root, target):
        raise HarnessError(f"{label}: leaves {root} (through a symlink)")
    return target
