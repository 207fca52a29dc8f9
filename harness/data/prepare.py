"""`harness data prepare`: read a source, drop what cannot be trained on, write a prepared folder.

Owns: the filters (a plain file inside the source folder, readable image, caption present,
minimum width/height, aspect range), the report (counts per filter and every skipped file with
its reason), the prepared folder layout (images/, metadata.csv with file_name,text, report.json)
and the data hash training keys on. Images are copied into a staging directory without following
links (and checked there, so what is checked is what is kept); the folder is swapped in whole, so
a failure or an empty result never leaves a half-written folder. The prepared folder is replaced
only when `harness.ownership` says the harness made it (report.json is its marker); anything
else there is refused before a byte is read or written. Must not load models.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.config.training import LoadedTrainingConfig
from harness.data.images import check_image
from harness.data.sources import METADATA, RawItem, folder_items, modelscope_items, unsafe_reason, walk
from harness.errors import HarnessError
from harness.ownership import Purpose, check_replaceable, swap_in
from harness.safeio import read_json, write_atomic, write_json

REPORT = "report.json"
IMAGES = "images"
PREPARE_VERSION = 2
MAX_REPORT_BYTES = 64 * 1024 * 1024
MAX_IMAGE_BYTES = 256 * 1024 * 1024  # per source file; the pixel cap decides first for real images
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_READ = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_ITEM_FILE = re.compile(rf"{IMAGES}/[0-9]{{6}}\.[a-z0-9]{{1,8}}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _valid_file(name: object) -> bool:
    return isinstance(name, str) and _ITEM_FILE.fullmatch(name) is not None


@dataclass(frozen=True)
class PreparedItem:
    file: str  # relative to the prepared folder
    caption: str
    width: int
    height: int
    sha256: str


@dataclass
class PreparedData:
    folder: Path
    items: list[PreparedItem]
    data_sha256: str
    report: dict = field(default_factory=dict)
    reused: bool = False


def data_hash(items: list[PreparedItem]) -> str:
    """Content hash of a prepared dataset: captions and image bytes in order, not paths on disk."""
    h = hashlib.sha256()
    for it in items:
        h.update(f"{it.file}\0{it.caption}\0{it.sha256}\n".encode())
    return h.hexdigest()


def _prepared_stray(folder: Path, marker: dict) -> str | None:
    """The first entry of a prepared folder that `prepare` did not write (None: all ours)."""
    items = marker.get("items") if isinstance(marker.get("items"), list) else []
    ours = {
        it["file"].removeprefix(f"{IMAGES}/")
        for it in items
        if isinstance(it, dict) and _valid_file(it.get("file"))
    }
    for name in sorted(os.listdir(folder)):
        if name in (REPORT, METADATA):
            continue
        if name != IMAGES:
            return name
        if not stat.S_ISDIR(os.lstat(folder / IMAGES).st_mode):
            return IMAGES
        for inner in sorted(os.listdir(folder / IMAGES)):
            if inner not in ours:
                return f"{IMAGES}/{inner}"
    return None


PREPARED = Purpose("a prepared dataset", REPORT, "harness.data.prepare", MAX_REPORT_BYTES, _prepared_stray)


def prepared_target(loaded: LoadedTrainingConfig, out: Path | None = None) -> tuple[Path, str]:
    """(the prepared folder, how messages name it: the --out flag or the config's file and field)."""
    if out is not None:
        return Path(out), f"--out {out}"
    path = loaded.prepared_dir
    if loaded.config.data.prepared:
        line = loaded.doc.line_of(("data", "prepared"))
        where = f"{loaded.path}:{line}" if line else str(loaded.path)
        return path, f"{where}: data.prepared: {path}"
    return path, f"{loaded.path}: default prepared folder {path}"


def check_target(loaded: LoadedTrainingConfig, target: Path, label: str) -> str:
    """Refuse (one line, nothing written) a prepared folder the harness may not replace: a link,
    a file, a folder it did not make, or the data source folder itself or one that holds it."""
    state = check_replaceable(target, PREPARED, label=label)
    if loaded.config.data.source == "folder" and loaded.data_path is not None:
        t, src = Path(os.path.abspath(target)), Path(os.path.abspath(loaded.data_path))
        if t == src or t in src.parents:
            raise HarnessError(
                f"{label}: is the data source folder or holds it; choose a folder outside data.path"
            )
    return state


def _fingerprint(loaded: LoadedTrainingConfig, exclude: Path) -> dict:
    d = loaded.config.data
    spec = d.model_dump(mode="json", exclude={"prepared", "path"})
    out = {"version": PREPARE_VERSION, "data": spec}
    if d.source == "folder":
        # Every entry as lstat sees it: a link replaced by a file (or the reverse) re-prepares.
        out["files"] = [
            [e.rel, stat.S_IFMT(e.mode), e.size, e.mtime_ns, e.nlink]
            for e in walk(Path(os.path.abspath(loaded.data_path)), exclude)
        ]
    if d.source == "demo":
        from harness.data.demo import DEMO_VERSION

        out["demo"] = DEMO_VERSION  # a changed generator re-prepares
    return out


def _source_name(loaded: LoadedTrainingConfig) -> str:
    d = loaded.config.data
    if d.source == "folder":
        return str(loaded.data_path)
    return "demo (seeded images made in memory)" if d.source == "demo" else f"modelscope:{d.dataset_id}"


def _aspect_ok(w: int, h: int, lo: float | None, hi: float | None) -> bool:
    r = w / h
    return (lo is None or r >= lo) and (hi is None or r <= hi)


def _describe_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {why}" for why, n in counts.items() if n)


def prepare(loaded: LoadedTrainingConfig, out: Path | None = None) -> PreparedData:
    """Build the prepared folder for `loaded` (default: its `data.prepared`); see module docstring."""
    d = loaded.config.data
    target, label = prepared_target(loaded, out)
    check_target(loaded, target, label)  # before anything is read or written
    from harness.paths import cache_dir

    if d.source == "folder":
        items, ignored = folder_items(loaded.data_path, d.caption, exclude=target)
        if d.max_images is not None:
            items = items[: d.max_images]
    elif d.source == "demo":
        from harness.data.demo import demo_items

        items, ignored = demo_items(max_images=d.max_images, caption=d.caption), []
    else:
        items = modelscope_items(loaded, cache_dir() / "modelscope-datasets")
        ignored = []

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    except OSError as e:
        raise HarnessError(f"{label}: cannot be created ({e.strerror}); nothing written") from None
    try:
        result = _write(loaded, items, ignored, staging, target)
        state = check_target(loaded, target, label)  # again: the folder may have changed meanwhile
        swap_in(staging, target, replace=state != "absent", label=label)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    result.folder = target
    return result


def _copy_in(src: Path, dst: Path) -> tuple[str | None, str]:
    """Copy a dataset file into the staging folder without following a link or opening a FIFO:
    (reason it was refused or None, sha256 of the bytes copied)."""
    try:
        fd = os.open(src, _READ)
    except OSError as e:
        return f"not opened ({e.strerror}; links are not followed)", ""
    h = hashlib.sha256()
    try:
        st = os.fstat(fd)
        reason = unsafe_reason(st.st_mode, st.st_nlink)
        if reason is None and st.st_size > MAX_IMAGE_BYTES:
            reason = f"{st.st_size} bytes is over the cap of {MAX_IMAGE_BYTES}"
        if reason is not None:
            return reason, ""
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
        try:
            left = MAX_IMAGE_BYTES + 1
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 20))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view) :]
        finally:
            os.close(out)
        if left <= 0:
            dst.unlink()
            return f"over the cap of {MAX_IMAGE_BYTES} bytes", ""
    finally:
        os.close(fd)
    return None, h.hexdigest()


def sha256_nofollow(path: Path) -> str | None:
    """sha256 of a regular file opened without following a link; None for anything else."""
    try:
        fd = os.open(path, _READ)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        h = hashlib.sha256()
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write(
    loaded: LoadedTrainingConfig, items: list[RawItem], ignored, staging: Path, target: Path
) -> PreparedData:
    d = loaded.config.data
    (staging / IMAGES).mkdir()
    counts = {
        "unreadable or not an image": 0,
        "a link, special file or unsafe caption file (not read)": 0,
        "without a caption": 0,
        f"narrower than min_width {d.min_width}": 0,
        f"lower than min_height {d.min_height}": 0,
        f"outside aspect range {d.min_aspect}-{d.max_aspect}": 0,
    }
    keys = list(counts)
    skipped: list[dict] = [{"file": f, "reason": r} for f, r in ignored]
    kept: list[PreparedItem] = []
    for raw in items:
        if raw.problem is not None:
            counts[keys[1]] += 1
            skipped.append({"file": raw.name, "reason": raw.problem})
            continue
        src = raw.path
        tmp_png = None
        digest = ""
        if src is None:
            # A decoded dataset row: store it losslessly, then judge the stored file like any other.
            tmp_png = staging / ".row.png"
            try:
                raw.image.save(tmp_png, format="PNG")  # type: ignore[union-attr]
            except Exception as e:  # anything the dataset library hands back that PIL cannot save
                counts[keys[0]] += 1
                skipped.append({"file": raw.name, "reason": f"unreadable: {type(e).__name__}"})
                tmp_png.unlink(missing_ok=True)
                continue
        else:
            # Copied first (no link followed, no FIFO opened), then judged: what is checked is kept.
            tmp_png = staging / ".item"
            refused, digest = _copy_in(src, tmp_png)
            if refused is not None:
                counts[keys[1]] += 1
                skipped.append({"file": raw.name, "reason": refused})
                continue
        check = check_image(tmp_png)
        reason = None
        if not check.ok:
            reason, key = check.reason, keys[0]
        elif raw.caption is None or not raw.caption.strip():
            reason, key = "no caption (no metadata.csv row, .txt sidecar or data.caption)", keys[2]
        elif check.width < d.min_width:
            reason, key = f"{check.width}x{check.height} is narrower than min_width {d.min_width}", keys[3]
        elif check.height < d.min_height:
            reason, key = f"{check.width}x{check.height} is lower than min_height {d.min_height}", keys[4]
        elif not _aspect_ok(check.width, check.height, d.min_aspect, d.max_aspect):
            ratio = check.width / check.height
            reason, key = f"aspect {ratio:.3f} outside {d.min_aspect}-{d.max_aspect}", keys[5]
        if reason is not None:
            counts[key] += 1
            skipped.append({"file": raw.name, "reason": reason})
            tmp_png.unlink(missing_ok=True)
            continue
        if src is None:
            ext = ".png"
        else:
            suffix = src.suffix.lower()
            ext = suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else f".{check.format.lower() or 'img'}"
        rel = f"{IMAGES}/{len(kept):06d}{ext}"
        os.replace(tmp_png, staging / rel)
        kept.append(
            PreparedItem(
                rel, raw.caption.strip(), check.width, check.height, digest or sha256_nofollow(staging / rel)
            )
        )

    if not kept:
        detail = _describe_counts(counts) or "the source lists no images"
        where = _source_name(loaded)
        raise HarnessError(f"{where}: no training images left of {len(items)} candidates ({detail})")

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file_name", "text"])
    for it in kept:
        writer.writerow([it.file, it.caption])
    write_atomic(staging / METADATA, buf.getvalue())
    digest = data_hash(kept)
    report = {
        "kind": "harness.data.prepare",
        "source": _source_name(loaded),
        "candidates": len(items),
        "kept": len(kept),
        "skipped_counts": {k: v for k, v in counts.items() if v},
        "skipped": skipped,
        "data_sha256": digest,
        "items": [it.__dict__ for it in kept],
        "fingerprint": _fingerprint(loaded, target),
    }
    write_json(staging / REPORT, report)
    return PreparedData(staging, kept, digest, report)


def load_prepared(folder: Path) -> PreparedData | None:
    """Read a prepared folder back; None when it is absent or not a complete, well-formed
    prepare output (every item a plain file images/NNNNNN.ext inside it, nothing followed)."""
    try:
        report = read_json(folder / REPORT, max_bytes=MAX_REPORT_BYTES)
    except HarnessError:
        return None
    if not isinstance(report, dict) or report.get("kind") != "harness.data.prepare":
        return None
    try:
        items = [PreparedItem(**it) for it in report["items"]]
    except (KeyError, TypeError):
        return None
    for it in items:
        if not (
            _valid_file(it.file)
            and isinstance(it.caption, str)
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (it.width, it.height))
            and isinstance(it.sha256, str)
            and _SHA256.fullmatch(it.sha256)
        ):
            return None
        try:
            st = os.lstat(folder / it.file)
        except OSError:
            return None
        if unsafe_reason(st.st_mode, st.st_nlink) is not None:
            return None
    digest = report.get("data_sha256")
    if not isinstance(digest, str) or digest != data_hash(items):
        return None
    return PreparedData(folder, items, digest, report, reused=True)


def ensure_prepared(loaded: LoadedTrainingConfig) -> PreparedData:
    """The prepared data for `loaded`: reused when the source and filters are unchanged, else rebuilt."""
    target, label = prepared_target(loaded)
    check_target(loaded, target, label)
    existing = load_prepared(target)
    if existing is not None and existing.report.get("fingerprint") == _fingerprint(loaded, target):
        # A modelscope source is not re-downloaded, a demo source not regenerated; a folder
        # source re-prepares when any file changed.
        for it in existing.items:
            if sha256_nofollow(existing.folder / it.file) != it.sha256:
                break
        else:
            return existing
    return prepare(loaded)
