"""`harness verify`: a clean bundle passes; each kind of tampering fails with its reason, no traceback."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import pytest

from harness.bundle.verify import verify_bundle
from tests.bundle_helpers import copy_bundle, rehash, run_cli
from tests.score_fixtures import tiny_config

pytest_plugins = ["tests.bundle_fixtures"]  # demo_run, demo_bundle: rendered once per session


def problems(bundle: Path) -> list[str]:
    v = verify_bundle(bundle, rerun=False)
    assert not v.passed
    return v.problems


@pytest.fixture
def bundle(tmp_path, demo_bundle) -> Path:
    return copy_bundle(demo_bundle, tmp_path / "subs")


def test_clean_bundle_verifies_and_reproduces(bundle):
    from harness.bundle.batch import write_verdict

    # The tiny aesthetic predictor has random weights and scores about 0, so the gate is moved
    # below that (model_copy skips validation on purpose; a real config cannot go below 0).
    scoring = tiny_config(scorers=["aesthetic"], reproduce=True).model_copy(update={"threshold": -1.0})
    v = verify_bundle(bundle, scoring=scoring)
    write_verdict(bundle, v)
    verdict = json.loads((bundle / "verdict.json").read_text(encoding="utf-8"))
    assert verdict["verdict"] == "pass" and verdict["problems"] == [], verdict
    assert verdict["gate"] == "pass"  # re-scored by the scoring package
    assert verdict["reproducibility"] == "exact"  # re-rendered bit-identical from the bundle alone
    assert verdict["files_ok"] == verdict["files_total"] == 15
    assert {c["name"]: c["status"] for c in verdict["checks"]}["lora"] == "ok"


def test_the_aesthetic_gate_is_rescored(bundle):
    v = verify_bundle(bundle, scoring=tiny_config(scorers=["aesthetic"], threshold=6.0))
    assert v.gate == "fail" and not v.passed
    assert any("mean aesthetic score" in p and "below 6" in p for p in v.problems)


def test_one_flipped_byte_in_an_image(bundle):
    img = bundle / "images" / "03.png"
    data = bytearray(img.read_bytes())
    data[len(data) // 2] ^= 0x01
    img.write_bytes(bytes(data))
    assert "images/03.png: altered (sha256 differs from the manifest)" in problems(bundle)


def test_a_deleted_file(bundle):
    (bundle / "prompts.json").unlink()
    assert "prompts.json: missing (listed in the manifest, not in the bundle)" in problems(bundle)


def test_an_added_file(bundle):
    (bundle / "images" / "09.png").write_bytes((bundle / "images" / "01.png").read_bytes())
    assert "images/09.png: extra file (not listed in the manifest)" in problems(bundle)


def test_a_manifest_entry_escaping_the_bundle(bundle, capsys):
    m = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    m["files"].append({"path": "../../etc/passwd", "size": 1, "sha256": "0" * 64})
    (bundle / "manifest.json").write_text(json.dumps(m, ensure_ascii=False), encoding="utf-8")
    found = problems(bundle)
    assert any("'../../etc/passwd': unsafe path (contains '..')" in p for p in found)
    assert run_cli(["verify", str(bundle), "--no-rerun"]) == 1
    out = capsys.readouterr().out
    assert "Traceback" not in out and "unsafe path" in out


@pytest.mark.parametrize("path", ["/etc/passwd", "images/./01.png", "C:/x.png", "a\\b.png"])
def test_other_unsafe_manifest_paths(bundle, path):
    m = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    m["files"][0]["path"] = path
    (bundle / "manifest.json").write_text(json.dumps(m, ensure_ascii=False), encoding="utf-8")
    assert any("unsafe path" in p for p in problems(bundle))


def test_a_symlinked_image(bundle, tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes((bundle / "images" / "02.png").read_bytes())
    (bundle / "images" / "02.png").unlink()
    os.symlink(outside, bundle / "images" / "02.png")  # same bytes: only the link gives it away
    found = problems(bundle)
    assert "images/02.png: symlink (not allowed in a bundle)" in found


def _add_lora(bundle: Path, name: str, write) -> None:
    write(bundle / "lora" / name)
    rehash(bundle)  # a consistent manifest: only the content check can catch it


def test_a_ckpt_holding_a_pickled_object_is_refused_without_running_it(bundle, tmp_path):
    import torch

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    _add_lora(bundle, "evil.ckpt", lambda p: torch.save({"unet.x.lora_A.weight": Payload()}, p))
    found = problems(bundle)
    assert any(p.startswith("lora/evil.ckpt: refused: holds pickled Python objects") for p in found), found
    assert not marker.exists(), "the pickle was executed"


def test_a_ckpt_with_a_non_tensor_value_is_refused(bundle):
    import torch

    sd = OrderedDict(
        [("blocks.7.transformer_blocks.0.attn1.to_q.lora_A.default.weight", torch.zeros(4, 8)), ("epoch", 3)]
    )
    _add_lora(bundle, "nested.ckpt", lambda p: torch.save(sd, p))
    assert any("lora/nested.ckpt: refused: 'epoch' holds a int, not a tensor" in p for p in problems(bundle))


def _tampered_lora(bundle: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    path = bundle / "lora" / "pytorch_lora_weights.safetensors"
    sd = load_file(path)
    change(sd)
    save_file(sd, path)
    rehash(bundle)


def test_a_lora_with_nan_values(bundle):
    import math

    def poison(sd):
        key = sorted(sd)[0]
        sd[key] = sd[key].clone()
        sd[key].view(-1)[0] = math.nan

    _tampered_lora(bundle, poison)
    assert any("holds NaN or Inf values" in p for p in problems(bundle))


def test_a_lora_for_another_model(bundle):
    import torch

    def reshape(sd):
        key = next(k for k in sorted(sd) if k.endswith(("to_q.lora_A.weight", "to_q.lora.down.weight")))
        sd[key] = torch.zeros(sd[key].shape[0], 2048)  # real Kolors width, not the tiny one

    _tampered_lora(bundle, reshape)
    assert any("made for another model" in p for p in problems(bundle))


def test_a_lora_with_unknown_keys(bundle):
    import torch

    _tampered_lora(bundle, lambda sd: sd.update({"text_encoder.layer.lora_A.weight": torch.zeros(4, 4)}))
    assert any("is not a recognised Kolors UNet LoRA key" in p for p in problems(bundle))


def test_a_local_base_model_is_refused(bundle):
    text = (
        (bundle / "story.yaml")
        .read_text(encoding="utf-8")
        .replace("base_model: tiny", "base_model: local:/tmp/x")
    )
    (bundle / "story.yaml").write_text(text, encoding="utf-8")
    rehash(bundle)
    assert any("base_model 'local:/tmp/x' is not allowed" in p for p in problems(bundle))


def test_verify_all_skips_unchanged_continues_past_broken_and_summarises(tmp_path, demo_bundle, capsys):
    root = tmp_path / "subs"
    good = copy_bundle(demo_bundle, root)
    broken = root / "other" / "broken"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{not json")
    assert run_cli(["verify", "--all", str(root), "--no-rerun"]) == 1
    out, err = capsys.readouterr()
    assert "verifying (1 failed)" in err and "2/2" in err, err  # the bar names failures as they come
    assert "team" in out and "reproducibility" in out
    assert "demo  tiny-story" in out and "pass" in out and "fail" in out
    assert json.loads((broken / "verdict.json").read_text())["verdict"] == "fail"

    assert run_cli(["verify", "--all", str(root), "--no-rerun"]) == 1
    assert "pass (unchanged, skipped)" in capsys.readouterr().out

    # a verdict.json the participant forged is never trusted, nor one for changed files
    (good / "verdict.json").write_text(json.dumps({"verdict": "pass", "team": "demo"}))
    assert run_cli(["verify", "--all", str(root), "--no-rerun"]) == 1
    assert "(unchanged, skipped)" not in capsys.readouterr().out.split("\n")[1]
    (good / "images" / "01.png").write_bytes(b"not a png")
    assert run_cli(["verify", "--all", str(root), "--no-rerun"]) == 1
    out = capsys.readouterr().out
    assert (
        "unchanged, skipped" not in out
        and json.loads((good / "verdict.json").read_text())["verdict"] == "fail"
    )
    assert run_cli(["verify", "--all", str(root), "--no-rerun", "--force"]) == 1


def test_claimed_scores_are_checked_against_the_judges_rescore(tmp_path, demo_run):
    """A scores.json edited after scoring (manifest re-forged to match) is caught by the re-score."""
    import shutil

    from harness.bundle.writer import write_bundle
    from harness.score.api import score_run
    from harness.score.report import write_scores

    src = tmp_path / "src"
    shutil.copytree(demo_run.parent, src)
    config = tiny_config(scorers=["aesthetic", "consistency"]).model_copy(update={"threshold": -1.0})
    write_scores(score_run(src / "run", config=config))
    bundle = write_bundle(src / "run", out_root=tmp_path / "subs", namespace="judges-test").path

    honest = verify_bundle(bundle, scoring=config)
    checks = {c.name: c for c in honest.checks}
    assert honest.passed, honest.problems
    assert checks["claimed scores"].status == "ok"

    scores = json.loads((bundle / "scores.json").read_text(encoding="utf-8"))
    true_mean = scores["summary"]["aesthetic_mean"]
    scores["summary"]["aesthetic_mean"] = true_mean + 0.5
    (bundle / "scores.json").write_text(json.dumps(scores), encoding="utf-8")
    rehash(bundle)
    forged = verify_bundle(bundle, scoring=config)
    assert not forged.passed
    assert any(
        p.startswith(
            f"scores.json claims aesthetic_mean {true_mean + 0.5:.4f}, the judges re-scored {true_mean:.4f}"
        )
        for p in forged.problems
    ), forged.problems

    # Scored with other weights (another sha256): the numbers may differ, so only a note.
    scores["models"]["aesthetic"][0]["sha256"] = "0" * 64
    (bundle / "scores.json").write_text(json.dumps(scores), encoding="utf-8")
    rehash(bundle)
    other = verify_bundle(bundle, scoring=config)
    assert other.passed, other.problems
    assert any(n.startswith("aesthetic: the team scored with other weights") for n in other.notes)


def test_verify_all_rerenders_many_loras_on_one_kolors_load(
    tmp_path, demo_bundle, tiny_model_dir, monkeypatch
):
    """Judges re-render bundle after bundle: Kolors loads once, each bundle's own LoRA is swapped
    in, and every re-render is still bit-identical to the team's freshly loaded render. The
    scoring models load once too, and score as freshly loaded ones do."""
    import yaml

    from harness.bundle.batch import verify_all
    from harness.bundle.writer import write_bundle
    from harness.config.story import load_story
    from harness.models import loader
    from harness.render import pipelines
    from harness.render.run import render_story
    from harness.score import models
    from tests.bundle_fixtures import make_lora
    from tests.conftest import small_story

    root = tmp_path / "subs"
    copy_bundle(demo_bundle, root)  # LoRA drawn from seed 0, scale 0.8
    make_lora(tmp_path / "rival" / "loras", tiny_model_dir, seed=1)
    story = tmp_path / "rival" / "story.yaml"
    data = small_story(team="rivals", lora={"path": "loras/pytorch_lora_weights.safetensors", "scale": 1.0})
    story.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    pipelines.release_pipeline()
    render_story(load_story(story), tmp_path / "rival" / "run", progress=False)
    rival = write_bundle(tmp_path / "rival" / "run", out_root=root, namespace="rivals").path
    pipelines.release_pipeline()  # the teams rendered on their own machines

    loads = []
    for module, name in ((loader, "load_pipeline"), (models, "load_aesthetic"), (models, "load_clip")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _n=name, _r=real, **k: loads.append(_n) or _r(*a, **k))
    scoring = tiny_config(scorers=["aesthetic"], reproduce=True).model_copy(update={"threshold": -1.0})
    rows = verify_all(root, scoring=scoring)
    assert [r.verdict["team"] for r in rows] == ["demo", "rivals"]
    assert [r.verdict["reproducibility"] for r in rows] == ["exact", "exact"], [r.verdict for r in rows]
    assert all(r.verdict["verdict"] == "pass" for r in rows)
    assert sorted(loads) == ["load_aesthetic", "load_clip", "load_pipeline"]  # once each, for 2 bundles

    alone = verify_bundle(rival, scoring=scoring)  # verify_all released everything: fresh models
    assert alone.scores == rows[1].verdict["scores"] and alone.scores["aesthetic_mean"] is not None
