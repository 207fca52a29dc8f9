"""The leaderboard index: one SQLite file, WAL, one row per bundle folder.

Owns: the schema and its version, migration, the transactional sync of a scan into the index,
and the read-only queries the views use.

- A harness index is marked with PRAGMA application_id; any other database is refused untouched.
- PRAGMA user_version is the schema version. An index from an older harness is migrated by
  `build` (the index is derived from the bundles, so migrating means recreating the tables in the
  same transaction and refilling them from the scan); the read-only views refuse it with a line
  that says to run `harness leaderboard build`. A newer schema is refused by both.
- Each row also keeps what the build needs to skip its bundle next time: the bundle's stat
  fingerprint (`stats.py`; NULL: read it again) and the hash of its judges' ledger record; the
  meta table keeps the rules the rows were made under and the ledger file's stats. `prior`
  hands these to the next build.
- A sync is one `BEGIN IMMEDIATE` transaction: upserts keyed by folder for the bundles the build
  read, a row rewritten only when what the bundle contributes changed (its digest, its verdict,
  the gate) - otherwise at most its fingerprint is refreshed -, rows of bundles the build kept
  unread left as they are, rows of bundles that are gone deleted. With WAL, readers see the
  index before or after a sync, never half of one; two indexers serialise on the write lock
  (busy timeout), so the index stays consistent.
- SQLite follows links when it opens a file, so `build` first refuses an index, or a -wal, -shm
  or -journal file beside it, that is a symlink, a hard link to another name, or not a regular
  file: the index never writes through something planted next to it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.leaderboard.entry import Entry
from harness.leaderboard.ranking import DEFAULT_RANKING, Ranking

APPLICATION_ID = 0x4B4C4231  # "KLB1": a harness leaderboard index
SCHEMA_VERSION = 2  # 2: stat fingerprints (an unchanged bundle is not read again)
BUSY_TIMEOUT_S = 120.0
DB_NAME = ".leaderboard.sqlite"  # default: inside the submissions root (find_bundles skips dot files)

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE bundles (
    path TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    verdict_sha256 TEXT,
    team TEXT NOT NULL,
    name TEXT NOT NULL,
    title TEXT NOT NULL,
    model_id TEXT NOT NULL,
    created TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('valid', 'invalid', 'unscored')),
    reason TEXT NOT NULL,
    aesthetic REAL,
    consistency REAL,
    alignment REAL,
    reproducibility TEXT NOT NULL,
    source TEXT NOT NULL,
    verdict TEXT,
    search TEXT NOT NULL,
    entry TEXT NOT NULL,
    indexed TEXT NOT NULL,
    stat_paths BLOB,
    stat_digest TEXT,
    ledger_token TEXT NOT NULL DEFAULT ''
);
CREATE INDEX bundles_digest ON bundles (digest);
CREATE INDEX bundles_rank ON bundles (
    status, aesthetic, consistency, alignment, reproducibility, source, team, name, path
);
"""
_COLUMNS = (
    "path digest verdict_sha256 team name title model_id created status reason aesthetic consistency "
    "alignment reproducibility source verdict search entry indexed stat_paths stat_digest ledger_token"
).split()
TABLE_COLUMNS = (
    "rank path team name title aesthetic consistency alignment reproducibility status reason source verdict"
).split()


@dataclass
class Indexed:
    """A row the build made (a bundle it read, or a folder it could not list) and what lets the
    next build skip that bundle: its stat fingerprint and its ledger record's hash."""

    entry: Entry
    stat_paths: bytes | None = None  # see stats.Fingerprint; None with stat_digest None
    stat_digest: str | None = None  # None: read the bundle again at the next build
    ledger_token: str = ""


@dataclass
class Prior:
    """What the index recorded at the last build, for the next one to compare with."""

    rows: dict[str, tuple[bytes, str, str]]  # path -> (stat paths, stat digest, ledger token)
    ledger_stats: str  # the ledger file's stats then ("" when unknown)


@dataclass
class SyncReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    read: int = 0  # bundles read (parsed and hashed) by this build; the rest were only stat-ed
    migrated_from: int | None = None

    def line(self) -> str:
        text = (
            f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, {self.removed} removed"
            f"; {self.read} bundles read"
        )
        if self.migrated_from is not None:
            text += f" (index migrated from schema {self.migrated_from} to {SCHEMA_VERSION})"
        return text


def _pragma(conn: sqlite3.Connection, name: str) -> int:
    return int(conn.execute(f"PRAGMA {name}").fetchone()[0])


def _tables(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]


def _check_identity(conn: sqlite3.Connection, path: Path) -> int:
    """The schema version of a harness index; HarnessError for anything else."""
    app, version = _pragma(conn, "application_id"), _pragma(conn, "user_version")
    if app != APPLICATION_ID:
        if app == 0 and not _tables(conn):
            return 0  # an empty database: ours to create
        raise HarnessError(
            f"{path}: not a harness leaderboard index (another SQLite database); not touching it"
        )
    if version > SCHEMA_VERSION:
        raise HarnessError(
            f"{path}: index schema {version} is newer than this harness understands ({SCHEMA_VERSION}); "
            "upgrade the harness or build a new index"
        )
    return version


def _create(conn: sqlite3.Connection) -> None:
    for table in _tables(conn):  # an older harness index: derived data, rebuilt from the bundles
        conn.execute(f'DROP TABLE "{table}"')
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


SIDE_FILES = ("", "-wal", "-shm", "-journal")


def _refuse_planted(path: Path) -> None:
    """HarnessError when the index or a file SQLite keeps beside it is not a plain file of its own."""
    for suffix in SIDE_FILES:
        p = path.with_name(path.name + suffix)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            raise HarnessError(f"{p}: is a symlink; the index is never written through a link")
        if not stat.S_ISREG(st.st_mode):
            raise HarnessError(f"{p}: exists and is not a regular file; not touching it")
        if st.st_nlink > 1:
            raise HarnessError(f"{p}: has {st.st_nlink} hard links; the index is never written through one")


def connect_for_write(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the index for `build`, in WAL mode with a long busy timeout."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _refuse_planted(path)
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        _check_identity(conn, path)  # refuse a foreign database before changing its journal mode
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.DatabaseError as e:
        raise HarnessError(f"{path}: not a usable SQLite database ({e})") from None
    return conn


def connect_read_only(path: Path) -> sqlite3.Connection:
    """Open the index read-only for the views; HarnessError when it is missing or not current."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{path}: no leaderboard index; run `harness leaderboard build` first")
    try:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        version = _check_identity(conn, path)
    except sqlite3.DatabaseError as e:
        raise HarnessError(f"{path}: not a usable SQLite database ({e})") from None
    if version != SCHEMA_VERSION:
        conn.close()
        raise HarnessError(
            f"{path}: index schema {version} is older than this harness ({SCHEMA_VERSION}); "
            "run `harness leaderboard build` to migrate it"
        )
    return conn


def _row(item: Indexed, now: str) -> dict[str, Any]:
    entry = item.entry
    return {
        "path": entry.path,
        "digest": entry.digest,
        "verdict_sha256": entry.verdict_sha256,
        "team": entry.team,
        "name": entry.name,
        "title": entry.title,
        "model_id": entry.model_id,
        "created": entry.created,
        "status": entry.status,
        "reason": entry.reason,
        "aesthetic": entry.aesthetic,
        "consistency": entry.consistency,
        "alignment": entry.alignment,
        "reproducibility": entry.reproducibility,
        "source": entry.source,
        "verdict": entry.verdict,
        "search": entry.search_text,
        "entry": json.dumps(entry.to_json(), ensure_ascii=False, sort_keys=True),
        "indexed": now,
        "stat_paths": item.stat_paths if item.stat_digest is not None else None,
        "stat_digest": item.stat_digest,
        "ledger_token": item.ledger_token,
    }


LEDGER_STATS = "ledger_stats"  # meta key: the judges' ledger file's stats at the last build


def prior(conn: sqlite3.Connection, path: Path, rules: dict[str, str]) -> Prior:
    """The fingerprints of the last build, or none when the index is new, of another schema, or
    was built under other rules (then every bundle is read again)."""
    try:
        if _check_identity(conn, path) != SCHEMA_VERSION:
            return Prior({}, "")
        meta = read_meta(conn)
        if any(meta.get(k) != v for k, v in rules.items()):
            return Prior({}, "")
        rows = conn.execute(
            "SELECT path, stat_paths, stat_digest, ledger_token FROM bundles WHERE stat_digest IS NOT NULL"
        ).fetchall()
    except sqlite3.DatabaseError as e:
        raise HarnessError(f"{path}: could not read the index ({e})") from None
    return Prior({r[0]: (bytes(r[1]), r[2], r[3]) for r in rows}, meta.get(LEDGER_STATS, ""))


def sync(
    conn: sqlite3.Connection,
    path: Path,
    items: list[Indexed],
    kept: set[str],
    rules: dict[str, str],
    state: dict[str, str] | None = None,
) -> SyncReport:
    """Make the index hold `items`, keep the rows of the `kept` paths as they are, and delete
    every other row, in one transaction (see the module docstring). `rules`: what the rows were
    made under (compared with the last build's); `state`: other meta values to record."""
    report = SyncReport()
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    placeholders = ", ".join(f":{c}" for c in _COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "path")
    upsert = (
        f"INSERT INTO bundles ({', '.join(_COLUMNS)}) VALUES ({placeholders}) "
        f"ON CONFLICT (path) DO UPDATE SET {updates}"
    )
    refresh = "UPDATE bundles SET stat_paths = ?, stat_digest = ?, ledger_token = ? WHERE path = ?"
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = _check_identity(conn, path)  # again, under the write lock
            if version != SCHEMA_VERSION:
                if _tables(conn):
                    report.migrated_from = version
                _create(conn)
            old_meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            same_rules = all(old_meta.get(k) == v for k, v in rules.items())
            stored = {r[0] for r in conn.execute("SELECT path FROM bundles")}
            written: set[str] = set()
            for item in items:
                row = _row(item, now)
                written.add(item.entry.path)
                before = None
                if item.entry.path in stored:
                    before = conn.execute(
                        "SELECT entry, stat_paths, stat_digest, ledger_token FROM bundles WHERE path = ?",
                        (item.entry.path,),
                    ).fetchone()
                if before is None:
                    report.added += 1
                elif before[0] == row["entry"] and same_rules:
                    report.unchanged += 1
                    fingerprint = (row["stat_paths"], row["stat_digest"], row["ledger_token"])
                    if tuple(before[1:]) != fingerprint:
                        conn.execute(refresh, (*fingerprint, item.entry.path))
                    continue
                else:
                    report.updated += 1
                conn.execute(upsert, row)
            for gone in stored - written - kept:
                conn.execute("DELETE FROM bundles WHERE path = ?", (gone,))
                report.removed += 1
            # a kept row another build deleted meanwhile stays deleted: the next build reads it
            report.unchanged += len((kept - written) & stored)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                sorted({**rules, **(state or {}), "built": now}.items()),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.DatabaseError as e:
        raise HarnessError(f"{path}: could not update the index ({e})") from None
    return report


def read_meta(conn: sqlite3.Connection) -> dict[str, str]:
    return {r[0]: r[1] for r in conn.execute("SELECT key, value FROM meta")}


def query(
    conn: sqlite3.Connection,
    ranking: Ranking = DEFAULT_RANKING,
    *,
    search: str = "",
    valid_only: bool = False,
    min_aesthetic: float | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Ranked rows (rank = place on the whole board, before filters), filtered, one page.

    The rank is computed over the narrow `bundles_rank` index (every ranking key is in it), the
    page picked there, and only the page's rows are read in full: a row is ~4 KB (its entry
    JSON), so ranking 10,000 of them through the table read 40 MB per page.
    """
    where, args = [], []
    if valid_only:
        where.append("status = 'valid'")
    if min_aesthetic is not None and min_aesthetic > 0:
        where.append("aesthetic >= ?")
        args.append(float(min_aesthetic))
    if search.strip():
        where.append("path IN (SELECT path FROM bundles WHERE instr(search, ?) > 0)")
        args.append(search.strip().casefold())
    cols = ", ".join(f"b.{c}" for c in TABLE_COLUMNS if c != "rank")
    sql = (
        f"WITH ranked AS (SELECT path, status, aesthetic, ROW_NUMBER() OVER (ORDER BY {ranking.sql}) AS rank "
        "FROM bundles), "
        f"page AS (SELECT path, rank FROM ranked {'WHERE ' + ' AND '.join(where) if where else ''} "
        "ORDER BY rank LIMIT ? OFFSET ?) "
        f"SELECT page.rank AS rank, {cols} FROM page JOIN bundles b ON b.path = page.path ORDER BY page.rank"
    )
    args += [-1 if limit is None else int(limit), int(offset)]
    return [{c: r[c] for c in TABLE_COLUMNS} for r in conn.execute(sql, args)]


def count(conn: sqlite3.Connection) -> dict[str, int]:
    counts = dict(conn.execute("SELECT status, COUNT(*) FROM bundles GROUP BY status").fetchall())
    return {s: int(counts.get(s, 0)) for s in ("valid", "invalid", "unscored")}


def get_entry(conn: sqlite3.Connection, path: str) -> Entry | None:
    row = conn.execute("SELECT entry FROM bundles WHERE path = ?", (path,)).fetchone()
    return Entry.from_json(json.loads(row[0])) if row else None
