"""List the raw items of a data source: a local folder with captions, or a ModelScope dataset.

Owns: caption discovery (metadata.csv with file_name,text as in the baseline, or .txt sidecars,
or one fixed caption), the ModelScope download, and what of a dataset folder is read at all.
The folder is walked with lstat only: a symlink (to a file, to a folder, or dangling), a FIFO,
a socket, a device file or a file with more than one hard link is never opened; it is listed
with its reason and skipped, so nothing outside the folder enters the prepared set. Captions are
read with the bounded no-follow reader. Checks nothing about pixels: that is `images.py`'s job.
A caption file that names missing images is an error, not a skip.
"""

from __future__ import annotations

import csv
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from harness.config.training import LoadedTrainingConfig
from harness.errors import HarnessError, first_line
from harness.safeio import read_text

METADATA = "metadata.csv"
_NOT_IMAGES = {".txt", ".csv", ".json", ".md", ".yaml", ".yml"}
MAX_ENTRIES = 200_000  # files and folders in one dataset folder; beyond that it is not a dataset
MAX_DEPTH = 64  # nested folders
MAX_CAPTION_BYTES = 64 * 1024  # Kolors reads 256 tokens; a longer sidecar is not a caption
MAX_METADATA_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class RawItem:
    name: str  # how the report names it (relative path or dataset index)
    path: Path | None  # a file on disk, or None when `image` holds a decoded PIL image
    caption: str | None
    image: object | None = None
    problem: str | None = None  # a reason to skip it found while listing (an unsafe caption file)


@dataclass(frozen=True)
class Entry:
    """One name under a dataset folder, as lstat saw it (nothing followed)."""

    rel: str  # posix path relative to the folder
    mode: int
    size: int
    mtime_ns: int
    nlink: int

    @property
    def regular(self) -> bool:
        return stat.S_ISREG(self.mode)


def unsafe_reason(mode: int, nlink: int) -> str | None:
    """Why an entry is not read (None for a plain file with one name)."""
    if stat.S_ISLNK(mode):
        return "a symlink (not followed: only files inside the dataset folder are read)"
    if stat.S_ISFIFO(mode):
        return "a FIFO (not a file; never opened)"
    if stat.S_ISSOCK(mode):
        return "a socket (not a file; never opened)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file (never opened)"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    if nlink > 1:
        return (
            f"has {nlink} hard links (it may be a file from outside the dataset folder); "
            "copy it to give it its own bytes"
        )
    return None


def walk(folder: Path, exclude: Path | None = None) -> list[Entry]:
    """Every non-hidden entry under `folder` (files, links, special files), sorted, via lstat.

    Iterative (a deep tree cannot exhaust the stack) and bounded (MAX_ENTRIES, MAX_DEPTH).
    Symlinked folders are listed, never entered; real folders are entered; hidden names (a
    leading dot) and the `exclude` folder (the prepared output, when it sits inside) are left out.
    """
    folder = Path(folder)
    ex = Path(os.path.abspath(exclude)) if exclude is not None else None
    out: list[Entry] = []
    seen = 0
    stack = [(folder, 0)]
    while stack:
        here, depth = stack.pop()
        try:
            with os.scandir(here) as it:
                found = list(it)
        except OSError:  # unreadable or vanished: nothing in it is read either
            continue
        seen += len(found)
        if seen > MAX_ENTRIES:
            raise HarnessError(f"{folder}: more than {MAX_ENTRIES} files and folders; not a dataset folder")
        for entry in found:
            if entry.name.startswith("."):
                continue
            p = here / entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:  # vanished while listed
                continue
            if stat.S_ISDIR(st.st_mode):
                if ex is not None and Path(os.path.abspath(p)) == ex:
                    continue
                if depth >= MAX_DEPTH:
                    raise HarnessError(
                        f"{folder}: folders nested deeper than {MAX_DEPTH} levels; not a dataset folder"
                    )
                stack.append((p, depth + 1))
                continue
            rel = p.relative_to(folder).as_posix()
            out.append(Entry(rel, st.st_mode, st.st_size, st.st_mtime_ns, st.st_nlink))
    return sorted(out, key=lambda e: e.rel)


def source_files(folder: Path, exclude: Path | None = None) -> list[Path]:
    """Plain files under `folder` (one hard link, not a symlink), sorted, without hidden ones."""
    return [folder / e.rel for e in walk(folder, exclude) if unsafe_reason(e.mode, e.nlink) is None]


def _read_metadata(folder: Path) -> list[tuple[str, str]]:
    path = folder / METADATA
    st = os.lstat(path)
    reason = unsafe_reason(st.st_mode, st.st_nlink)
    if reason is not None:
        raise HarnessError(f"{path}: not read: {reason}")
    text = read_text(path, max_bytes=MAX_METADATA_BYTES)
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or "file_name" not in reader.fieldnames or "text" not in reader.fieldnames:
        raise HarnessError(f"{path}: needs the columns file_name,text (found {reader.fieldnames})")
    rows = []
    try:
        for lineno, row in enumerate(reader, start=2):
            name = (row.get("file_name") or "").strip()
            if not name:
                raise HarnessError(f"{path}:{lineno}: empty file_name")
            rows.append((name, row.get("text") or ""))
    except csv.Error as e:
        raise HarnessError(f"{path}: not valid CSV ({first_line(e)})") from None
    return rows


def _lexical(folder: Path, name: str) -> tuple[str | None, str | None]:
    """(posix path relative to `folder`, or None when `name` leaves it; reason a part is unsafe)."""
    if "\x00" in name or "\\" in name or os.path.isabs(name):
        return None, None
    parts = [p for p in Path(name).parts if p not in ("", ".")]
    if not parts or ".." in parts:
        return None, None
    here = folder
    for i, part in enumerate(parts):
        here = here / part
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            return "/".join(parts), "missing"
        except OSError as e:
            return "/".join(parts), f"cannot be read ({e.strerror})"
        last = i == len(parts) - 1
        if stat.S_ISLNK(st.st_mode) or last:
            return "/".join(parts), unsafe_reason(st.st_mode, st.st_nlink)
    return "/".join(parts), None


def folder_items(
    folder: Path, fixed_caption: str | None, exclude: Path | None = None
) -> tuple[list[RawItem], list[tuple[str, str]]]:
    """(items, ignored) for a local folder; `ignored` lists (file, reason) never considered."""
    folder = Path(os.path.abspath(folder))
    ignored: list[tuple[str, str]] = []
    entries = walk(folder, exclude)
    unsafe = {e.rel: r for e in entries if (r := unsafe_reason(e.mode, e.nlink)) is not None}
    if os.path.lexists(folder / METADATA):
        rows = _read_metadata(folder)
        missing = []
        items = []
        listed: set[str] = set()
        for name, text in rows:
            rel, reason = _lexical(folder, name)
            if rel is None or reason == "missing":
                missing.append(name)
                continue
            listed.add(rel)
            if reason is None and fixed_caption is None and len(text.encode("utf-8")) > MAX_CAPTION_BYTES:
                reason = f"caption over the cap of {MAX_CAPTION_BYTES} bytes"
            if reason is not None:
                items.append(RawItem(name, None, None, problem=reason))
                continue
            items.append(RawItem(name, folder / rel, fixed_caption if fixed_caption is not None else text))
        if missing:
            shown = ", ".join(repr(m) for m in missing[:3])  # repr: a name never breaks the line
            shown += f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise HarnessError(
                f"{folder / METADATA}: {len(missing)} row(s) name images missing from {folder} "
                f"or outside it: {shown}"
            )
        for e in entries:
            if e.rel == METADATA or e.rel in listed:
                continue
            ignored.append((e.rel, unsafe.get(e.rel) or f"not listed in {METADATA}"))
        return items, ignored

    files = [e for e in entries if e.rel not in unsafe]
    by_rel = {e.rel: e for e in entries}
    stems = {str(Path(e.rel).with_suffix("")) for e in files if Path(e.rel).suffix.lower() not in _NOT_IMAGES}
    items = []
    for e in entries:
        p = Path(e.rel)
        if e.rel in unsafe:
            ignored.append((e.rel, unsafe[e.rel]))
            continue
        if p.suffix.lower() == ".txt" and str(p.with_suffix("")) in stems:
            continue  # a caption sidecar
        if p.suffix.lower() in _NOT_IMAGES:
            ignored.append((e.rel, "not an image (a text file without a matching image)"))
            continue
        caption, problem = fixed_caption, None
        side = p.with_suffix(".txt").as_posix()
        if caption is None and side in by_rel:
            if side in unsafe:
                problem = f"caption file {side}: {unsafe[side]}"
            else:
                try:
                    caption = read_text(folder / side, max_bytes=MAX_CAPTION_BYTES, what=side).strip()
                except HarnessError as err:
                    problem = f"caption file {err}"
        items.append(RawItem(e.rel, folder / e.rel, caption, problem=problem))
    return items, ignored


def modelscope_items(loaded: LoadedTrainingConfig, download_dir: Path) -> list[RawItem]:
    """Download a ModelScope dataset with MsDataset and list its images (decoded by the datasets lib)."""
    d = loaded.config.data
    try:
        from modelscope.msdatasets import MsDataset
    except ImportError as e:
        raise HarnessError(
            f"modelscope datasets are not importable ({e}); pip install 'modelscope[datasets]'"
        ) from None
    try:
        ds = MsDataset.load(d.dataset_id, subset_name=d.subset, split=d.split, cache_dir=str(download_dir))
    except Exception as e:  # network, unknown id, missing `datasets`: one line
        raise HarnessError(
            f"could not load ModelScope dataset {d.dataset_id}: {type(e).__name__}: {first_line(e)}"
        ) from None
    items = []
    for i, row in enumerate(ds):
        if d.max_images is not None and i >= d.max_images:
            break
        image = row.get("image") if isinstance(row, dict) else None
        caption = d.caption if d.caption is not None else (row.get("text") if isinstance(row, dict) else None)
        if isinstance(image, str):
            # A path into the datasets library's cache: opened like any dataset file (no link followed).
            items.append(RawItem(f"{d.dataset_id}[{i}]", Path(image), caption))
        else:
            items.append(RawItem(f"{d.dataset_id}[{i}]", None, caption, image=image))
    return items
