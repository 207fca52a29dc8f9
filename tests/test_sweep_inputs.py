"""Bad input to `harness sweep` exits 2 with one line and writes nothing: an unknown panel, too
few seeds, a LoRA strength outside -2..2, a folder holding another story's sweep (or anyone
else's folder, or a link), Ray flags without the Ray backend."""

from __future__ import annotations

import os

import pytest

from harness.cli import main
from tests.conftest import small_story


def _snapshot(folder):
    return (
        sorted((str(p.relative_to(folder)), p.lstat().st_mtime_ns) for p in folder.rglob("*"))
        if folder.exists()
        else None
    )


@pytest.fixture
def story(write_story):
    return write_story(small_story())


@pytest.fixture
def lora_story(tmp_path, write_story):
    (tmp_path / "style.safetensors").write_bytes(b"not read: the options are refused first")
    return write_story(small_story(lora={"path": "style.safetensors", "scale": 0.8}), name="lora.yaml")


CASES = [
    (["--seeds", "3", "--panels", "9"], "--panels: panel 9 does not exist"),
    (["--seeds", "3", "--panels", "1,x"], "--panels: 'x' is not a panel number"),
    (["--seeds", "0"], "--seeds: must be at least 1, got 0"),
    (["--seeds", "-2"], "--seeds: must be at least 1"),
    ([], "--seeds: required"),
    (["--seeds", "2", "--scales", "0.5"], "--scales: the story has no LoRA"),
    (["--seeds", "2", "--preview-steps", "2"], "--preview-steps and --keep go together"),
    (["--seeds", "2", "--preview-steps", "4", "--keep", "1"], "--preview-steps: must be 1..3"),
    (["--seeds", "2", "--preview-steps", "2", "--keep", "2"], "--keep: must be 1..1"),
    (["--seeds", "2", "--min-consistency", "1.5"], "--min-consistency: must be a cosine in -1..1"),
    (["--seeds", "2", "--panels", "1,1"], "--panels: panel 1 is named more than once"),
    (["--seeds", "1", "--preview-steps", "1", "--keep", "1"], "--preview-steps: needs --seeds 2 or more"),
    (["--seeds", "2", "--workers", "2"], "--workers: only with --backend ray"),
    (["--seeds", "2", "--address", "auto"], "--address: only with --backend ray"),
    (["--seeds", "2", "--gpus-per-worker", "0.5"], "--gpus-per-worker: only with --backend ray"),
    (["--seeds", "2", "--backend", "ray", "--workers", "0"], "--workers: must be at least 1 (got 0)"),
    (["--seeds", "2", "--backend", "ray", "--address", "local"], "--address 'local': give auto, ray://"),
    (["--seeds", "2", "--backend", "ray", "--gpus-per-worker", "nan"], "--gpus-per-worker: a fraction"),
    (["--seeds", "2", "--backend", "ray", "--gpus-per-worker", "inf"], "--gpus-per-worker: a fraction"),
    (["--seeds", "2", "--backend", "slurm"], "--backend: 'slurm' is not one of local, ray"),
]


@pytest.mark.parametrize("args,message", CASES)
def test_bad_options_exit_2_with_one_line_and_write_nothing(story, tmp_path, capsys, args, message):
    out = tmp_path / "sweep"
    assert main(["sweep", str(story), *args, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not out.exists()


@pytest.mark.parametrize("scales", ["2.5", "-3", "0.5,nan", "inf"])
def test_a_strength_outside_the_range_is_refused(lora_story, tmp_path, capsys, scales):
    out = tmp_path / "sweep"
    assert main(["sweep", str(lora_story), "--seeds", "1", "--scales", scales, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--scales:" in err, err
    assert not out.exists()


def test_a_folder_holding_another_storys_sweep_is_refused_and_left_as_it_was(tmp_path, write_story, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "candidates").mkdir()
    (out / "sweep.json").write_text(
        '{"kind": "harness.sweep", "story": "other/story", "story_sha256": "' + "0" * 64 + '"}'
    )
    before = _snapshot(out)
    story = write_story(small_story())
    assert main(["sweep", str(story), "--seeds", "2", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds the sweep of another story (other/story)" in err, err
    assert _snapshot(out) == before


@pytest.mark.parametrize("kind", ["stranger", "stray", "link"])
def test_a_folder_the_harness_did_not_make_is_never_written(tmp_path, write_story, capsys, kind):
    story = write_story(small_story())
    out = tmp_path / "sweep"
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    if kind == "stranger":
        out = target
    elif kind == "stray":
        out.mkdir()
        (out / "sweep.json").write_text('{"kind": "harness.sweep"}')
        (out / "holiday.jpg").write_bytes(b"x")
    else:
        os.symlink(target, out)
    before, elsewhere = _snapshot(out if kind != "link" else target), _snapshot(target)
    assert main(["sweep", str(story), "--seeds", "2", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert _snapshot(out if kind != "link" else target) == before and _snapshot(target) == elsewhere


def test_serve_needs_a_folder(capsys):
    assert main(["sweep", "serve"]) == 2
    assert "needs the sweep folder" in capsys.readouterr().err


def test_sweep_help_imports_no_torch_gradio_or_pandas():
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = (
        "import sys\n"
        "from harness.cli import main\n"
        "try:\n    main(['sweep', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'diffusers', 'gradio', 'pandas') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--seeds" in result.stdout and "--min-consistency" in result.stdout
