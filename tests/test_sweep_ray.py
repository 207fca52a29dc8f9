"""`harness sweep --backend ray` on the session's local Ray (tests/ray_fixtures.py): the same
candidates, pixels, table and swept story as the local backend, rendered in the workers (this
process renders nothing); workers killed on three chunks are restarted and the sweep completes
(the retry budget is per chunk); a chunk whose worker always dies stops the sweep with one line
and a rerun finishes it; a resumed sweep renders only what is missing; a worker whose LoRA
differs from the driver's stops the sweep at start with one line and nothing recorded."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import HarnessError
from tests.test_sweep import two_panels_with_lora

pytest_plugins = ["tests.ray_fixtures"]
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install -e '.[cluster]')"
)
# one worker with the whole machine: on a CPU the torch thread count changes pixels, and a
# worker with every CPU renders with the local backend's threads (docs/sweep.md)
WHOLE = ["--backend", "ray", "--workers", "1", "--gpus-per-worker", "0"]


@pytest.fixture(scope="module")
def lora_story(tmp_path_factory, tiny_model_dir) -> Path:
    """A 2-panel story (64x64, 2 steps) with a real LoRA, so strengths are swept too."""
    return two_panels_with_lora(tmp_path_factory.mktemp("ray-sweep"), tiny_model_dir)


def _sweep(story: Path, out: Path, *extra: str) -> int:
    args = ["sweep", str(story), "--seeds", "2", "--panels", "1,2", "--scales", "0.5"]
    return main([*args, "--out", str(out), "--quiet", "--min-consistency", "-1", *extra])


def _table(out: Path):
    from harness.sweep.outputs import read_table

    return read_table(out).drop(columns=["render_s"]).sort_values("id").reset_index(drop=True)


def test_ray_sweeps_like_the_local_backend_and_renders_in_its_workers(lora_story, tmp_path, ray_cluster):
    import torch

    from harness.sweep import work

    local, remote = tmp_path / "local", tmp_path / "ray"
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))  # the worker's share of the session Ray (2 CPUs)
    try:
        assert _sweep(lora_story, local) == 1  # the tiny aesthetic head scores ~0: the gate fails
    finally:
        torch.set_num_threads(threads)
    before = work.RENDER_COUNT[0]
    assert _sweep(lora_story, remote, *WHOLE) == 1
    assert work.RENDER_COUNT[0] == before  # every candidate was drawn in a Ray worker
    a, b = _table(local), _table(remote)
    assert len(a) == 2 * (2 + 2 * 2)  # per strength: 2 panels x (own seed + 2 more)
    assert a.equals(b), a.compare(b) if a.shape == b.shape else (a.shape, b.shape)
    pngs = sorted(p.name for p in (local / "candidates").glob("*.png"))
    assert pngs and pngs == sorted(p.name for p in (remote / "candidates").glob("*.png"))
    for name in pngs:  # the same pixels and the same embedded parameters
        assert (local / "candidates" / name).read_bytes() == (remote / "candidates" / name).read_bytes()
    assert (local / "story.swept.yaml").read_bytes() == (remote / "story.swept.yaml").read_bytes()


def _render_pids() -> list[int]:
    """Ray processes drawing a sweep chunk right now (Ray names a worker after its call)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::SweepWorker.render"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _killer(out: Path, killed: list[int], stop: threading.Event, *, each_chunk_once: bool, most: int) -> None:
    """SIGKILL workers mid-chunk, at most `most` times: with `each_chunk_once`, only after a
    candidate was recorded since the last kill (so the retried chunk is let through and the
    next kill hits another chunk); otherwise whatever is drawing."""
    recorded_at_kill = -1
    while not stop.is_set() and len(killed) < most:
        recorded = len(list((out / "candidates").glob("*.json"))) if (out / "candidates").is_dir() else 0
        if not each_chunk_once or recorded > recorded_at_kill:
            for pid in _render_pids():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                recorded_at_kill = recorded
                break
        time.sleep(0.02)


def _sweep_while_killing(lora_story: Path, out: Path, **how) -> tuple[int, list[int]]:
    killed: list[int] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_killer, args=(out, killed, stop), kwargs=how, daemon=True)
    watcher.start()
    try:
        code = _sweep(lora_story, out, *WHOLE)
    finally:
        stop.set()
        watcher.join(5)
    return code, killed


def test_workers_killed_on_three_chunks_are_restarted_and_the_sweep_completes(
    lora_story, tmp_path, ray_cluster
):
    """The retry budget is per chunk: three deaths on three chunks are three retries, not the end."""
    from harness.sweep.outputs import read_table

    out = tmp_path / "out"
    code, killed = _sweep_while_killing(lora_story, out, each_chunk_once=True, most=3)
    assert code == 1 and len(killed) == 3
    table = read_table(out)
    assert len(table) == 12 and table["chosen"].sum() == 2
    assert (out / "story.swept.yaml").is_file()


def test_a_chunk_whose_worker_always_dies_stops_the_sweep_in_one_line_and_a_rerun_finishes(
    lora_story, tmp_path, ray_cluster, capsys
):
    out = tmp_path / "out"
    code, killed = _sweep_while_killing(lora_story, out, each_chunk_once=False, most=3)
    assert code == 2 and len(killed) == 3
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "died 3 times rendering candidates" in err, err
    assert "run the sweep again to continue" in err
    assert _sweep(lora_story, out, *WHOLE) == 1  # a rerun finishes it


def test_a_resumed_ray_sweep_renders_only_what_is_missing(lora_story, tmp_path, ray_cluster, capsys):
    import json

    out = tmp_path / "out"
    assert _sweep(lora_story, out, "--backend", "ray", "--workers", "2", "--gpus-per-worker", "1") == 1
    rows = sorted((out / "candidates").glob("*.json"))
    for row in rows[:3]:  # three candidates lost (a kill between PNG and row leaves this)
        row.unlink()
    capsys.readouterr()
    assert _sweep(lora_story, out, "--backend", "ray", "--workers", "2", "--json") == 1
    assert json.loads(capsys.readouterr().out)["rendered_now"] == 3
    assert _sweep(lora_story, out, "--backend", "ray", "--json") == 1  # finished: nothing to hand out
    assert json.loads(capsys.readouterr().out)["rendered_now"] == 0


def test_a_worker_whose_lora_differs_stops_the_sweep_at_start_with_one_line(
    lora_story, tmp_path, ray_cluster
):
    """The driver names the LoRA by content; a node holding another file at that path refuses."""
    from harness.sweep.plan import SweepOptions
    from harness.sweep.run import execute_sweep, plan_sweep

    out = tmp_path / "out"
    opts = SweepOptions(seeds=1, panels="1", backend="ray", workers=1, gpus_per_worker=0, progress=False)
    setup = plan_sweep(lora_story, out, opts)
    other = dataclasses.replace(setup, lora_sha256="0" * 64)  # what the driver read elsewhere
    with pytest.raises(HarnessError) as e:
        execute_sweep(other)
    line = str(e.value)
    assert "\n" not in line and "cannot render this sweep" in line and "a different file" in line, line
    assert not (out / "candidates").exists() or not any((out / "candidates").iterdir())


def test_a_cluster_too_small_for_the_request_leaves_no_sweep_folder(
    lora_story, tmp_path, ray_cluster, capsys
):
    out = tmp_path / "out"
    code = main(["sweep", str(lora_story), "--seeds", "1", "--panels", "1", "--out", str(out), "--quiet",
                 "--backend", "ray", "--workers", "5", "--gpus-per-worker", "1"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "harness: error: 5 workers with 1 GPU each need 5 GPUs; the Ray cluster has 2 (use fewer "
        "--workers or a smaller --gpus-per-worker)"
    )
    assert not out.exists()


JOIN = """
import sys
from harness.cluster import connection as cluster
from harness.cli import main
cluster.CONNECT_TIMEOUT_S = 5
sys.exit(main(sys.argv[1:]))
"""


def test_a_cluster_that_cannot_be_joined_leaves_no_sweep_folder(lora_story, tmp_path):
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    args = [sys.executable, "-c", JOIN, "sweep", str(lora_story), "--seeds", "1", "--panels", "1"]
    args += ["--out", str(out), "--quiet", "--backend", "ray", "--address", f"127.0.0.1:{port}"]
    proc = subprocess.run(args, cwd=os.getcwd(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("harness")]
    assert len(lines) == 1 and "no Ray cluster answered within 5 s" in lines[0], proc.stderr[-2000:]
    assert not out.exists()


def test_a_preview_sweep_on_ray_with_killed_workers_equals_the_local_one(lora_story, tmp_path, ray_cluster):
    """Two render calls (previews, then the kept full renders) share one pool of workers, and
    workers killed along the way do not change what is chosen."""
    import torch

    from harness.sweep.outputs import read_table

    preview = ["--preview-steps", "1", "--keep", "1"]
    local, remote = tmp_path / "local", tmp_path / "ray"
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    try:
        assert _sweep(lora_story, local, *preview) == 1
    finally:
        torch.set_num_threads(threads)
    killed: list[int] = []
    stop = threading.Event()
    watcher = threading.Thread(
        target=_killer, args=(remote, killed, stop), kwargs={"each_chunk_once": True, "most": 2}, daemon=True
    )
    watcher.start()
    try:
        assert _sweep(lora_story, remote, *preview, *WHOLE) == 1
    finally:
        stop.set()
        watcher.join(5)
    assert len(killed) == 2
    a = read_table(local).drop(columns=["render_s"]).sort_values("id").reset_index(drop=True)
    b = read_table(remote).drop(columns=["render_s"]).sort_values("id").reset_index(drop=True)
    assert a.equals(b)
    assert (local / "story.swept.yaml").read_bytes() == (remote / "story.swept.yaml").read_bytes()
