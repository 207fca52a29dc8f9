"""The bundle manifest: every file's path, size and sha256, and the checks that use it.

Owns: the manifest schema (`BundleManifest`), building it from a folder, safe relative paths
(no absolute paths, no `..`, no symlinks, no odd characters), the size caps by kind of file,
and comparing a bundle on disk with its manifest: missing, extra, altered, oversized and
unlisted files each give one clear line. Must not open images or weights (see `content.py` and
`harness.lora.checks`).
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.errors import HarnessError
from harness.hashing import DigestCache, sha256_bytes, sha256_file
from harness.layout import BUNDLE_MANIFEST as MANIFEST
from harness.layout import IMAGE_EXT, LORA_EXT, TEXT_EXT, VERDICT

FORMAT = 1

MiB = 1 << 20
MAX_FILES = 256
MAX_MANIFEST_BYTES = 1 * MiB
MAX_PATH_CHARS = 200
MAX_DEPTH = 8  # folders below a bundle's root (it needs 1: images/, lora/)
CAPS = {  # bytes per file, by kind
    "lora": 2 * 1024 * MiB,
    "image": 50 * MiB,
    "text": 10 * MiB,
}
_SAFE_CHARS = re.compile(r"[A-Za-z0-9._\-/\u4e00-\u9fff]+")


def kind_of(path: str) -> str | None:
    """'image', 'lora', 'text', or None for a file type a bundle may not hold."""
    suffix = PurePosixPath(path).suffix.lower()
    if suffix in IMAGE_EXT:
        return "image"
    if suffix in LORA_EXT:
        return "lora"
    if suffix in TEXT_EXT:
        return "text"
    return None


def unsafe_path_reason(path: Any) -> str | None:
    """Why `path` may not name a file in a bundle, or None when it is a safe relative path."""
    if not isinstance(path, str) or not path:
        return "not a non-empty string"
    if len(path) > MAX_PATH_CHARS:
        return f"longer than {MAX_PATH_CHARS} characters"
    if "\\" in path or "\x00" in path:
        return "contains a backslash or NUL"
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return "absolute path"
    parts = path.split("/")
    if any(p == ".." for p in parts):
        return "contains '..'"
    if any(p in ("", ".") for p in parts):
        return "empty or '.' path component"
    if not _SAFE_CHARS.fullmatch(path):
        return "characters outside letters, digits, CJK, '.', '_', '-' and '/'"
    return None


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    path: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class BundleManifest(BaseModel):
    """manifest.json of a bundle. Unknown fields are refused: a manifest names, never runs."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    kind: Literal["harness.bundle"]
    format: Literal[1]
    model_id: str
    team: str
    name: str
    created: str
    scored: bool
    lora: list[str]  # bundle paths of the LoRA files
    versions: dict[str, str]
    files: list[FileEntry] = Field(max_length=MAX_FILES)


def walk(root: Path) -> tuple[list[str], list[str]]:
    """(regular files as sorted relative posix paths, problems) without following any link.

    Symlinks (to files or folders) and special files are problems, never followed.
    """
    files: list[str] = []
    problems: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        depth = len(here.relative_to(root).parts)
        for d in list(dirnames):
            if len(files) + len(problems) > MAX_FILES:
                problems.append(f"more than {MAX_FILES} files or folder problems (cap); stopped listing")
                return sorted(files), problems
            if (here / d).is_symlink():
                problems.append(f"{(here / d).relative_to(root).as_posix()}: symlinked folder (not allowed)")
                dirnames.remove(d)
            elif depth + 1 > MAX_DEPTH:
                rel = (here / d).relative_to(root).as_posix()
                problems.append(f"{rel}: folders nested over {MAX_DEPTH} deep")
                dirnames.remove(d)
        dirnames.sort()
        for name in sorted(filenames):
            if len(files) + len(problems) > MAX_FILES:
                problems.append(f"more than {MAX_FILES} files (cap); stopped listing")
                return sorted(files), problems
            p = here / name
            rel = p.relative_to(root).as_posix()
            mode = os.lstat(p).st_mode
            if stat.S_ISLNK(mode):
                problems.append(f"{rel}: symlink (not allowed in a bundle)")
            elif not stat.S_ISREG(mode):
                problems.append(f"{rel}: not a regular file")
            else:
                files.append(rel)
    return sorted(files), problems


def entry_for(root: Path, rel: str) -> FileEntry:
    path = root / rel
    return FileEntry(path=rel, size=path.lstat().st_size, sha256=sha256_file(path, untrusted=True))


def build(root: Path, header: dict[str, Any]) -> BundleManifest:
    """The manifest of every file under `root` (except manifest.json and verdict.json)."""
    files, problems = walk(root)
    if problems:
        raise HarnessError(f"{root}: cannot bundle: {problems[0]}")
    entries = [entry_for(root, rel) for rel in files if rel not in (MANIFEST, VERDICT)]
    for e in entries:
        reason = unsafe_path_reason(e.path)
        if reason is None and kind_of(e.path) is None:
            reason = "file type not allowed in a bundle"
        if reason is not None:
            raise HarnessError(f"{root / e.path}: cannot bundle: {reason}")
    return BundleManifest(**header, files=entries)


def write(root: Path, manifest: BundleManifest) -> Path:
    from harness.safeio import write_atomic

    text = json.dumps(manifest.model_dump(mode="json"), ensure_ascii=False, indent=2) + "\n"
    return write_atomic(root / MANIFEST, text)


def read(root: Path) -> tuple[BundleManifest, bytes]:
    """Parse and validate a bundle's manifest; HarnessError with one line otherwise."""
    from harness.safeio import loads_json, read_bytes

    path = root / MANIFEST
    try:
        raw = read_bytes(path, max_bytes=MAX_MANIFEST_BYTES, what=MANIFEST)
    except HarnessError as e:
        if not path.is_symlink() and not os.path.lexists(path):
            raise HarnessError(f"{MANIFEST}: missing (not a bundle?)") from None
        raise e from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HarnessError(f"{MANIFEST}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    data = loads_json(text, source=MANIFEST, max_depth=8)
    if isinstance(data, dict) and isinstance(data.get("files"), list):
        for i, f in enumerate(data["files"]):  # path safety first: it is the attack that matters
            reason = unsafe_path_reason(f.get("path") if isinstance(f, dict) else None)
            if reason is not None:
                shown = f.get("path") if isinstance(f, dict) else f
                raise HarnessError(f"{MANIFEST}: files[{i}].path {shown!r}: unsafe path ({reason})")
    try:
        return BundleManifest.model_validate(data), raw
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise HarnessError(f"{MANIFEST}: {loc}: {err['msg']}") from None


def check_files(
    root: Path, manifest: BundleManifest, digests: DigestCache | None = None
) -> tuple[list[str], dict[str, str], int]:
    """Compare the folder with its manifest.

    Returns (problems, actual sha256 by path for every listed file that could be hashed,
    number of listed files that are present and intact). `digests` lets a repeated scan skip
    re-hashing files whose size, mtime, ctime and inode are unchanged (the leaderboard);
    the judges' verify hashes every byte.
    """
    problems: list[str] = []
    actual: dict[str, str] = {}
    on_disk, walk_problems = walk(root)
    problems += walk_problems
    present = set(on_disk)
    listed: set[str] = set()
    intact = 0
    for e in manifest.files:
        if e.path in listed:
            problems.append(f"{e.path}: listed twice in the manifest")
            continue
        listed.add(e.path)
        kind = kind_of(e.path)
        if e.path in (MANIFEST, VERDICT):
            problems.append(f"{e.path}: reserved name may not be listed in the manifest")
            continue
        if kind is None:
            problems.append(f"{e.path}: file type not allowed in a bundle")
            continue
        if e.size > CAPS[kind]:
            problems.append(f"{e.path}: manifest size {e.size} bytes is over the {kind} cap of {CAPS[kind]}")
            continue
        p = root / e.path
        if e.path not in present:
            if p.is_symlink() or any(q.is_symlink() for q in p.parents if root in q.parents):
                continue  # already reported by walk()
            problems.append(f"{e.path}: missing (listed in the manifest, not in the bundle)")
            continue
        size = p.lstat().st_size
        if size > CAPS[kind]:
            problems.append(f"{e.path}: {size} bytes is over the {kind} cap of {CAPS[kind]}")
            continue
        try:
            digest = digests.digest(p) if digests is not None else sha256_file(p, untrusted=True)
        except OSError:  # swapped for a link, FIFO or folder since the walk
            problems.append(f"{e.path}: changed into something other than a regular file while checked")
            continue
        actual[e.path] = digest
        if size != e.size:
            problems.append(f"{e.path}: altered (size {size} bytes, manifest says {e.size})")
        elif digest != e.sha256:
            problems.append(f"{e.path}: altered (sha256 differs from the manifest)")
        else:
            intact += 1
    for rel in on_disk:
        if rel not in listed and rel not in (MANIFEST, VERDICT):
            problems.append(f"{rel}: extra file (not listed in the manifest)")
    return problems, actual, intact


def bundle_digest(manifest_bytes: bytes, actual: dict[str, str]) -> str:
    """sha256 over the manifest's bytes and the hashes of the files as found on disk."""
    lines = [sha256_bytes(manifest_bytes)] + [f"{p}\0{h}" for p, h in sorted(actual.items())]
    return sha256_bytes("\n".join(lines).encode())
