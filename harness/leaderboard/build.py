"""`harness leaderboard build`: scan the submissions root and sync the index.

Owns: the order of a build. Every bundle folder is read first (outside any transaction, so
readers and other indexers are never blocked by file hashing), then the index is updated in one
transaction. A build is idempotent: the same folder gives the same index, and a second run
rewrites nothing. File hashes are kept beside the index (`digest_cache_path`), so a rebuild
hashes only files whose size, mtime, ctime or inode changed.

Batch isolation: each bundle is read under a guard. A bundle whose reading raises anything
(a RecursionError, a MemoryError, a bug) or runs past the per-bundle time limit becomes an
invalid row whose reason says so in one line, and the build goes on; a team folder that cannot
be listed becomes such a row too. The time limit is `verify --all`'s SIGALRM timer
(`harness.bundle.batch.time_limit`), so it applies when the build runs in the main thread (the
CLI, `leaderboard/app.py`); elsewhere only the readers' own bounds apply.
"""

from __future__ import annotations

from pathlib import Path

from harness import __version__
from harness.bundle.batch import BundleTimeout, find_bundles, read_ledger, time_limit
from harness.errors import HarnessError, first_line
from harness.hashing import DigestCache
from harness.leaderboard import db
from harness.leaderboard.entry import Entry, failed_entry, read_entry

BUNDLE_TIMEOUT_S = 300.0  # hashing a full-size bundle (a 2 GB LoRA, 8 panels) takes seconds


def index_bundle(
    root: Path,
    bundle: Path,
    *,
    threshold: float,
    ledger: dict,
    digests: DigestCache | None,
    timeout: float | None = BUNDLE_TIMEOUT_S,
) -> Entry:
    """`read_entry` under the batch guard: any failure or overrun is the bundle's own row."""
    try:
        with time_limit(timeout):  # the same SIGALRM limit `verify --all` uses
            return read_entry(root, bundle, threshold=threshold, ledger=ledger, digests=digests)
    except BundleTimeout:
        return failed_entry(
            root, bundle, f"not indexed: reading it took over {timeout:g} s (per-bundle limit)"
        )
    except RecursionError:
        return failed_entry(root, bundle, "not indexed: nested too deeply to read")
    except MemoryError:
        return failed_entry(root, bundle, "not indexed: reading it ran out of memory")
    except Exception as e:  # noqa: BLE001 - batch isolation: one bundle never stops the build
        return failed_entry(root, bundle, f"not indexed: {type(e).__name__}: {first_line(e)}")


def default_db(root: Path) -> Path:
    return Path(root) / db.DB_NAME


def digest_cache_path(db_path: Path) -> Path:
    """File hashes of the last build, beside the index: a rebuild re-hashes only what changed."""
    return db_path.with_name(db_path.name + ".digests.json")


def scan(
    root: Path,
    *,
    threshold: float,
    progress: bool = True,
    digests: Path | None = None,
    timeout: float | None = BUNDLE_TIMEOUT_S,
) -> list[Entry]:
    """One Entry per bundle folder under `root` (`<team>/<name>/`), broken ones included.

    `digests`: a digest cache file (see `digest_cache_path`); None hashes every file.
    `timeout`: seconds one bundle may take (None: no limit).
    """
    from tqdm.auto import tqdm

    root = Path(root)
    if not root.is_dir():
        raise HarnessError(f"{root}: no such submissions folder")
    ledger = read_ledger(root)
    unlisted: list[tuple[Path, str]] = []
    bundles = find_bundles(root, unlisted)
    cache = DigestCache(digests, prune=True, untrusted=True) if digests is not None else None
    entries = [failed_entry(root, team, why) for team, why in unlisted]
    entries += [
        index_bundle(root, b, threshold=threshold, ledger=ledger, digests=cache, timeout=timeout)
        for b in tqdm(bundles, desc="indexing bundles", unit="bundle", disable=not progress, leave=False)
    ]
    if cache is not None:
        cache.save()
    return entries


def build_index(
    root: Path,
    db_path: Path | None = None,
    *,
    threshold: float = 6.0,
    progress: bool = True,
    timeout: float | None = BUNDLE_TIMEOUT_S,
) -> db.SyncReport:
    root = Path(root)
    if not root.is_dir():  # before the index is created (inside the root by default)
        raise HarnessError(f"{root}: no such submissions folder")
    db_path = Path(db_path) if db_path is not None else default_db(root)
    conn = db.connect_for_write(db_path)  # refuse a foreign database before scanning
    try:
        entries = scan(
            root, threshold=threshold, progress=progress, digests=digest_cache_path(db_path), timeout=timeout
        )
        meta = {
            "root": str(root.resolve()),
            "threshold": repr(float(threshold)),
            "harness_version": __version__,
        }
        return db.sync(conn, db_path, entries, meta)
    finally:
        conn.close()
