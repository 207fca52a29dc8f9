"""Incremental leaderboard builds: an unchanged rebuild reads no bundle; a change is read alone.

`BuildResult.read` (the report's `read`) counts the bundles a build opened and parsed; the rest
were only stat-ed. Stats within 2 s of a build are not trusted (a change in the same clock tick
could leave them equal), so the tests wait that long after writing before they expect a bundle
to be skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from harness.bundle.batch import LEDGER, read_ledger, verify_all, write_ledger
from harness.leaderboard import db, stats, synthetic
from harness.leaderboard.build import build_index, default_db
from harness.leaderboard.synthetic import Spec
from tests.bundle_helpers import rehash

TEAMS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")


def settle() -> None:
    """Wait until what was just written is older than the racy-stat window."""
    time.sleep(stats.RACY_NS / 1e9 + 0.2)


def rows(root: Path) -> dict[str, dict]:
    conn = db.connect_read_only(default_db(root))
    try:
        return {r["path"]: r for r in db.query(conn)}
    finally:
        conn.close()


@pytest.fixture
def board(tmp_path) -> Path:
    root = tmp_path / "submissions"
    for i, team in enumerate(TEAMS):
        synthetic.write(root, Spec(team, "s1", 6.1 + i / 10, title=f"story {team}"), seed=i)
    settle()
    first = build_index(root, progress=False)
    assert (first.added, first.read) == (len(TEAMS), len(TEAMS))
    return root


def set_aesthetic(bundle: Path, value: float) -> None:
    path = bundle / "scores.json"
    scores = json.loads(path.read_text(encoding="utf-8"))
    scores["summary"]["aesthetic_mean"] = value
    path.write_text(json.dumps(scores), encoding="utf-8")
    rehash(bundle)


def test_an_unchanged_rebuild_reads_no_bundle(board):
    conn = sqlite3.connect(default_db(board))
    before = conn.execute("SELECT * FROM bundles ORDER BY path").fetchall()
    again = build_index(board, progress=False)
    assert again.read == 0
    assert (again.added, again.updated, again.unchanged, again.removed) == (0, 0, len(TEAMS), 0)
    assert conn.execute("SELECT * FROM bundles ORDER BY path").fetchall() == before  # rows untouched
    assert [r["team"] for r in rows(board).values()][0] == "foxtrot"  # the board still ranks


def test_changed_new_and_removed_bundles_are_the_only_ones_read(board):
    set_aesthetic(board / "alpha/s1", 9.5)  # a changed score: alpha now leads
    shutil.rmtree(board / "bravo")  # a withdrawn bundle
    synthetic.write(board, Spec("golf", "s1", 7.7), seed=40)  # a new one

    report = build_index(board, progress=False)
    assert report.read == 2  # alpha and golf; the other four only stat-ed
    assert (report.added, report.updated, report.removed, report.unchanged) == (1, 1, 1, 4)
    got = rows(board)
    assert "bravo/s1" not in got
    assert got["alpha/s1"]["aesthetic"] == 9.5 and got["alpha/s1"]["rank"] == 1
    assert got["golf/s1"]["aesthetic"] == 7.7 and got["golf/s1"]["status"] == "valid"

    # written less than 2 s before that build: read once more, then trusted
    assert build_index(board, progress=False).read == 2
    settle()
    assert build_index(board, progress=False).read == 2
    assert build_index(board, progress=False).read == 0


def test_stat_changes_a_skip_must_not_miss(board):
    # same size, mtime put back: only ctime and the bytes differ
    img = board / "alpha/s1/images/02.png"
    st = img.stat()
    data = bytearray(img.read_bytes())
    data[-20] ^= 0xFF
    img.write_bytes(bytes(data))
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert img.stat().st_size == st.st_size and img.stat().st_mtime_ns == st.st_mtime_ns
    (board / "bravo/s1/images/05.png").unlink()  # a listed file removed
    (board / "charlie/s1/images/extra.png").write_bytes(b"\x89PNG")  # an unlisted file added
    (board / "delta/s1/images/03.png").rename(board / "delta/s1/images/03.png.bak")  # renamed away
    echo = board / "echo/s1/scores.json"  # swapped for a copy with the same bytes (a new inode)
    shutil.copy2(echo, echo.with_name("tmp.json"))
    os.replace(echo.with_name("tmp.json"), echo)

    report = build_index(board, progress=False)
    assert report.read == 5 and report.unchanged == 2  # echo's row is the same; foxtrot not read
    got = rows(board)
    assert got["alpha/s1"]["reason"].startswith("images/02.png: altered")
    assert got["bravo/s1"]["reason"] == "images/05.png: missing (listed in the manifest, not in the bundle)"
    assert "images/extra.png: extra file" in got["charlie/s1"]["reason"]
    assert got["delta/s1"]["status"] == "invalid"
    assert got["echo/s1"]["status"] == "valid"


def test_a_changed_ledger_record_rereads_that_bundle_only(board):
    verify_all(board, rerun=False)  # writes verdict.json in every bundle and the ledger
    settle()
    assert build_index(board, progress=False).read == len(TEAMS)
    assert rows(board)["alpha/s1"]["verdict"] == "fail"
    assert build_index(board, progress=False).read == 0

    ledger = read_ledger(board)
    del ledger["alpha/s1"]  # the judges' record of alpha is gone: its verdict is no longer vouched for
    write_ledger(board, ledger)
    report = build_index(board, progress=False)
    assert report.read == 1 and report.updated == 1
    alpha = rows(board)["alpha/s1"]
    assert (alpha["verdict"], alpha["source"]) == (None, "claimed")
    assert (board / LEDGER).is_file()


def test_other_rules_or_full_read_every_bundle(board):
    report = build_index(board, progress=False, threshold=6.35)  # another gate: every row re-made
    assert report.read == len(TEAMS)
    got = rows(board)
    assert got["alpha/s1"]["status"] == "invalid" and got["foxtrot/s1"]["status"] == "valid"
    assert build_index(board, progress=False, threshold=6.35).read == 0
    assert build_index(board, progress=False, threshold=6.35, full=True).read == len(TEAMS)


def test_an_index_from_the_previous_schema_is_rebuilt_whole(board):
    conn = sqlite3.connect(default_db(board))
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    report = build_index(board, progress=False)
    assert report.migrated_from == 1 and report.read == report.added == len(TEAMS)
    assert build_index(board, progress=False).read == 0


def test_the_fingerprint_never_follows_a_link(tmp_path):
    bundle = synthetic.write(tmp_path / "submissions", Spec("alpha", "s1", 7.0))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"not the bundle's")
    os.symlink(outside, bundle / "lora")
    fp = stats.take(bundle, time.time_ns())
    names = fp.paths.split(b"\0")
    assert b"lora" in names and b"images/01.png" in names
    assert not any(n.startswith(b"lora/") for n in names)
    assert not fp.trusted  # just written: a later build reads it again
    assert stats.unchanged(bundle, fp.paths, fp.digest)
    (bundle / "images/01.png").touch()
    assert not stats.unchanged(bundle, fp.paths, fp.digest)
