"""`harness data prepare`: read a source, drop what cannot be trained on, write a prepared folder.

Owns: the filters (readable image, caption present, minimum width/height, aspect range), the
report (counts per filter and every skipped file with its reason), the prepared folder layout
(images/, metadata.csv with file_name,text, report.json) and the data hash training keys on.
The folder is written to a staging directory and swapped in whole, so a failure or an empty
result never leaves a half-written folder. Must not load models.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.config.training import LoadedTrainingConfig
from harness.data.images import check_image
from harness.data.sources import METADATA, RawItem, folder_items, modelscope_items, source_files
from harness.errors import HarnessError
from harness.hashing import sha256_file

REPORT = "report.json"
IMAGES = "images"
PREPARE_VERSION = 1


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


def _fingerprint(loaded: LoadedTrainingConfig) -> dict:
    d = loaded.config.data
    spec = d.model_dump(mode="json", exclude={"prepared", "path"})
    out = {"version": PREPARE_VERSION, "data": spec}
    if d.source == "folder":
        root = loaded.data_path.resolve()
        out["files"] = [
            [p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns]
            for p in source_files(root, loaded.prepared_dir)
        ]
    return out


def _aspect_ok(w: int, h: int, lo: float | None, hi: float | None) -> bool:
    r = w / h
    return (lo is None or r >= lo) and (hi is None or r <= hi)


def _describe_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {why}" for why, n in counts.items() if n)


def prepare(loaded: LoadedTrainingConfig, out: Path | None = None) -> PreparedData:
    """Build the prepared folder for `loaded` (default: its `data.prepared`); see module docstring."""
    d = loaded.config.data
    out = Path(out) if out is not None else loaded.prepared_dir
    from harness.paths import cache_dir

    if d.source == "folder":
        items, ignored = folder_items(loaded.data_path, d.caption, exclude=out)
        if d.max_images is not None:
            items = items[: d.max_images]
    else:
        items = modelscope_items(loaded, cache_dir() / "modelscope-datasets")
        ignored = []

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        result = _write(loaded, items, ignored, staging)
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent))
            os.replace(out, trash / "old")
            os.replace(staging, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    result.folder = out
    return result


def _write(loaded: LoadedTrainingConfig, items: list[RawItem], ignored, staging: Path) -> PreparedData:
    d = loaded.config.data
    (staging / IMAGES).mkdir()
    counts = {
        "unreadable or not an image": 0,
        "without a caption": 0,
        f"narrower than min_width {d.min_width}": 0,
        f"lower than min_height {d.min_height}": 0,
        f"outside aspect range {d.min_aspect}-{d.max_aspect}": 0,
    }
    keys = list(counts)
    skipped: list[dict] = [{"file": f, "reason": r} for f, r in ignored]
    kept: list[PreparedItem] = []
    for raw in items:
        src = raw.path
        tmp_png = None
        if src is None:
            # A decoded dataset row: store it losslessly, then judge the stored file like any other.
            tmp_png = staging / ".row.png"
            try:
                raw.image.save(tmp_png, format="PNG")  # type: ignore[union-attr]
                src = tmp_png
            except Exception as e:  # anything the dataset library hands back that PIL cannot save
                counts[keys[0]] += 1
                skipped.append({"file": raw.name, "reason": f"unreadable: {type(e).__name__}"})
                continue
        check = check_image(src)
        reason = None
        if not check.ok:
            reason, key = check.reason, keys[0]
        elif raw.caption is None or not raw.caption.strip():
            reason, key = "no caption (no metadata.csv row, .txt sidecar or data.caption)", keys[1]
        elif check.width < d.min_width:
            reason, key = f"{check.width}x{check.height} is narrower than min_width {d.min_width}", keys[2]
        elif check.height < d.min_height:
            reason, key = f"{check.width}x{check.height} is lower than min_height {d.min_height}", keys[3]
        elif not _aspect_ok(check.width, check.height, d.min_aspect, d.max_aspect):
            ratio = check.width / check.height
            reason, key = f"aspect {ratio:.3f} outside {d.min_aspect}-{d.max_aspect}", keys[4]
        if reason is not None:
            counts[key] += 1
            skipped.append({"file": raw.name, "reason": reason})
            if tmp_png is not None:
                tmp_png.unlink(missing_ok=True)
            continue
        ext = ".png" if tmp_png is not None else src.suffix.lower() or f".{check.format.lower()}"
        rel = f"{IMAGES}/{len(kept):06d}{ext}"
        if tmp_png is not None:
            os.replace(tmp_png, staging / rel)
        else:
            shutil.copyfile(src, staging / rel)
        kept.append(
            PreparedItem(rel, raw.caption.strip(), check.width, check.height, sha256_file(staging / rel))
        )

    if not kept:
        detail = _describe_counts(counts) or "the source lists no images"
        where = loaded.data_path if d.source == "folder" else d.dataset_id
        raise HarnessError(f"{where}: no training images left of {len(items)} candidates ({detail})")

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file_name", "text"])
    for it in kept:
        writer.writerow([it.file, it.caption])
    (staging / METADATA).write_text(buf.getvalue(), encoding="utf-8")
    digest = data_hash(kept)
    report = {
        "kind": "harness.data.prepare",
        "source": str(loaded.data_path) if d.source == "folder" else f"modelscope:{d.dataset_id}",
        "candidates": len(items),
        "kept": len(kept),
        "skipped_counts": {k: v for k, v in counts.items() if v},
        "skipped": skipped,
        "data_sha256": digest,
        "items": [it.__dict__ for it in kept],
        "fingerprint": _fingerprint(loaded),
    }
    (staging / REPORT).write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    return PreparedData(staging, kept, digest, report)


def load_prepared(folder: Path) -> PreparedData | None:
    """Read a prepared folder back; None when it is absent or not a complete prepare output."""
    try:
        report = json.loads((folder / REPORT).read_text(encoding="utf-8"))
        items = [PreparedItem(**it) for it in report["items"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not all((folder / it.file).is_file() for it in items):
        return None
    return PreparedData(folder, items, report["data_sha256"], report, reused=True)


def ensure_prepared(loaded: LoadedTrainingConfig) -> PreparedData:
    """The prepared data for `loaded`: reused when the source and filters are unchanged, else rebuilt."""
    existing = load_prepared(loaded.prepared_dir)
    if existing is not None and existing.report.get("fingerprint") == _fingerprint(loaded):
        # A modelscope source is not re-downloaded; a folder source re-prepares when any file changed.
        for it in existing.items:
            if sha256_file(existing.folder / it.file) != it.sha256:
                break
        else:
            return existing
    return prepare(loaded)
