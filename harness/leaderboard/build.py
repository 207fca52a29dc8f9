"""`harness leaderboard build`: scan the submissions root and sync the index.

Owns: the order of a build. Every bundle folder is read first (outside any transaction, so
readers and other indexers are never blocked by file hashing), then the index is updated in one
transaction. A build is idempotent: the same folder gives the same index, and a second run
rewrites nothing. File hashes are kept beside the index (`digest_cache_path`), so a rebuild
hashes only files whose size, mtime, ctime or inode changed.
"""

from __future__ import annotations

from pathlib import Path

from harness import __version__
from harness.bundle.verify import find_bundles, read_ledger
from harness.errors import HarnessError
from harness.hashing import DigestCache
from harness.leaderboard import db
from harness.leaderboard.entry import Entry, read_entry


def default_db(root: Path) -> Path:
    return Path(root) / db.DB_NAME


def digest_cache_path(db_path: Path) -> Path:
    """File hashes of the last build, beside the index: a rebuild re-hashes only what changed."""
    return db_path.with_name(db_path.name + ".digests.json")


def scan(root: Path, *, threshold: float, progress: bool = True, digests: Path | None = None) -> list[Entry]:
    """One Entry per bundle folder under `root` (`<team>/<name>/`), broken ones included.

    `digests`: a digest cache file (see `digest_cache_path`); None hashes every file.
    """
    from tqdm.auto import tqdm

    root = Path(root)
    if not root.is_dir():
        raise HarnessError(f"{root}: no such submissions folder")
    ledger = read_ledger(root)
    bundles = find_bundles(root)
    cache = DigestCache(digests, prune=True, untrusted=True) if digests is not None else None
    entries = [
        read_entry(root, b, threshold=threshold, ledger=ledger, digests=cache)
        for b in tqdm(bundles, desc="indexing bundles", unit="bundle", disable=not progress, leave=False)
    ]
    if cache is not None:
        cache.save()
    return entries


def build_index(
    root: Path, db_path: Path | None = None, *, threshold: float = 6.0, progress: bool = True
) -> db.SyncReport:
    root = Path(root)
    if not root.is_dir():  # before the index is created (inside the root by default)
        raise HarnessError(f"{root}: no such submissions folder")
    db_path = Path(db_path) if db_path is not None else default_db(root)
    conn = db.connect_for_write(db_path)  # refuse a foreign database before scanning
    try:
        entries = scan(root, threshold=threshold, progress=progress, digests=digest_cache_path(db_path))
        meta = {
            "root": str(root.resolve()),
            "threshold": repr(float(threshold)),
            "harness_version": __version__,
        }
        return db.sync(conn, db_path, entries, meta)
    finally:
        conn.close()
