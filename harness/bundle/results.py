"""The results table of a `verify --all` batch: one row per bundle, written by either backend.

Owns: the table's columns (folder, team, name, verdict, gate, reproducibility, files, every
score, the first problem, the worker, the seconds and the tries) and writing it as CSV through
`safeio.write_atomic` (no planted link followed). Cells that came from a bundle are one printable
line, and a text cell that a spreadsheet would run as a formula (=, +, -, @ first) is quoted
with a leading apostrophe. Reads nothing from bundles: the rows carry the verdicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.bundle.batch import Row

RESULTS = ".verify-results.csv"  # beside the ledger, outside every bundle
FIXED = (
    "folder",
    "team",
    "name",
    "verdict",
    "skipped",
    "gate",
    "reproducibility",
    "scored_pixels",
    "files_ok",
    "files_total",
    "problems",
    "first_problem",
    "worker",
    "seconds",
    "attempts",
)
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _text(value: Any, limit: int = 300) -> str:
    from harness.errors import one_line

    text = one_line(str(value), limit)
    return "'" + text if text.startswith(_FORMULA) else text


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return _text(value)


def table(root: Path, rows: list[Row]):
    """The batch as a pandas DataFrame: the fixed columns, then `score.<name>` for every number
    in any verdict's scores (empty where a bundle has none), in sorted order."""
    import pandas as pd

    records = []
    for r in rows:
        d = r.verdict
        problems = list(d.get("problems") or [])
        rec: dict[str, Any] = {
            "folder": _text(r.bundle.relative_to(root).as_posix()),
            "team": _cell(d.get("team")),
            "name": _cell(d.get("name")),
            "verdict": _cell(d.get("verdict")),
            "skipped": r.skipped,
            "gate": _cell(d.get("gate")),
            "reproducibility": _cell(d.get("reproducibility")),
            "scored_pixels": _cell(d.get("scored_pixels")),
            "files_ok": _cell(d.get("files_ok")),
            "files_total": _cell(d.get("files_total")),
            "problems": len(problems),
            "first_problem": _text(problems[0]) if problems else "",
            "worker": _text(r.worker),
            "seconds": round(float(r.seconds), 3),
            "attempts": r.attempts,
        }
        scores = d.get("scores")
        if isinstance(scores, dict):
            for k, v in scores.items():
                rec[f"score.{_text(k, 80)}"] = _cell(v)
        records.append(rec)
    frame = pd.DataFrame.from_records(records)
    extra = sorted(c for c in frame.columns if c not in FIXED)
    return frame.reindex(columns=list(FIXED) + extra)


def write_results(root: Path, rows: list[Row], path: Path | None = None) -> Path:
    """Write the batch's table as CSV (default `ROOT/.verify-results.csv`); returns the path."""
    from harness.safeio import write_atomic

    target = Path(path) if path is not None else Path(root) / RESULTS
    return write_atomic(target, table(Path(root), rows).to_csv(index=False))


def read_results(path: Path):
    """The table back as a DataFrame (for judges' notebooks and the tests)."""
    import pandas as pd

    return pd.read_csv(path)
