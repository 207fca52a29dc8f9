"""List the raw items of a data source: a local folder with captions, or a ModelScope dataset.

Owns: caption discovery (metadata.csv with file_name,text as in the baseline, or .txt sidecars,
or one fixed caption) and the ModelScope download. Checks nothing about pixels: that is
`images.py`'s job. A caption file that names missing images is an error, not a skip.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from harness.config.training import LoadedTrainingConfig
from harness.errors import HarnessError, first_line

METADATA = "metadata.csv"
_NOT_IMAGES = {".txt", ".csv", ".json", ".md", ".yaml", ".yml"}


@dataclass(frozen=True)
class RawItem:
    name: str  # how the report names it (relative path or dataset index)
    path: Path | None  # a file on disk, or None when `image` holds a decoded PIL image
    caption: str | None
    image: object | None = None


def _read_metadata(folder: Path) -> list[tuple[str, str]]:
    path = folder / METADATA
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise HarnessError(f"{path}: not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or "file_name" not in reader.fieldnames or "text" not in reader.fieldnames:
        raise HarnessError(f"{path}: needs the columns file_name,text (found {reader.fieldnames})")
    rows = []
    for lineno, row in enumerate(reader, start=2):
        name = (row.get("file_name") or "").strip()
        if not name:
            raise HarnessError(f"{path}:{lineno}: empty file_name")
        rows.append((name, row.get("text") or ""))
    return rows


def source_files(folder: Path, exclude: Path | None = None) -> list[Path]:
    """Regular files under `folder`, sorted, without hidden ones or anything under `exclude`."""
    ex = exclude.resolve() if exclude is not None else None
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        if ex is not None and (p.resolve() == ex or ex in p.resolve().parents):
            continue
        out.append(p)
    return out


def folder_items(
    folder: Path, fixed_caption: str | None, exclude: Path | None = None
) -> tuple[list[RawItem], list[tuple[str, str]]]:
    """(items, ignored) for a local folder; `ignored` lists (file, reason) never considered."""
    folder = folder.resolve()
    ignored: list[tuple[str, str]] = []
    if (folder / METADATA).is_file():
        rows = _read_metadata(folder)
        missing = []
        items = []
        for name, text in rows:
            p = (folder / name).resolve()
            if folder not in p.parents or not p.is_file():
                missing.append(name)
                continue
            items.append(RawItem(name, p, fixed_caption if fixed_caption is not None else text))
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise HarnessError(
                f"{folder / METADATA}: {len(missing)} row(s) name images missing from {folder}: {shown}"
            )
        listed = {i.path for i in items}
        for p in sorted(folder.rglob("*")):
            if (
                p.is_file()
                and p.name != METADATA
                and p.resolve() not in listed
                and not p.name.startswith(".")
            ):
                ignored.append((p.relative_to(folder).as_posix(), f"not listed in {METADATA}"))
        return items, ignored

    files = source_files(folder, exclude)
    stems = {p.with_suffix("") for p in files if p.suffix.lower() not in _NOT_IMAGES}
    items = []
    for p in files:
        rel = p.relative_to(folder).as_posix()
        if p.suffix.lower() == ".txt" and p.with_suffix("") in stems:
            continue  # a caption sidecar
        if p.suffix.lower() in _NOT_IMAGES:
            ignored.append((rel, "not an image (a text file without a matching image)"))
            continue
        caption = fixed_caption
        if caption is None:
            side = p.with_suffix(".txt")
            caption = side.read_text(encoding="utf-8", errors="replace").strip() if side.is_file() else None
        items.append(RawItem(rel, p, caption))
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
        if isinstance(image, str) and Path(image).is_file():
            items.append(RawItem(f"{d.dataset_id}[{i}]", Path(image), caption))
        else:
            items.append(RawItem(f"{d.dataset_id}[{i}]", None, caption, image=image))
    return items
