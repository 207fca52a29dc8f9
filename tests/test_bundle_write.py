"""`harness bundle`: names checked before writing, every file listed with size and sha256, Chinese card."""

from __future__ import annotations

import json
import shutil

import pytest

from harness.bundle import manifest as mf
from harness.bundle.naming import INFIX, model_id, parse_model_id
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


def test_bad_name_writes_nothing_and_existing_bundle_needs_force(tmp_path, demo_run, capsys):
    out = tmp_path / "subs"
    assert run_cli(["bundle", str(demo_run), "--out", str(out), "--namespace", "bad ns"]) == 2
    assert "namespace 'bad ns'" in capsys.readouterr().err and not out.exists()
    assert run_cli(["bundle", str(demo_run), "--out", str(out), "--namespace", "ns"]) == 0
    assert run_cli(["bundle", str(demo_run), "--out", str(out), "--namespace", "ns"]) == 2
    assert "--force" in capsys.readouterr().err
    assert run_cli(["bundle", str(demo_run), "--out", str(out), "--namespace", "ns", "--force"]) == 0
    assert [p.name for p in (out / "demo").iterdir()] == ["tiny-story"]  # no temporary leftovers


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
