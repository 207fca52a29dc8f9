"""`harness leaderboard build`: scan the submissions root and sync the index.

Owns: the order of a build and the decision which bundles to read.

1. Find the bundle folders (`find_bundles`: bounded listing, no link followed).
2. For each, compare its stat fingerprint (`stats.py`: one lstat per name under the bundle, no
   open or read) with the one the index recorded, and its judges' ledger record with the one
   recorded (the ledger is parsed only when its own stats changed or a bundle must be read).
   A bundle whose fingerprint and ledger record match keeps its row unread.
3. Read the others - new bundles, changed ones, ones with no trusted fingerprint - outside any
   transaction (so readers and other indexers are never blocked by file hashing), taking each
   one's fingerprint before reading it: a change during the read shows at the next build.
4. Apply it all in one transaction (`db.sync`): rows of read bundles upserted, kept rows left,
   rows of bundles that are gone deleted.

So an unchanged rebuild parses nothing, hashes nothing and writes one meta row; a build whose
rules differ (threshold, root, harness version, `entry.RULES`) or `--full` reads every bundle.
A read is idempotent: the same folder gives the same row. File hashes are also kept beside the
index (`digest_cache_path`), so re-reading a bundle hashes only files whose size, mtime, ctime
or inode changed (a judges' verdict.json written beside a 2 GB LoRA does not re-hash the LoRA).

Batch isolation: each bundle is read under a guard. A bundle whose reading raises anything
(a RecursionError, a MemoryError, a bug) or runs past the per-bundle time limit becomes an
invalid row whose reason says so in one line, and the build goes on (such a row is read again
at every build); a team folder that cannot be listed becomes such a row too. The time limit is
`verify --all`'s SIGALRM timer (`harness.bundle.batch.time_limit`), so it applies when the build
runs in the main thread (the CLI, `leaderboard/app.py`); elsewhere only the readers' own bounds
apply.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import __version__, safeio
from harness.bundle.batch import LEDGER, BundleTimeout, find_bundles, read_ledger, time_limit
from harness.config.gate import AESTHETIC_GATE
from harness.errors import HarnessError, first_line
from harness.hashing import DigestCache
from harness.leaderboard import db, stats
from harness.leaderboard.entry import RULES, failed_entry, folder_key, ledger_token, read_entry

BUNDLE_TIMEOUT_S = 300.0  # hashing a full-size bundle (a 2 GB LoRA, 8 panels) takes seconds


def index_bundle(
    root: Path,
    bundle: Path,
    *,
    threshold: float,
    ledger: dict,
    digests: DigestCache | None,
    timeout: float | None = BUNDLE_TIMEOUT_S,
    now_ns: int | None = None,
) -> db.Indexed:
    """`read_entry` under the batch guard (any failure or overrun is the bundle's own row), with
    the fingerprint taken just before the read (none for a failed read: it is read again)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    try:
        with time_limit(timeout):  # the same SIGALRM limit `verify --all` uses
            fp = stats.take(bundle, now_ns)
            entry = read_entry(root, bundle, threshold=threshold, ledger=ledger, digests=digests)
    except BundleTimeout:
        why = f"not indexed: reading it took over {timeout:g} s (per-bundle limit)"
        return db.Indexed(failed_entry(root, bundle, why))
    except RecursionError:
        return db.Indexed(failed_entry(root, bundle, "not indexed: nested too deeply to read"))
    except MemoryError:
        return db.Indexed(failed_entry(root, bundle, "not indexed: reading it ran out of memory"))
    except Exception as e:  # noqa: BLE001 - batch isolation: one bundle never stops the build
        why = f"not indexed: {type(e).__name__}: {first_line(e)}"
        return db.Indexed(failed_entry(root, bundle, why))
    token = ledger_token(ledger.get(entry.path))
    if fp is None or not fp.trusted:
        return db.Indexed(entry, ledger_token=token)
    return db.Indexed(entry, fp.paths, fp.digest, token)


def default_db(root: Path) -> Path:
    return Path(root) / db.DB_NAME


def digest_cache_path(db_path: Path) -> Path:
    """File hashes of the last build, beside the index: re-reading a bundle re-hashes only what changed."""
    return db_path.with_name(db_path.name + ".digests.json")


@dataclass
class Scan:
    """What a build found: rows of the bundles it read, and the paths whose rows it kept."""

    items: list[db.Indexed] = field(default_factory=list)
    kept: set[str] = field(default_factory=set)
    read: int = 0  # bundles read (a folder that could not be listed is a row, not a read)
    ledger_stats: str = ""


class _Ledger:
    """The judges' ledger, parsed at most once and only when something needs it."""

    def __init__(self, root: Path):
        self.root = root
        self._data: dict | None = None

    @property
    def data(self) -> dict:
        if self._data is None:
            self._data = read_ledger(self.root)
        return self._data


MAX_DIGESTS_BYTES = 256 << 20


def _load_digests(file: Path) -> dict[str, str]:
    """The digest cache's {key: sha256}, {} when absent, a link, not a flat JSON object, or
    unreadable. A bounded no-follow read; the nesting check of `safeio.read_json` is skipped
    (its scan of 15 MB took longer than the build it served) because the C JSON parser refuses
    deep nesting by itself (RecursionError) and anything but a flat object is dropped."""
    try:
        raw = safeio.read_bytes(file, max_bytes=MAX_DIGESTS_BYTES, what=str(file))
        data = json.loads(raw)
    except (HarnessError, RecursionError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)}


class _Digests:
    """The digest cache, loaded only when a bundle is read; saved keeping the entries of the
    bundles kept unread and only the used entries of the bundles read."""

    def __init__(self, file: Path | None, root: Path):
        self.file = file
        self.root = root
        self.cache: DigestCache | None = None

    def get(self) -> DigestCache | None:
        if self.cache is None and self.file is not None:
            self.cache = DigestCache(None, untrusted=True)
            self.cache.entries = _load_digests(self.file)
            self.cache.file = self.file
        return self.cache

    def save(self, read: set[str], kept: set[str]) -> None:
        cache = self.cache
        if cache is None:
            return
        prefix = str(self.root.absolute()) + "/"

        def keep(key: str) -> bool:
            if key in cache.used:
                return True
            where = key.rsplit("|", 4)[0]
            if not where.startswith(prefix):
                return False
            parts = where[len(prefix) :].split("/")
            folders = {parts[0], "/".join(parts[:2])}
            return bool(folders & kept) and not folders & read

        entries = {k: v for k, v in cache.entries.items() if keep(k)}
        if len(entries) != len(cache.entries):
            cache.entries, cache.dirty = entries, True
        cache.save()


def scan(
    root: Path,
    *,
    threshold: float,
    prior: db.Prior | None = None,
    progress: bool = True,
    digests: Path | None = None,
    timeout: float | None = BUNDLE_TIMEOUT_S,
) -> Scan:
    """Find the bundle folders under `root` (`<team>/<name>/` or `<team>/`), read those that are
    new or changed since `prior` (None: all of them), and name the rest as kept.

    `digests`: a digest cache file (see `digest_cache_path`); None hashes every file read.
    `timeout`: seconds one bundle may take to read (None: no limit).
    """
    from tqdm.auto import tqdm

    root = Path(root)
    if not root.is_dir():
        raise HarnessError(f"{root}: no such submissions folder")
    prior = prior or db.Prior({}, "")
    now_ns = time.time_ns()
    out = Scan(ledger_stats=stats.file_token(root / LEDGER, now_ns))
    ledger = _Ledger(root)
    # the ledger's own stats unchanged: every bundle's record in it is too (no need to parse it)
    ledger_same = out.ledger_stats != "" and out.ledger_stats == prior.ledger_stats
    unlisted: list[tuple[Path, str]] = []
    bundles = find_bundles(root, unlisted)
    out.items = [db.Indexed(failed_entry(root, team, why)) for team, why in unlisted]
    cache = _Digests(digests, root)
    to_read: list[Path] = []
    for bundle in bundles:
        key = folder_key(root, bundle)
        before = prior.rows.get(key)
        if (
            before is not None
            and stats.unchanged(bundle, before[0], before[1])
            and (ledger_same or ledger_token(ledger.data.get(key)) == before[2])
        ):
            out.kept.add(key)
        else:
            to_read.append(bundle)
    for b in tqdm(to_read, desc="indexing bundles", unit="bundle", disable=not progress, leave=False):
        out.items.append(
            index_bundle(
                root, b, threshold=threshold, ledger=ledger.data, digests=cache.get(), timeout=timeout
            )
        )
    out.read = len(to_read)
    cache.save({folder_key(root, b) for b in to_read}, out.kept)
    return out


def build_index(
    root: Path,
    db_path: Path | None = None,
    *,
    threshold: float = AESTHETIC_GATE,
    progress: bool = True,
    timeout: float | None = BUNDLE_TIMEOUT_S,
    full: bool = False,
) -> db.SyncReport:
    """Sync the index at `db_path` (default: inside `root`) with the bundles under `root`.

    Only new and changed bundles are read (see the module docstring); `full` reads them all.
    The report says how many rows were added, updated, unchanged and removed, and how many
    bundles were read.
    """
    root = Path(root)
    if not root.is_dir():  # before the index is created (inside the root by default)
        raise HarnessError(f"{root}: no such submissions folder")
    db_path = Path(db_path) if db_path is not None else default_db(root)
    conn = db.connect_for_write(db_path)  # refuse a foreign database before scanning
    try:
        rules = {
            "root": str(root.resolve()),
            "threshold": repr(float(threshold)),
            "harness_version": __version__,
            "rules": str(RULES),
        }
        prior = None if full else db.prior(conn, db_path, rules)
        found = scan(
            root,
            threshold=threshold,
            prior=prior,
            progress=progress,
            digests=digest_cache_path(db_path),
            timeout=timeout,
        )
        state = {db.LEDGER_STATS: found.ledger_stats}
        report = db.sync(conn, db_path, found.items, found.kept, rules, state)
        report.read = found.read
        return report
    finally:
        conn.close()
