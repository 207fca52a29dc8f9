"""verify --all as a batch: a bundle that hangs past the per-bundle limit, or that planted a folder
where its verdict goes, becomes a failed row with its reason; the others are judged, the ledger
is written, and the next run starts clean."""

from __future__ import annotations

import json
import os
import time

from harness.bundle.batch import LEDGER, read_ledger, verify_all
from tests.bundle_helpers import copy_bundle, run_cli
from tests.score_fixtures import tiny_config

pytest_plugins = ["tests.bundle_fixtures"]  # demo_run, demo_bundle: rendered once per session


def test_a_bundle_past_the_time_limit_is_a_failed_row_and_the_batch_goes_on(tmp_path, demo_bundle):
    root = tmp_path / "subs"
    slow = copy_bundle(demo_bundle, root)  # its re-render takes seconds on the tiny model
    broken = root / "zz" / "broken"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("[" * 50_000)
    # the tiny aesthetic head scores about 0: the gate is moved below it, as in test_bundle_verify
    scoring = tiny_config(scorers=["aesthetic"], reproduce=True).model_copy(update={"threshold": -1.0})

    start = time.monotonic()
    # far below any verify: with the tiny Kolors and scorers warm, one can take under 0.05 s
    rows = verify_all(root, scoring=scoring, time_limit_s=0.001)
    assert time.monotonic() - start < 60
    by_name = {r.bundle.name: r.verdict for r in rows}
    assert by_name[slow.name]["verdict"] == "fail"
    assert any("longer than the limit of 0.001 s" in p for p in by_name[slow.name]["problems"])
    assert by_name["broken"]["verdict"] == "fail"
    # the broken one fails too, on its nesting or (parsing it takes over 1 ms) on the limit
    reasons = ("nested 50000 levels deep", "longer than the limit of 0.001 s")
    assert any(r in p for p in by_name["broken"]["problems"] for r in reasons)
    ledger = read_ledger(root)
    assert set(ledger) == {f"{slow.parent.name}/{slow.name}", "zz/broken"}

    # nothing was left half-done: without the limit the same bundle passes, re-rendered exactly
    rows = verify_all(root, scoring=scoring, time_limit_s=None)
    good = next(r.verdict for r in rows if r.bundle == slow)
    assert good["verdict"] == "pass", good["problems"]
    assert good["reproducibility"] == "exact"


def test_a_folder_planted_at_verdict_json_fails_that_bundle_only_and_the_ledger_keeps_its_verdict(
    tmp_path, demo_bundle, capsys
):
    root = tmp_path / "subs"
    honest = copy_bundle(demo_bundle, root)
    planted = copy_bundle(demo_bundle, tmp_path / "staging").rename(root / "evil")
    (planted / "verdict.json").mkdir()
    (planted / "verdict.json" / "keep.txt").write_text("mine")

    assert run_cli(["verify", "--all", str(root), "--no-rerun", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert json.loads((honest / "verdict.json").read_text())["verdict"] == "pass"
    assert (planted / "verdict.json" / "keep.txt").read_text() == "mine"
    entry = read_ledger(root)[planted.relative_to(root).as_posix()]
    assert entry["written"] is False and entry["verdict"]["verdict"] == "fail"
    assert any("verdict.json: exists and is a folder" in p for p in entry["verdict"]["problems"])
    assert len([ln for ln in out.splitlines() if " fail" in ln]) == 1, out

    # unchanged bundles are not judged again, the unwritable one included (its verdict is in the ledger)
    assert run_cli(["verify", "--all", str(root), "--no-rerun", "--quiet"]) == 1
    assert capsys.readouterr().out.count("(unchanged, skipped)") == 2


def test_a_killed_verify_leaves_no_temp_that_fails_the_rerun(tmp_path, demo_bundle):
    """A verdict temp file left by kill -9 (between write and rename) is the harness's own: the
    next verify removes it instead of reporting an extra file in the team's bundle."""
    root = tmp_path / "subs"
    bundle = copy_bundle(demo_bundle, root)
    (bundle / ".verdict.json.0123456789abcdef.tmp").write_text('{"half": ')
    rows = verify_all(root, rerun=False)
    assert rows[0].verdict["verdict"] == "pass", rows[0].verdict["problems"]
    assert not any(n.endswith(".tmp") for n in os.listdir(bundle))


def test_a_planted_ledger_link_is_replaced_not_written_through(tmp_path, demo_bundle):
    root = tmp_path / "subs"
    copy_bundle(demo_bundle, root)
    victim = tmp_path / "victim.json"
    victim.write_text("precious")
    (root / LEDGER).symlink_to(victim)
    verify_all(root, rerun=False)
    assert victim.read_text() == "precious"
    assert not (root / LEDGER).is_symlink() and read_ledger(root)


def test_two_verifies_of_one_bundle_at_once_leave_one_whole_verdict(tmp_path, demo_bundle):
    """Two judges verifying the same bundle at the same moment: both finish, the verdict file is
    one whole JSON document (atomic renames, random temp names), and no temp file is left."""
    import subprocess
    import sys

    bundle = copy_bundle(demo_bundle, tmp_path / "subs")
    cmd = [sys.executable, "-m", "harness.cli", "verify", str(bundle), "--no-rerun"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert json.loads((bundle / "verdict.json").read_text(encoding="utf-8"))["verdict"] == "pass"
    assert not [n for n in os.listdir(bundle) if n.endswith(".tmp")]


def test_a_bundle_with_20000_planted_links_keeps_the_verdict_and_ledger_small(tmp_path, demo_bundle):
    """Each planted link or too-deep folder is a problem; a bundle can plant any number of them.
    The walk stops at the file cap, a verdict keeps at most 50 lines, and the ledger keeps 5 per
    bundle, so one bundle cannot make the judges' ledger unreadable for everyone."""
    from harness.bundle.verdict import MAX_PROBLEMS

    root = tmp_path / "subs"
    honest = copy_bundle(demo_bundle, root)
    evil = copy_bundle(demo_bundle, tmp_path / "staging").rename(root / "evil")
    target = tmp_path / "elsewhere"
    target.mkdir()
    links = evil / "links"
    links.mkdir()
    for i in range(20_000):
        (links / f"{i:05d}-{'x' * 200}").symlink_to(target)
    start = time.monotonic()
    rows = verify_all(root, rerun=False)
    assert time.monotonic() - start < 60
    verdicts = {r.bundle: r.verdict for r in rows}
    assert verdicts[honest]["verdict"] == "pass"
    assert verdicts[evil]["verdict"] == "fail" and len(verdicts[evil]["problems"]) <= MAX_PROBLEMS
    assert (evil / "verdict.json").stat().st_size < 100_000
    assert (root / LEDGER).stat().st_size < 50_000
    assert read_ledger(root)[honest.relative_to(root).as_posix()]["verdict"]["verdict"] == "pass"


def test_terminal_escapes_from_a_bundle_never_reach_the_judges_terminal(tmp_path, demo_bundle, capsys):
    """A file name or an embedded prompt can carry escapes (clear the screen, print a fake PASS,
    hide what follows); `verify` and `inspect` print them as visible escapes."""
    from PIL import Image

    from harness.cli import main
    from harness.render.pngmeta import read_params, save_png

    bundle = copy_bundle(demo_bundle, tmp_path / "subs")
    (bundle / "\x1b[2J\x1b[H\nPASS: all checks ok\x1b[8m").write_text("x")
    assert run_cli(["verify", str(bundle), "--no-rerun"]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[2J" in out
    assert not any(line.startswith("PASS") for line in out.splitlines())

    params = read_params(bundle / "images" / "01.png")
    params["prompt"] = "cat\n\x1b[2J\x1b[1;31mFAKE: verified by judges\x07"
    save_png(Image.new("RGB", (8, 8)), tmp_path / "evil.png", params)
    assert main(["inspect", str(tmp_path / "evil.png")]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "FAKE" in out


def test_a_team_folder_with_too_many_entries_costs_bounded_time(tmp_path, demo_bundle, capsys):
    from harness.bundle.batch import MAX_ENTRIES

    root = tmp_path / "subs"
    honest = copy_bundle(demo_bundle, root)
    spam = root / "spam"
    spam.mkdir()
    for i in range(MAX_ENTRIES + 50):
        (spam / f"b{i:06d}").mkdir()
    start = time.monotonic()
    rows = verify_all(root, rerun=False)
    assert time.monotonic() - start < 60
    assert [r.bundle for r in rows] == [honest] and rows[0].verdict["verdict"] == "pass"
    err = capsys.readouterr().err
    assert f"spam: more than {MAX_ENTRIES} entries; the rest were not read (not judged)" in err


def test_a_quick_no_rerun_pass_never_stands_in_for_a_full_verify(tmp_path, demo_bundle):
    """The ledger records the judge settings: a bundle passed by `--no-rerun` is re-rendered and
    re-scored by the next full run, never skipped as unchanged (red team, round 2)."""
    root = tmp_path / "subs"
    copy_bundle(demo_bundle, root)
    assert verify_all(root, rerun=False)[0].verdict["gate"] == "skipped"
    scoring = tiny_config(scorers=["aesthetic"], reproduce=True).model_copy(update={"threshold": -1.0})
    full = verify_all(root, scoring=scoring)[0]
    assert not full.skipped and full.verdict["gate"] == "pass" and full.verdict["reproducibility"] == "exact"
    assert verify_all(root, scoring=scoring)[0].skipped  # same settings, unchanged: skipped
    stricter = scoring.model_copy(update={"threshold": 6.0})
    again = verify_all(root, scoring=stricter)[0]
    assert not again.skipped and again.verdict["gate"] == "fail"


def test_a_folder_name_that_is_not_utf8_is_one_failed_row(tmp_path, demo_bundle):
    """A bundle folder named b'\\xff' used to crash the whole batch when its verdict was written."""
    import shutil

    root = tmp_path / "subs"
    honest = copy_bundle(demo_bundle, root)
    odd = os.fsdecode(bytes(root / "0evil") + b"/\xff")
    shutil.copytree(demo_bundle, odd)
    rows = verify_all(root, rerun=False)
    assert len(rows) == 2
    verdicts = {r.bundle.name: r.verdict for r in rows}
    assert verdicts[honest.name]["verdict"] == "pass"
    assert verdicts["\udcff"]["verdict"] == "fail"  # its folder does not name the manifest's team
    assert set(read_ledger(root)) == {"0evil/\udcff", honest.relative_to(root).as_posix()}
