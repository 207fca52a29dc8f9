"""The leaderboard index: ranking, the gate at 6, unscored and broken bundles, judges' verdicts,
idempotent and concurrent builds, schema migration, and files only from inside the root."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.leaderboard import db, synthetic
from harness.leaderboard.build import build_index, default_db
from harness.leaderboard.files import resolve_file
from harness.leaderboard.ranking import DEFAULT_RANKING, Ranking
from harness.leaderboard.synthetic import Spec
from tests.bundle_helpers import rehash


def rows(root: Path, ranking: Ranking = DEFAULT_RANKING, **filters) -> list[dict]:
    conn = db.connect_read_only(default_db(root))
    try:
        return db.query(conn, ranking, **filters)
    finally:
        conn.close()


@pytest.fixture
def board(tmp_path) -> Path:
    root = tmp_path / "submissions"
    for spec in [
        Spec("alpha", "s1", 7.0, consistency=0.70),
        Spec("bravo", "s1", 6.5, consistency=0.90),
        Spec("charlie", "s1", 5.999, consistency=0.95),  # just under the gate
        Spec("delta", "s1", 6.0, consistency=0.60),  # exactly at the gate: valid
        Spec("echo", "s1", None),  # no scores.json
        Spec("foxtrot", "s1", 6.8),  # scores.json corrupted below
        Spec("golf", "s1", 7.5),  # an image altered below
    ]:
        synthetic.write(root, spec)
    (root / "foxtrot/s1/scores.json").write_text("{not json", encoding="utf-8")
    rehash(root / "foxtrot/s1")
    img = root / "golf/s1/images/03.png"
    data = bytearray(img.read_bytes())
    data[-20] ^= 0xFF
    img.write_bytes(bytes(data))
    return root


def test_ranked_valid_first_then_aesthetic_with_reasons(board):
    report = build_index(board, progress=False)
    assert report.added == 7
    got = rows(board)
    assert [r["team"] for r in got] == ["alpha", "bravo", "delta", "golf", "charlie", "echo", "foxtrot"]
    assert [r["rank"] for r in got] == list(range(1, 8))
    by = {r["team"]: r for r in got}
    assert by["delta"]["status"] == "valid"  # 6.0 is accepted
    assert by["charlie"]["status"] == "invalid"
    assert by["charlie"]["reason"] == "aesthetic mean 5.9990 is below the gate 6"
    assert by["golf"]["status"] == "invalid" and by["golf"]["reason"].startswith("images/03.png: altered")
    assert by["echo"]["status"] == "unscored" and by["echo"]["reason"] == "no scores.json in the bundle"
    assert by["foxtrot"]["status"] == "unscored" and by["foxtrot"]["reason"].startswith(
        "scores.json: not valid"
    )
    assert all(r["source"] == "claimed" for r in got)


def test_filters_search_and_a_configurable_rule(board):
    build_index(board, progress=False)
    assert [r["team"] for r in rows(board, valid_only=True)] == ["alpha", "bravo", "delta"]
    assert [r["team"] for r in rows(board, min_aesthetic=6.9)] == ["alpha", "golf"]
    found = rows(board, search="BRAVO")
    assert [(r["team"], r["rank"]) for r in found] == [("bravo", 2)]  # rank on the whole board
    by_consistency = rows(board, Ranking.parse("valid,consistency"))
    assert [r["team"] for r in by_consistency][:3] == ["bravo", "alpha", "delta"]
    with pytest.raises(HarnessError, match="unknown key 'aesthetics'"):
        Ranking.parse("valid,aesthetics")


def test_rebuild_is_idempotent_and_follows_changes(board):
    build_index(board, progress=False)
    conn = sqlite3.connect(default_db(board))
    before = conn.execute("SELECT path, digest, entry FROM bundles ORDER BY path").fetchall()
    again = build_index(board, progress=False)
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, 7)
    assert conn.execute("SELECT path, digest, entry FROM bundles ORDER BY path").fetchall() == before

    img = board / "alpha/s1/images/01.png"  # tampering after indexing is seen at the next build
    img.write_bytes(img.read_bytes() + b"x")
    import shutil

    shutil.rmtree(board / "bravo")
    report = build_index(board, progress=False)
    assert (report.updated, report.removed, report.unchanged) == (1, 1, 5)
    alpha = next(r for r in rows(board) if r["team"] == "alpha")
    assert alpha["status"] == "invalid" and "images/01.png: altered" in alpha["reason"]
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_verdicts_count_only_when_the_judges_ledger_vouches_for_them(board):
    from harness.bundle.batch import verify_all

    # A participant ships a verdict.json saying "pass": without the judges' ledger it is ignored.
    fake = {"verdict": "pass", "gate": "pass", "scores": {"aesthetic_mean": 9.9}, "reproducibility": "exact"}
    (board / "charlie/s1/verdict.json").write_text(json.dumps(fake), encoding="utf-8")
    build_index(board, progress=False)
    charlie = next(r for r in rows(board) if r["team"] == "charlie")
    assert (charlie["source"], charlie["aesthetic"], charlie["status"]) == ("claimed", 5.999, "invalid")

    # The judges verify (file and content checks): synthetic images carry no generation
    # parameters, so every verdict fails, and the board shows the judges' reason.
    verify_all(board, rerun=False)
    build_index(board, progress=False)
    alpha = next(r for r in rows(board) if r["team"] == "alpha")
    assert alpha["verdict"] == "fail" and alpha["status"] == "invalid"
    judged = json.loads((board / "alpha/s1/verdict.json").read_text(encoding="utf-8"))
    assert alpha["reason"] == judged["problems"][0] and alpha["source"] == "claimed"

    # A verdict edited after the judges wrote it is no longer trusted.
    path = board / "alpha/s1/verdict.json"
    edited = json.loads(path.read_text(encoding="utf-8"))
    edited.update(verdict="pass", problems=[])
    path.write_text(json.dumps(edited), encoding="utf-8")
    build_index(board, progress=False)
    alpha = next(r for r in rows(board) if r["team"] == "alpha")
    assert (alpha["verdict"], alpha["status"], alpha["source"]) == (None, "valid", "claimed")


def _build_cli(root: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "leaderboard", "build", "--submissions", str(root), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_concurrent_builds_leave_a_consistent_index_and_readers_see_whole_updates(tmp_path):
    root = tmp_path / "submissions"
    synthetic.board(root, 20)
    build_index(root, progress=False)
    for i in range(20, 50):  # 30 new bundles arrive
        synthetic.write(root, Spec(f"late{i:03d}", "s", 6.0 + i / 100), seed=i)

    seen: set[int] = set()
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            conn = db.connect_read_only(default_db(root))
            seen.add(conn.execute("SELECT COUNT(*) FROM bundles").fetchone()[0])
            conn.close()

    t = threading.Thread(target=reader)
    t.start()
    procs = [_build_cli(root), _build_cli(root)]
    outs = [p.communicate(timeout=300) for p in procs]
    stop.set()
    t.join()
    assert [p.returncode for p in procs] == [0, 0], outs
    assert seen <= {20, 50}, seen  # before or after a sync, never half of one
    conn = sqlite3.connect(default_db(root))
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    paths = [r[0] for r in conn.execute("SELECT path FROM bundles ORDER BY path")]
    assert len(paths) == len(set(paths)) == 50
    again = build_index(root, progress=False)
    assert again.unchanged == 50 and again.added == again.updated == again.removed == 0


def test_an_older_index_is_migrated_by_build_and_refused_by_the_views(board):
    path = default_db(board)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE bundles (path TEXT PRIMARY KEY, score REAL)")  # a schema-0 index
    conn.execute("INSERT INTO bundles VALUES ('old/row', 1.0)")
    conn.execute(f"PRAGMA application_id = {db.APPLICATION_ID}")
    conn.commit()
    conn.close()
    with pytest.raises(HarnessError, match=r"index schema 0 is older .* run `harness leaderboard build`"):
        db.connect_read_only(path)
    report = build_index(board, progress=False)
    assert report.migrated_from == 0 and report.added == 7
    assert "old/row" not in [r["path"] for r in rows(board)]

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(HarnessError, match="index schema 99 is newer"):
        build_index(board, progress=False)


def test_a_foreign_database_is_refused_untouched(board, tmp_path):
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE results (x)")
    conn.execute("INSERT INTO results VALUES (42)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    assert_cli = [sys.executable, "-m", "harness.cli", "leaderboard", "build", "--submissions", str(board)]
    proc = subprocess.run([*assert_cli, "--db", str(other)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .endswith("not a harness leaderboard index (another SQLite database); not touching it")
    )
    assert other.read_bytes() == before


def test_files_are_served_only_from_inside_the_root(board, tmp_path):
    root = board
    assert resolve_file(root, "alpha/s1", "images/01.png") == root.resolve() / "alpha/s1/images/01.png"
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"secret")
    for bundle, rel, why in [
        ("alpha/s1", "../../../secret.png", "contains '..'"),
        ("alpha/s1", str(secret), "absolute path"),
        ("..", "secret.png", "contains '..'"),
        ("alpha/s1", "images/nope.png", "no such file"),
    ]:
        with pytest.raises(HarnessError, match=why):
            resolve_file(root, bundle, rel)
    os.symlink(secret, root / "alpha/s1/images/link.png")
    with pytest.raises(HarnessError, match="symlink"):
        resolve_file(root, "alpha/s1", "images/link.png")
    os.symlink(tmp_path, root / "alpha/evil")
    with pytest.raises(HarnessError, match="symlink"):
        resolve_file(root, "alpha/evil", "secret.png")


def test_a_rebuild_rehashes_only_changed_files_and_still_sees_disguised_tampering(board, monkeypatch):
    """The digest cache skips unchanged files; a same-size edit with mtime restored is still caught."""
    from harness import hashing
    from harness.leaderboard.build import digest_cache_path

    build_index(board, progress=False)
    assert digest_cache_path(default_db(board)).is_file()
    hashed: list[str] = []
    real = hashing.sha256_file
    from harness.bundle import manifest as mf

    def counting(p, **kwargs):
        hashed.append(Path(p).name)
        return real(p, **kwargs)

    monkeypatch.setattr(hashing, "sha256_file", counting)  # what the cache calls on a miss
    monkeypatch.setattr(mf, "sha256_file", counting)  # what check_files calls without a cache

    again = build_index(board, progress=False)
    assert again.unchanged == 7 and hashed == []  # nothing re-read

    img = board / "alpha/s1/images/02.png"
    st = img.stat()
    data = bytearray(img.read_bytes())
    data[-20] ^= 0xFF  # same size
    img.write_bytes(bytes(data))
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back
    report = build_index(board, progress=False)
    assert hashed == ["02.png"]
    assert report.updated == 1
    alpha = next(r for r in rows(board) if r["team"] == "alpha")
    assert alpha["status"] == "invalid" and "images/02.png: altered" in alpha["reason"]
