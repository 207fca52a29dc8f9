"""The reproducibility contract is typed: what a render writes is what every reader parses, old
runs and bundles still read (tests/fixtures/records_v1, written by harness 0.1.0 before the
typed records), a renamed key is one line naming the field, and each name and the gate live in
one place."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from harness.render.records import PanelParams, RecordError, RunManifest, parse

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "records_v1"


def _fixture(name: str):
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ["run_manifest.json", "run_manifest_partial_nolora.json"])
def test_an_old_run_manifest_reads_and_writes_back_unchanged(name):
    data = _fixture(name)
    manifest = parse(RunManifest, data, name)
    assert manifest.to_json() == data
    assert all(p.file == f"images/{p.index:02d}.png" for p in manifest.panels)
    if manifest.lora is not None:
        assert manifest.identity.lora_sha256 == manifest.lora.sha256 and manifest.lora.scale == 0.8


@pytest.mark.parametrize("name", ["png_text.json", "png_text_nolora.json"])
def test_old_embedded_panel_parameters_read_through_the_png_reader(name, tmp_path):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from harness.render.pngmeta import read_panel_params

    for chunk in _fixture(name):
        png = tmp_path / Path(chunk["file"]).name
        info = PngInfo()
        info.add_itxt("harness", chunk["harness"])
        info.add_itxt("parameters", chunk["parameters"])
        Image.new("RGB", (8, 8)).save(png, pnginfo=info)
        params = read_panel_params(png)
        assert params.to_json() == json.loads(chunk["harness"])
        assert params.prompt.startswith("卡通") and params.model.ref == "tiny"


def test_an_old_bundle_manifest_and_prompts_read(tmp_path):
    from harness.bundle import manifest as mf
    from harness.bundle.writer import _prompt_row
    from harness.render.records import PanelRecord

    shutil.copy(FIXTURES / "bundle_manifest.json", tmp_path / mf.MANIFEST)
    manifest, _ = mf.read(tmp_path)
    assert manifest.team == "demo" and manifest.lora == ["lora/pytorch_lora_weights.safetensors"]
    run = parse(RunManifest, _fixture("run_manifest.json"), "run.json")
    assert [_prompt_row(PanelRecord.model_validate(p.to_json())) for p in run.panels] == _fixture(
        "prompts.json"
    )


def test_a_renamed_or_missing_key_is_one_line_naming_the_field():
    params = json.loads(_fixture("png_text.json")[0]["harness"])
    renamed = {**params, "sampler": params["scheduler"]}
    del renamed["scheduler"]
    with pytest.raises(RecordError) as e:
        parse(PanelParams, renamed, "images/01.png")
    assert e.value.field == "scheduler" and str(e.value).startswith("images/01.png: scheduler: ")
    assert "\n" not in str(e.value)
    with pytest.raises(RecordError) as e:
        parse(PanelParams, {**params, "steps": "2"}, "images/01.png")  # no coercion
    assert e.value.field == "steps"
    manifest = _fixture("run_manifest.json")
    manifest["panels"][1]["sha256"] = "not a hash"
    with pytest.raises(RecordError) as e:
        parse(RunManifest, manifest, "manifest.json")
    assert e.value.field == "panels.1.sha256"


def test_what_a_render_writes_is_what_the_readers_parse(tmp_path, write_story, tiny_model_dir):
    from harness.config.story import load_story
    from harness.render.outdir import read_run_manifest
    from harness.render.pngmeta import read_panel_params
    from harness.render.run import render_story
    from tests.conftest import small_story

    story = write_story(small_story())
    result = render_story(load_story(story), tmp_path / "run", panels="1,2", batch_size=2, progress=False)
    manifest = read_run_manifest(tmp_path / "run")
    assert manifest == result.manifest and manifest.status == "partial"
    params = [read_panel_params(tmp_path / "run" / p.file) for p in manifest.panels]
    assert [p.panel for p in params] == [1, 2]
    assert params[0].render_key() == params[1].render_key()  # one group: replayed in one batch
    assert params[0].sampling == manifest.sampling and params[0].model == manifest.model
    assert params[0].batch_size == manifest.identity.batch_size == 2


# --- one place for each name, and for the gate ---------------------------------------------------

_NAMES = (
    "manifest.json",
    "run.json",
    "prompts.json",
    "scores.json",
    "training.json",
    "verdict.json",
    "contact_sheet.png",
    "configuration.json",
    "story.yaml",
)


def test_run_folder_and_bundle_names_are_defined_in_harness_layout_only():
    defined = re.compile(
        r'^\s*[A-Z_]+\s*(?::\s*str\s*)?=\s*"(' + "|".join(map(re.escape, _NAMES)) + ')"', re.M
    )
    found = {
        str(path.relative_to(ROOT)): defined.findall(path.read_text(encoding="utf-8"))
        for path in (ROOT / "harness").rglob("*.py")
    }
    elsewhere = {p: names for p, names in found.items() if names and p != "harness/layout.py"}
    assert not elsewhere, elsewhere
    assert len(found["harness/layout.py"]) >= 8


def test_the_aesthetic_gate_is_one_number():
    from harness.config.gate import AESTHETIC_GATE
    from harness.config.scoring import ScoringConfig

    literal = re.compile(r"(?<![\d.])6\.0(?![\d])")
    places = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "harness").rglob("*.py")
        if literal.search(path.read_text(encoding="utf-8"))
    ]
    assert places == ["harness/config/gate.py"]
    assert ScoringConfig().threshold == AESTHETIC_GATE == 6.0


# --- one architecture config per model -----------------------------------------------------------


def test_the_tiny_model_is_kolors_with_some_sizes_overridden(tiny_model_dir):
    from harness.hashing import sha256_tree
    from harness.lora.kolors_layout import is_kolors_layout
    from harness.models import kolors_arch, tiny

    for full, small in (
        (kolors_arch.KOLORS_UNET, tiny.TINY_UNET),
        (kolors_arch.KOLORS_VAE, tiny.TINY_VAE),
        (kolors_arch.KOLORS_CHATGLM, tiny.TINY_CHATGLM),
    ):
        assert set(small) == set(full)
        kept = {k for k in full if small[k] == full[k]}
        assert kept and kept != set(full)  # some sizes overridden, the rest the real config's
    assert is_kolors_layout(kolors_arch.KOLORS_UNET) and not is_kolors_layout(tiny.TINY_UNET)
    with pytest.raises(KeyError, match="block_out_chanels"):
        kolors_arch.with_overrides(kolors_arch.KOLORS_UNET, {"block_out_chanels": (8,)})
    # Built from the shared configs, the tiny model is the one the 0.1.0 fixture was rendered with.
    recorded = _fixture("run_manifest.json")["model"]["sha256"]
    assert sha256_tree(tiny_model_dir) == recorded


def test_the_benchmark_builds_full_size_kolors_from_the_harness_configs():
    from bench import kolors_arch as bench_arch
    from harness.models import kolors_arch

    assert bench_arch.UNET_CONFIG is kolors_arch.KOLORS_UNET
    assert bench_arch.VAE_CONFIG is kolors_arch.KOLORS_VAE
    assert bench_arch.CHATGLM_CONFIG is kolors_arch.KOLORS_CHATGLM


# --- one search by content, one story reader -------------------------------------------------------


def test_find_by_sha256_goes_by_content_and_never_follows_a_link_when_untrusted(tmp_path):
    import hashlib

    from harness.locate import find_by_sha256

    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    a.write_bytes(b"first")
    b.write_bytes(b"second")
    link = tmp_path / "link.safetensors"
    link.symlink_to(b)
    want = hashlib.sha256(b"second").hexdigest()
    found, others = find_by_sha256([tmp_path / "absent", a, a, b], want)
    assert found == b and others == [(a, hashlib.sha256(b"first").hexdigest())]  # a looked at once
    assert find_by_sha256([link], want)[0] == link  # a trusted name may be a link the user made
    assert find_by_sha256([link], want, untrusted=True) == (None, [])  # an untrusted one is skipped
    assert find_by_sha256([a], want)[0] is None


def test_load_story_checks_the_files_it_names_only_when_asked(tmp_path, write_story):
    from harness.config.story import load_story
    from harness.errors import HarnessError
    from tests.conftest import small_story

    path = write_story(small_story(lora={"path": "loras/missing.safetensors", "scale": 0.5}))
    with pytest.raises(HarnessError, match="LoRA file not found"):
        load_story(path, check_tokens=False)
    story = load_story(path, check_files=False, check_tokens=False).story
    assert story.lora.path == "loras/missing.safetensors" and story.lora.scale == 0.5
    link = tmp_path / "linked.yaml"
    link.symlink_to(path)
    assert load_story(link, check_files=False, check_tokens=False).story == story  # typed by the user
    with pytest.raises(HarnessError, match="link"):
        load_story(link, check_files=False, check_tokens=False, follow_links=False)  # in a bundle
