"""`harness bundle`: names checked before writing, every file listed with size and sha256, Chinese card."""

from __future__ import annotations

import json
import shutil

import pytest

from harness.bundle import manifest as mf
from harness.config.naming import INFIX, model_id, parse_model_id
from harness.errors import HarnessError
from harness.hashing import sha256_file
from tests.bundle_helpers import run_cli

pytest_plugins = ["tests.bundle_fixtures"]  # demo_run, demo_bundle: rendered once per session


def test_model_id_follows_the_competition_naming():
    mid = model_id("my-ns", "datawhale", "cat-and-youth")
    assert str(mid) == f"my-ns/datawhale-{INFIX}-cat-and-youth"
    assert parse_model_id(str(mid)) == mid


@pytest.mark.parametrize(
    "ns, team, name, words",
    [
        ("ns", "数据鲸", "story", "team"),
        ("ns", "team", "a/b", "name"),
        ("ns", "team", "..x", "name"),
        ("ns", "team", "-x", "name"),
        ("bad ns", "team", "x", "namespace"),
        ("ns", "t" * 30, "n" * 30, "over the limit of 64"),
    ],
)
def test_bad_names_are_refused_in_one_line(ns, team, name, words):
    with pytest.raises(HarnessError, match=words):
        model_id(ns, team, name)


def test_bundle_lists_every_file_with_size_and_sha256(demo_bundle, demo_run):
    manifest, _ = mf.read(demo_bundle)
    on_disk, problems = mf.walk(demo_bundle)
    assert not problems
    listed = {e.path: e for e in manifest.files}
    assert set(listed) == set(on_disk) - {mf.MANIFEST}
    for path, e in listed.items():
        assert e.size == (demo_bundle / path).stat().st_size
        assert e.sha256 == sha256_file(demo_bundle / path)
    expected = {f"images/{i:02d}.png" for i in range(1, 9)} | {
        "story.yaml",
        "prompts.json",
        "run.json",
        "README.md",
        "configuration.json",
        "contact_sheet.png",
        "lora/pytorch_lora_weights.safetensors",
    }
    assert expected <= set(listed)
    assert manifest.model_id == f"judges-test/demo-{INFIX}-tiny-story"
    assert manifest.scored is False and manifest.lora == ["lora/pytorch_lora_weights.safetensors"]
    assert {"harness", "torch", "diffusers", "modelscope"} <= set(manifest.versions)
    # the exact story file used, byte for byte, and the LoRA the panels were rendered with
    assert (demo_bundle / "story.yaml").read_bytes() == (demo_run / "story.yaml").read_bytes()
    run = json.loads((demo_run / "manifest.json").read_text())
    assert listed["lora/pytorch_lora_weights.safetensors"].sha256 == run["lora"]["sha256"]
    prompts = json.loads((demo_bundle / "prompts.json").read_text(encoding="utf-8"))
    assert [p["seed"] for p in prompts] == [p["seed"] for p in run["panels"]]


def test_model_card_renders_with_chinese_text_intact(demo_bundle):
    card = (demo_bundle / "README.md").read_text(encoding="utf-8")
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "- text-to-image-synthesis" in front and "- Kwai-Kolors/Kolors" in front
    assert "license: apache-2.0" in front and '"可图Kolors训练"' in front
    assert "卡通，一个可爱的灰色小猫咪，在一个圆形睡垫睡着" in body  # not escaped, not mangled
    assert "小猫咪和青年的同居生活" in body
    assert "\\u" not in card and "&#" not in card
    assert "adapter_weights=[0.8]" in body  # the strength the panels were rendered with
    assert "Unscored" in body
    assert "![panel 8](images/08.png)" in body


def test_scores_json_is_copied_and_shown(tmp_path, demo_run):
    from harness.bundle.writer import write_bundle

    run = tmp_path / "run"
    shutil.copytree(demo_run, run)
    (run / "scores.json").write_text(json.dumps({"summary": {"aesthetic_mean": 6.4321, "valid": True}}))
    result = write_bundle(run, out_root=tmp_path / "subs", namespace="ns")
    assert result.scored and (result.path / "scores.json").read_bytes() == (run / "scores.json").read_bytes()
    card = (result.path / "README.md").read_text(encoding="utf-8")
    assert "summary.aesthetic_mean | 6.4321" in card and "Unscored" not in card


def _snapshot(root) -> dict:
    """Every entry under `root` as lstat sees it: file hashes, link targets (nothing followed)."""
    import os
    import stat
    from pathlib import Path

    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            mode = os.lstat(p).st_mode
            rel = p.relative_to(root).as_posix()
            if stat.S_ISLNK(mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISREG(mode):
                out[rel] = ("file", sha256_file(p))
            else:
                out[rel] = ("dir",)
    return out


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_name_writes_nothing_and_the_same_story_rebundles(tmp_path, demo_run, capsys):
    out = tmp_path / "subs"
    assert run_cli(["bundle", str(demo_run), "--out", str(out), "--namespace", "bad ns"]) == 2
    assert "namespace 'bad ns'" in capsys.readouterr().err and not out.exists()
    assert run_cli(["bundle", str(demo_run), "--out", str(out), "--namespace", "ns"]) == 0
    first = (out / "demo" / "tiny-story" / "manifest.json").read_bytes()
    # The same story bundled again replaces its own bundle, with or without --force.
    assert run_cli(["bundle", str(demo_run), "--out", str(out), "--namespace", "ns2"]) == 0
    assert (out / "demo" / "tiny-story" / "manifest.json").read_bytes() != first  # the new namespace
    assert run_cli(["bundle", str(demo_run), "--out", str(out), "--namespace", "ns", "--force"]) == 0
    assert [p.name for p in (out / "demo").iterdir()] == ["tiny-story"]  # no temporary leftovers


def test_a_different_story_with_the_same_team_and_name_needs_force(tmp_path, demo_run, capsys):
    """Issue 13 class 11: another story must not silently replace a bundle and lose its LoRA."""
    out = tmp_path / "subs"
    assert run_cli(["bundle", str(demo_run), "--out", str(out), "--namespace", "ns"]) == 0
    other = tmp_path / "other-run"
    shutil.copytree(demo_run, other)
    story = (other / "story.yaml").read_text(encoding="utf-8")
    (other / "story.yaml").write_text(story.replace("title:", "title: 另一个故事 #", 1), encoding="utf-8")
    before = _snapshot(tmp_path)
    assert run_cli(["bundle", str(other), "--out", str(out), "--namespace", "ns"]) == 2
    err = _one_line(capsys)
    assert str(out / "demo" / "tiny-story") in err and "different story" in err and "--force" in err
    assert _snapshot(tmp_path) == before  # the bundle and its LoRA are untouched
    assert run_cli(["bundle", str(other), "--out", str(out), "--namespace", "ns", "--force"]) == 0
    bundled = (out / "demo" / "tiny-story" / "story.yaml").read_bytes()
    assert bundled == (other / "story.yaml").read_bytes()


def test_a_rebundle_that_would_lose_a_lora_needs_force(tmp_path, demo_run, tiny_model_dir, capsys):
    from tests.bundle_fixtures import make_lora

    extra = make_lora(tmp_path / "extra", tiny_model_dir, seed=1).rename(tmp_path / "extra.safetensors")
    out = tmp_path / "subs"
    assert run_cli(["bundle", str(demo_run), "--out", str(out), "--lora", str(extra)]) == 0
    before = _snapshot(out)
    assert run_cli(["bundle", str(demo_run), "--out", str(out)]) == 2
    err = _one_line(capsys)
    assert "lora/extra.safetensors" in err and "--force" in err
    assert _snapshot(out) == before


@pytest.mark.parametrize("what", ["user-folder", "symlink", "file", "stray-file", "team-symlink"])
def test_a_folder_the_harness_did_not_write_is_never_replaced(tmp_path, demo_run, capsys, what):
    out = tmp_path / "subs"
    target = out / "demo" / "tiny-story"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("someone's file", encoding="utf-8")
    if what == "user-folder":
        target.mkdir(parents=True)
        (target / "notes.md").write_text("my notes", encoding="utf-8")
    elif what == "symlink":
        target.parent.mkdir(parents=True)
        target.symlink_to(elsewhere)
    elif what == "file":
        target.parent.mkdir(parents=True)
        target.write_text("a file", encoding="utf-8")
    elif what == "stray-file":
        assert run_cli(["bundle", str(demo_run), "--out", str(out)]) == 0
        (target / "notes.md").write_text("my notes, saved into the bundle folder", encoding="utf-8")
    else:
        out.mkdir()
        (out / "demo").symlink_to(elsewhere)
    capsys.readouterr()
    before = _snapshot(tmp_path)
    for force in ([], ["--force"]):
        assert run_cli(["bundle", str(demo_run), "--out", str(out), *force]) == 2
        err = _one_line(capsys)
        assert str(target if what != "team-symlink" else out / "demo") in err
        assert _snapshot(tmp_path) == before


def test_a_changed_lora_is_not_bundled(tmp_path, demo_run):
    from harness.bundle.writer import write_bundle

    run = tmp_path / "src" / "run"
    shutil.copytree(demo_run.parent, run.parent)
    lora = run.parent / "loras" / "pytorch_lora_weights.safetensors"
    data = bytearray(lora.read_bytes())
    data[-1] ^= 1
    lora.write_bytes(bytes(data))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["story"]["source"] = str(run.parent / "story.yaml")
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(HarnessError, match="not found unchanged"):
        write_bundle(run, out_root=tmp_path / "subs")


def test_a_symlinked_lora_folder_in_a_run_is_never_shipped(tmp_path, demo_run, capsys):
    """A run folder whose lora/ links to another project's folder would bundle (for public upload)
    whatever LoRA lies there; refused in one line, nothing bundled (red team, round 2)."""
    run = tmp_path / "run"
    shutil.copytree(demo_run, run, symlinks=True)
    secret = tmp_path / "other-project" / "lora"
    secret.mkdir(parents=True)
    lora = next((demo_run.parent / "loras").glob("*.safetensors"))
    shutil.copyfile(lora, secret / "UNRELEASED.safetensors")
    shutil.rmtree(run / "lora", ignore_errors=True)
    (run / "lora").symlink_to(secret)
    assert run_cli(["bundle", str(run), "--out", str(tmp_path / "subs"), "--namespace", "ns"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lora: is a symlink" in err[0], err
    assert not (tmp_path / "subs").exists() or not any((tmp_path / "subs").rglob("UNRELEASED*"))


def test_planning_a_bundle_writes_nothing_and_the_plan_writes_the_bundle(tmp_path, demo_run):
    """`plan_bundle` makes every check and writes nothing (not even the team folder); the plan
    then writes exactly the files `write_bundle` writes in one step."""
    from harness.bundle.writer import plan_bundle, write_bundle, write_plan
    from tests.hostile_helpers import snapshot

    run = tmp_path / "run"
    shutil.copytree(demo_run, run)
    before = snapshot(tmp_path)
    plan = plan_bundle(run, out_root=tmp_path / "planned", namespace="ns")
    assert snapshot(tmp_path) == before and not (tmp_path / "planned").exists()
    assert plan.target == tmp_path / "planned" / plan.story.team / plan.story.name
    assert plan.story_sha256 == sha256_file(run / "story.yaml")
    planned = write_plan(plan)
    direct = write_bundle(run, out_root=tmp_path / "direct", namespace="ns")
    a, b = snapshot(planned.path), snapshot(direct.path)
    # the manifest and card carry the creation time; every other file is the same bytes
    assert {k for k in a} == {k for k in b}
    assert {k: v for k, v in a.items() if k not in ("manifest.json", "README.md")} == {
        k: v for k, v in b.items() if k not in ("manifest.json", "README.md")
    }
