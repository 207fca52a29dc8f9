"""`harness run` end to end on the tiny model: render -> score -> bundle, and the judge's verify."""

from __future__ import annotations

import json

from harness.cli import main
from tests.conftest import small_story


def test_run_renders_scores_and_bundles_a_story_that_verifies(capsys, tmp_path, write_story):
    story = write_story(small_story())
    out, subs = tmp_path / "run", tmp_path / "submissions"
    # The tiny aesthetic head scores about 0, so the gate is lowered to see the valid path.
    code = main(
        ["run", str(story), "--out", str(out), "--submissions", str(subs), "--quiet", "--threshold", "-1"]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert len(list((out / "images").glob("*.png"))) == 8
    scores = json.loads((out / "scores.json").read_text(encoding="utf-8"))
    assert scores["summary"]["valid"] is True
    bundle = subs / "demo" / "tiny-story"
    assert (bundle / "manifest.json").is_file() and (bundle / "scores.json").is_file()
    assert "demo-可图Kolors训练-tiny-story" in printed

    assert main(["verify", str(bundle), "--no-rerun"]) == 0
    capsys.readouterr()


def test_run_exits_1_when_the_gate_fails_and_says_why(capsys, tmp_path, write_story):
    story = write_story(small_story())
    out = tmp_path / "run"
    code = main(["run", str(story), "--out", str(out), "--quiet", "--no-bundle", "--no-reproduce"])
    printed = capsys.readouterr().out
    assert code == 1
    assert "INVALID" in printed and "below 6" in printed
    assert "no bundle written: --no-bundle" in printed
    assert (out / "scores.json").is_file()


def test_run_trains_a_declared_lora_once_then_renders_with_it(capsys, tmp_path, write_story):
    """lora.train: `harness run` trains first, renders with the result, keeps every format in the
    run and the bundle, and a second run reuses the training instead of repeating it."""
    from harness.hashing import sha256_file
    from tests.train_helpers import tiny_config

    config = tiny_config(tmp_path)
    story = write_story(small_story(lora={"train": config.name, "scale": 1.0}))
    subs = tmp_path / "submissions"
    argv = ["run", str(story), "--quiet", "--threshold", "-1", "--submissions", str(subs), "--no-reproduce"]
    assert main([*argv, "--out", str(tmp_path / "run1")]) == 0, capsys.readouterr()
    capsys.readouterr()
    run1 = tmp_path / "run1"
    manifest = json.loads((run1 / "manifest.json").read_text())
    trained = run1 / "lora" / "pytorch_lora_weights.safetensors"
    assert manifest["lora"]["sha256"] == sha256_file(trained)
    assert (run1 / "lora" / "lora_kohya.safetensors").is_file()
    assert (run1 / "training.json").is_file()
    bundle = subs / "demo" / "tiny-story"
    assert (bundle / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert main(["verify", str(bundle), "--no-rerun"]) == 0
    capsys.readouterr()

    # Nothing changed: the second run reuses the trained LoRA (same bytes, same panels).
    assert main([*argv, "--out", str(tmp_path / "run2"), "--no-bundle"]) == 0
    capsys.readouterr()
    run2 = tmp_path / "run2"
    assert sha256_file(run2 / "lora" / "pytorch_lora_weights.safetensors") == sha256_file(trained)
    for i in range(1, 9):
        name = f"images/{i:02d}.png"
        assert (run2 / name).read_bytes() == (run1 / name).read_bytes()


def test_run_loads_the_pipeline_once_and_the_rerender_reuses_it(
    capsys, tmp_path, write_story, monkeypatch, tiny_model_dir
):
    """The reproducibility re-render gets the render's pipeline (same model, LoRA and scale),
    still comes out exact, and the pipeline is kept (parked) for a next story on this base."""
    from harness.models import loader
    from harness.render import pipelines
    from tests.bundle_fixtures import make_lora

    make_lora(tmp_path / "loras", tiny_model_dir)
    story = write_story(small_story(lora={"path": "loras/pytorch_lora_weights.safetensors", "scale": 0.8}))
    loads = []
    real = loader.load_pipeline
    monkeypatch.setattr(loader, "load_pipeline", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    out = tmp_path / "run"
    code = main(["run", str(story), "--out", str(out), "--quiet", "--threshold", "-1", "--no-bundle"])
    assert code == 0, capsys.readouterr()
    capsys.readouterr()
    scores = json.loads((out / "scores.json").read_text(encoding="utf-8"))
    assert scores["reproducibility"]["verdict"] == "exact"
    assert len(loads) == 1
    assert len(pipelines._kept) == 1 and pipelines._kept[0].lora is not None
