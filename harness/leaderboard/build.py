"""`harness leaderboard build`: scan the submissions root and sync the index.

Owns: the order of a build. Every bundle folder is read first (outside any transaction, so
readers and other indexers are never blocked by file hashing), then the index is updated in one
transaction. A build is idempotent: the same folder gives the same index, and a second run
rewrites nothing.
"""

from __future__ import annotations

from pathlib import Path

from harness import __version__
from harness.bundle.verify import find_bundles, read_ledger
from harness.errors import HarnessError
from harness.leaderboard import db
from harness.leaderboard.entry import Entry, read_entry


def default_db(root: Path) -> Path:
    return Path(root) / db.DB_NAME


def scan(root: Path, *, threshold: float, progress: bool = True) -> list[Entry]:
    """One Entry per bundle folder under `root` (`<team>/<name>/`), broken ones included."""
    from tqdm.auto import tqdm

    root = Path(root)
    if not root.is_dir():
        raise HarnessError(f"{root}: no such submissions folder")
    ledger = read_ledger(root)
    bundles = find_bundles(root)
    return [
        read_entry(root, b, threshold=threshold, ledger=ledger)
        for b in tqdm(bundles, desc="indexing bundles", unit="bundle", disable=not progress, leave=False)
    ]


def build_index(
    root: Path, db_path: Path | None = None, *, threshold: float = 6.0, progress: bool = True
) -> db.SyncReport:
    root = Path(root)
    if not root.is_dir():  # before the index is created (inside the root by default)
        raise HarnessError(f"{root}: no such submissions folder")
    db_path = Path(db_path) if db_path is not None else default_db(root)
    conn = db.connect_for_write(db_path)  # refuse a foreign database before scanning
    try:
        entries = scan(root, threshold=threshold, progress=progress)
        meta = {
            "root": str(root.resolve()),
            "threshold": repr(float(threshold)),
            "harness_version": __version__,
        }
        return db.sync(conn, db_path, entries, meta)
    finally:
        conn.close()
