"""Bundles written by an attacker: the judges' verify scores only their own pixels, never opens a
file outside the bundle, reads every bundle file within bounds, and in `verify --all` one hostile
bundle is one failed row while the honest bundle beside it is still judged.

Every bundle here starts as the real demo bundle (tests/bundle_fixtures.py) and is edited the way
a hostile team would edit it, with the manifest (and the run record) re-forged where the attack
needs the file checks to pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.bundle.verify import verify_bundle
from harness.render.pngmeta import read_params, save_png
from tests.bundle_helpers import copy_bundle, rehash
from tests.hostile_helpers import changed, snapshot, tripped, tripwire
from tests.score_fixtures import tiny_config

pytest_plugins = ["tests.bundle_fixtures"]  # demo_run, demo_bundle: rendered once per session

REPO = Path(__file__).resolve().parents[1]
# The tiny aesthetic head scores about 0, so the gate sits below it (as in test_bundle_verify).
SCORING = tiny_config(scorers=["aesthetic"], reproduce=True).model_copy(update={"threshold": -1.0})
SCORING_YAML = (
    "aesthetic_model: tiny-aesthetic\nconsistency_model: tiny-clip\nscorers: [aesthetic]\nthreshold: -1.0\n"
)
CLI_TIMEOUT = 240  # seconds; every attack here is a hang or a blow-up when it works
LEDGER, LOCK = ".verify-ledger.json", ".verify-ledger.lock"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reforge(bundle: Path) -> None:
    """Make run.json and the manifest agree with the files as they are now (a consistent forgery)."""
    run = json.loads((bundle / "run.json").read_text(encoding="utf-8"))
    for panel in run["panels"]:
        if (bundle / panel["file"]).is_file():
            panel["sha256"] = _sha256(bundle / panel["file"])
    (bundle / "run.json").write_text(json.dumps(run, ensure_ascii=False, indent=2), encoding="utf-8")
    rehash(bundle)


# --- class 12: the judges score their own pixels -------------------------------------------------


def _nudged(image: Image.Image, scorer, tries: int = 12) -> Image.Image:
    """`image` with every channel moved by -1, 0 or +1, the variant the aesthetic model likes best
    among `tries` random ones (an attacker would follow the gradient; picking is enough here)."""
    base = np.asarray(image.convert("RGB"), dtype=np.int16)
    rng = np.random.default_rng(0)
    variants = [
        Image.fromarray(np.clip(base + rng.integers(-1, 2, base.shape), 0, 255).astype(np.uint8), "RGB")
        for _ in range(tries)
    ]
    scores = scorer.scores(variants, len(variants))
    return variants[int(np.argmax(scores))]


def test_a_nudged_panel_within_tolerance_scores_what_the_judges_rerender_scores(tmp_path, demo_bundle):
    from harness.score.api import score_run
    from harness.score.models import shared_cache

    bundle = copy_bundle(demo_bundle, tmp_path / "subs")
    honest = verify_bundle(bundle, scoring=SCORING)
    assert honest.passed and honest.reproducibility == "exact", honest.problems
    assert honest.scored_pixels == "re-rendered" and honest.submitted_scores is None

    panel = bundle / "images" / "01.png"
    params = read_params(panel)
    aesthetic = shared_cache(SCORING.device, SCORING.pins).get("aesthetic", "tiny-aesthetic")
    original = Image.open(panel).convert("RGB")
    nudged = _nudged(original, aesthetic)
    assert np.abs(np.asarray(nudged, int) - np.asarray(original, int)).max() == 1
    assert aesthetic.scores([nudged], 1)[0] > aesthetic.scores([original], 1)[0]
    save_png(nudged, panel, params)
    reforge(bundle)

    # Scored on the team's own files, the nudge pays: the inflated number the attack aims for.
    files_only = score_run(bundle, config=SCORING.model_copy(update={"reproduce": False}))
    inflated = files_only.metrics["aesthetic"].summary["aesthetic_mean"]
    assert inflated > honest.scores["aesthetic_mean"]

    forged = verify_bundle(bundle, scoring=SCORING)
    assert forged.passed, forged.problems  # within tolerance: still a reproducible bundle
    assert forged.reproducibility == "reproducible"
    assert forged.scored_pixels == "re-rendered"
    assert forged.scores["aesthetic_mean"] == honest.scores["aesthetic_mean"]  # the judges' pixels
    assert forged.submitted_scores["aesthetic_mean"] == pytest.approx(inflated)  # shown, not used
    assert forged.to_json()["scored_pixels"] == "re-rendered"


# --- class 9: nothing outside the bundle is opened -----------------------------------------------


@pytest.mark.parametrize("story_lora", ["absolute", "dotdot"])
def test_paths_a_bundle_names_outside_itself_are_never_opened(
    tmp_path, demo_bundle, tiny_model_dir, story_lora
):
    """The story's lora.path names a file outside the bundle (absolute, or `..`), and panels 2-8
    record a LoRA whose file name climbs out of lora/. Both outside files hold exactly the LoRA the
    panels record, so a harness that looked there would find a match and render with it."""
    from harness.score.api import score_run
    from tests.bundle_fixtures import make_lora

    root = tmp_path / "subs"
    bundle = copy_bundle(demo_bundle, root)
    other = make_lora(tmp_path / "lora-b", tiny_model_dir, seed=1)
    shutil.copy(other, bundle / "lora" / "b.safetensors")  # the bundle's own second LoRA
    secret = tmp_path / "secret" / "secret.safetensors"
    secret.parent.mkdir()
    shutil.copy(other, secret)
    dotdot = root / "outside.safetensors"  # ../../ from the bundle, beside the teams' folders
    shutil.copy(other, dotdot)
    climbing = tmp_path / "climbing.safetensors"
    shutil.copy(other, climbing)

    named = str(secret) if story_lora == "absolute" else "../../outside.safetensors"
    story = (bundle / "story.yaml").read_text(encoding="utf-8")
    assert "path: loras/pytorch_lora_weights.safetensors" in story
    (bundle / "story.yaml").write_text(
        story.replace("path: loras/pytorch_lora_weights.safetensors", f"path: {named}"), encoding="utf-8"
    )
    lora_b = {"file": os.path.relpath(climbing, bundle / "lora"), "sha256": _sha256(other), "scale": 0.8}
    for i in range(2, 9):
        png = bundle / "images" / f"{i:02d}.png"
        save_png(Image.open(png).convert("RGB"), png, {**read_params(png), "lora": lora_b})
    reforge(bundle)

    outside = [secret, dotdot, climbing]
    for path in outside:
        tripwire(path)
    before = snapshot(tmp_path)
    start = time.monotonic()
    v = verify_bundle(bundle, scoring=SCORING)
    run = score_run(bundle, config=SCORING)  # `harness score` on a bundle: the same rule
    assert time.monotonic() - start < 600
    assert [p for p in outside if tripped(p)] == []
    assert changed(before, snapshot(tmp_path)) == set()
    # Panels 2-8 were re-rendered with the bundle's own b.safetensors (found by its sha256; they
    # were drawn with the other LoRA, so the pixels differ a little): no outside file involved.
    assert v.reproducibility in ("reproducible", "not reproducible"), v.problems
    assert v.scored_pixels == "re-rendered" and all("\n" not in p for p in v.problems)
    assert run.repro_error is None and run.reproducibility.panels[1].verdict != "exact"


def test_a_bundle_may_not_name_a_local_model_or_an_odd_revision(tmp_path, demo_bundle):
    from harness.score.api import score_run

    bundle = copy_bundle(demo_bundle, tmp_path / "subs")
    elsewhere = tmp_path / "models" / "kolors"
    elsewhere.mkdir(parents=True)
    (elsewhere / "model_index.json").write_text("{}")
    tripwire(elsewhere / "model_index.json")
    png = bundle / "images" / "01.png"
    save_png(
        Image.open(png).convert("RGB"), png, {**read_params(png), "model": {"ref": f"local:{elsewhere}"}}
    )
    reforge(bundle)
    v = verify_bundle(bundle, scoring=SCORING)
    assert any(p.startswith("images/01.png: embedded base model 'local:") for p in v.problems), v.problems
    run = score_run(bundle, config=SCORING)
    assert "is not allowed in a folder from someone else" in run.repro_error
    assert not tripped(elsewhere / "model_index.json")

    from harness.score.reproduce import allowed_base

    assert allowed_base("modelscope:Kwai-Kolors/Kolors-diffusers@v1.0")
    assert not allowed_base("modelscope:Kwai-Kolors/Kolors-diffusers@../../x")
    assert not allowed_base("modelscope:someone/Kolors-diffusers")


# --- verify --all over one hostile bundle and one honest bundle ------------------------------------


def _png_chunk(path: Path, ctype: bytes, data: bytes) -> None:
    """Insert a raw chunk just before IEND (PIL would refuse to write some of these)."""
    raw = path.read_bytes()
    end = raw.rindex(b"IEND") - 4
    chunk = struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))
    path.write_bytes(raw[:end] + chunk + raw[end:])


def _resave(png: Path, image=None, text: str | None = None) -> None:
    """Re-save a panel with other pixels and/or another `harness` chunk text."""
    from PIL.PngImagePlugin import PngInfo

    params = json.dumps(read_params(png), ensure_ascii=False)
    image = image or Image.open(png).convert("RGB")
    info = PngInfo()
    info.add_itxt("harness", params if text is None else text)
    image.save(png, format="PNG", pnginfo=info)


def _write(rel: str, text: str, *, forge: bool = True):
    def build(bundle: Path, outside: Path) -> None:
        (bundle / rel).write_text(text, encoding="utf-8")
        if forge:
            rehash(bundle)

    return build


def _alias_bomb(bundle: Path, outside: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    (bundle / "story.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rehash(bundle)


def _huge_params_chunk(bundle: Path, outside: Path) -> None:
    png = bundle / "images" / "01.png"
    params = read_params(png)
    _resave(png, text=json.dumps({**params, "prompt": "猫" * (1 << 20)}, ensure_ascii=False))
    reforge(bundle)


def _deep_params(bundle: Path, outside: Path) -> None:
    _resave(bundle / "images" / "01.png", text="[" * 5000 + "]" * 5000)
    reforge(bundle)


def _compressed_text_bomb(bundle: Path, outside: Path) -> None:
    z = zlib.compressobj(9)
    inflates = b"".join(z.compress(b"\0" * (1 << 20)) for _ in range(256)) + z.flush()  # 256 MiB
    _png_chunk(bundle / "images" / "01.png", b"iTXt", b"junk\0\x01\x00\0\0" + inflates)
    reforge(bundle)


def _pixel_bomb(bundle: Path, outside: Path) -> None:
    png = bundle / "images" / "02.png"
    params = json.dumps(read_params(png), ensure_ascii=False).encode()
    Image.new("1", (20000, 20000)).save(png)  # 400 M pixels in a few tens of KB
    _png_chunk(png, b"iTXt", b"harness\0\x00\x00\0\0" + params)
    reforge(bundle)


def _swap(rel: str, kind: str, target: str | None = None):
    """Put a symlink, hardlink, FIFO or folder at `rel` (a listed file or a name verify writes)."""

    def build(bundle: Path, outside: Path) -> None:
        path = bundle / rel
        outside_file = outside / (target or "target.bin")
        outside_file.write_bytes(path.read_bytes() if path.is_file() else b"the judge's own file\n")
        if path.exists():
            path.unlink()
        if kind == "symlink":
            os.symlink(outside_file, path)
        elif kind == "hardlink":
            os.link(outside_file, path)
        elif kind == "fifo":
            os.mkfifo(path)
        else:
            path.mkdir()
            (path / "keep.txt").write_text("the team's folder\n")

    return build


def _forged_pixels(bundle: Path, outside: Path) -> None:
    """Panel 03 holds panel 04's pixels under 03's parameters; manifest and run record agree."""
    _resave(bundle / "images" / "03.png", image=Image.open(bundle / "images" / "04.png").convert("RGB"))
    reforge(bundle)


def _inflated_claims(bundle: Path, outside: Path) -> None:
    from harness.score.api import score_run
    from harness.score.report import write_scores

    write_scores(score_run(bundle, config=SCORING.model_copy(update={"reproduce": False})), bundle / "s.json")
    scores = json.loads((bundle / "s.json").read_text(encoding="utf-8"))
    (bundle / "s.json").unlink()
    scores["summary"]["aesthetic_mean"] += 0.5
    (bundle / "scores.json").write_text(json.dumps(scores), encoding="utf-8")
    rehash(bundle)


DEEP = "[" * 100_000 + "]" * 100_000
TEMP = ".verdict.json.0123456789abcdef.tmp"
# (case, build, expected: "pass" or a piece of the failed row's reason, re-render?)
CASES = [
    ("deep prompts.json", _write("prompts.json", DEEP), "prompts.json: JSON nested 100000", False),
    ("deep scores.json", _write("scores.json", DEEP), "scores.json: JSON nested 100000 levels deep", False),
    ("deep run.json", _write("run.json", DEEP), "run.json: JSON nested 100000 levels deep", False),
    ("deep manifest", _write("manifest.json", DEEP, forge=False), "manifest.json: JSON nested", False),
    ("huge prompts.json", _write("prompts.json", " " * (11 << 20) + "[]"), "over the text cap", False),
    ("YAML alias bomb", _alias_bomb, "story.yaml:5: aliases expand to more than", False),
    ("YAML 10k deep", _write("story.yaml", "[" * 10_000 + "]" * 10_000), "story.yaml:1: nested more", False),
    ("2 MB harness chunk", _huge_params_chunk, "over the cap of 16384", False),
    ("deep harness chunk", _deep_params, "JSON nested 5000 levels deep", False),
    ("iTXt inflating to 256 MiB", _compressed_text_bomb, "images/01.png: unreadable or truncated", False),
    ("pixel bomb", _pixel_bomb, "images/02.png: 20000x20000 = 400000000 pixels is over the limit", False),
    ("symlink at a listed file", _swap("images/02.png", "symlink"), "images/02.png: symlink", False),
    ("hardlink at a listed file", _swap("images/02.png", "hardlink"), "pass", False),
    ("FIFO at a listed file", _swap("images/02.png", "fifo"), "images/02.png: not a regular file", False),
    ("symlink at verdict.json", _swap("verdict.json", "symlink"), "verdict.json: symlink", False),
    ("hardlink at verdict.json", _swap("verdict.json", "hardlink"), "pass", False),
    ("FIFO at verdict.json", _swap("verdict.json", "fifo"), "verdict.json: exists and is a FIFO", False),
    ("folder at verdict.json", _swap("verdict.json", "folder"), "exists and is a folder", False),
    ("symlink at the verdict temp", _swap(TEMP, "symlink"), "pass", False),
    ("FIFO at the verdict temp", _swap(TEMP, "fifo"), "pass", False),
    ("forged pixels, consistent manifest", _forged_pixels, "reproducibility: 03.png:", True),
    ("inflated claimed scores", _inflated_claims, "scores.json claims aesthetic_mean", True),
]  # fmt: skip


def _verify_all(root: Path, tmp: Path, rerun: bool, **kw) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "harness.cli", "verify", "--all", str(root), "--quiet"]
    if rerun:
        args += ["--scoring", str(tmp / "scoring.yaml")]
    else:
        args.append("--no-rerun")
    return subprocess.run(args, cwd=tmp, capture_output=True, text=True, timeout=CLI_TIMEOUT, **kw)


def as_team(bundle: Path, team: str) -> Path:
    """The bundle re-labelled as `team`'s (manifest, model id, story.yaml), consistently forged, so
    it may sit in `<root>/<team>/` (a bundle's folder names its team)."""
    import re

    from harness.bundle import manifest as mf
    from harness.config.naming import parse_model_id

    story = bundle / "story.yaml"
    text = story.read_text(encoding="utf-8")
    story.write_text(re.sub(r"(?m)^team: .*$", f"team: {team}", text, count=1), encoding="utf-8")
    data = json.loads((bundle / mf.MANIFEST).read_text(encoding="utf-8"))
    mid = parse_model_id(data["model_id"])
    data["team"] = team
    data["model_id"] = (
        data["model_id"].split("/")[0]
        + "/"
        + data["model_id"].split("/")[1].replace(f"{mid.team}-", f"{team}-", 1)
    )
    (bundle / mf.MANIFEST).write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    rehash(bundle)
    return bundle


@pytest.mark.parametrize("case, build, expected, rerun", CASES, ids=[c[0] for c in CASES])
def test_one_hostile_bundle_is_one_failed_row(tmp_path, demo_bundle, case, build, expected, rerun):
    root = tmp_path / "subs"
    honest = copy_bundle(demo_bundle, root)
    hostile = as_team(copy_bundle(demo_bundle, tmp_path / "staging"), "zz-evil").rename(root / "zz-evil")
    outside = tmp_path / "outside"
    outside.mkdir()
    build(hostile, outside)
    (tmp_path / "scoring.yaml").write_text(SCORING_YAML, encoding="utf-8")
    before = snapshot(tmp_path)

    start = time.monotonic()
    done = _verify_all(root, tmp_path, rerun)
    assert time.monotonic() - start < CLI_TIMEOUT
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    assert done.returncode == (0 if expected == "pass" else 1), done.stderr[-2000:]

    ledger = json.loads((root / LEDGER).read_text(encoding="utf-8"))
    assert set(ledger) == {"demo/tiny-story", "zz-evil"}
    assert json.loads((honest / "verdict.json").read_text(encoding="utf-8"))["verdict"] == "pass"
    verdict = ledger["zz-evil"]["verdict"]
    problems = verdict["problems"]
    assert all("\n" not in p and len(p) < 1000 for p in problems), problems
    if expected == "pass":
        assert verdict["verdict"] == "pass", problems
    else:
        assert verdict["verdict"] == "fail" and any(expected in p for p in problems), problems
    rows = [ln for ln in done.stdout.splitlines() if {"pass", "fail"} & set(ln.split())]
    assert len(rows) == 2, done.stdout  # one summary row per bundle, nothing else

    # The results table has one row per bundle, each one printable line (pandas reads it back).
    import pandas as pd

    from harness.bundle.results import RESULTS

    table = pd.read_csv(root / RESULTS)
    assert sorted(table["verdict"]) == sorted(["pass", expected if expected == "pass" else "fail"])

    # Nothing changed but the judges' own files: the ledger, its lock, the results table, the two
    # verdicts, and in the hostile bundle whatever it planted at the verdict's names.
    allowed = {f"subs/{n}" for n in (LEDGER, LOCK, RESULTS)} | {"subs/demo/tiny-story/verdict.json"}
    allowed |= {"subs/zz-evil/verdict.json", f"subs/zz-evil/{TEMP}"}
    assert changed(before, snapshot(tmp_path)) - allowed == set()
    if os.path.lexists(hostile / "verdict.json") and (hostile / "verdict.json").is_dir():
        assert (hostile / "verdict.json" / "keep.txt").read_text() == "the team's folder\n"


def _ledger_keys(root: Path) -> set[str]:
    try:
        return set(json.loads((root / LEDGER).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return set()


def test_a_second_verify_all_refuses_and_a_killed_one_resumes_to_the_same_verdicts(tmp_path, demo_bundle):
    """Judges start `verify --all` twice on one root (the second refuses with one line), then the
    first is killed with SIGKILL midway; the rerun finishes and every verdict is what an
    uninterrupted judge gives (three copies of one bundle: three equal verdicts, re-rendered)."""
    root = tmp_path / "subs"
    root.mkdir()
    for team in ("a", "b", "c"):
        as_team(copy_bundle(demo_bundle, tmp_path / "staging" / team), team).rename(root / team)
    (tmp_path / "scoring.yaml").write_text(SCORING_YAML, encoding="utf-8")
    args = [sys.executable, "-m", "harness.cli", "verify", "--all", str(root), "--quiet"]
    args += ["--scoring", str(tmp_path / "scoring.yaml")]
    first = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + CLI_TIMEOUT
        while not (root / LOCK).exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        second = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=CLI_TIMEOUT)
        assert first.poll() is None, "the first verify ended before the second started; test inconclusive"
        assert second.returncode == 2
        assert second.stderr.strip().splitlines() == [
            f"harness: error: {root}: another `harness verify --all` is running on this folder"
        ]

        # the ledger is rewritten at most every 20 s: the verdicts show how far the batch got
        def judged() -> int:
            return sum((root / t / "verdict.json").exists() for t in "abc")

        while judged() < 1 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None and judged() < 3, "nothing left to interrupt"
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == -signal.SIGKILL

    start = time.monotonic()
    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert time.monotonic() - start < CLI_TIMEOUT
    assert again.returncode == 0, again.stderr[-2000:]
    assert _ledger_keys(root) == {"a", "b", "c"}
    verdicts = [json.loads((root / t / "verdict.json").read_text(encoding="utf-8")) for t in "abc"]
    kept = ("verdict", "gate", "reproducibility", "scores", "scored_pixels", "problems", "files_ok")
    assert [{k: v[k] for k in kept} for v in verdicts[1:]] == [{k: verdicts[0][k] for k in kept}] * 2
    assert verdicts[0]["verdict"] == "pass" and verdicts[0]["reproducibility"] == "exact"
    assert verdicts[0]["scored_pixels"] == "re-rendered"
    assert not [p for p in root.rglob("*.tmp")]


# --- the panels' render settings are the story's --------------------------------------------------


def test_panels_rendered_with_other_settings_than_the_bundled_story_fail_verify(tmp_path, demo_bundle):
    """A team renders with 2 steps and guidance 7.5 (its own, truly rendered, self-consistent
    panels) but bundles the story that says 4 steps and guidance 4.0: verify fails with one line
    per panel naming the first differing setting, before any re-render; the honest bundle passes."""
    import yaml

    from harness.config.story import load_story
    from harness.render.run import render_story

    honest = copy_bundle(demo_bundle, tmp_path / "honest")
    v = verify_bundle(honest, rerun=False)
    assert v.passed, v.problems

    bundle = copy_bundle(demo_bundle, tmp_path / "subs")
    story = yaml.safe_load((bundle / "story.yaml").read_text(encoding="utf-8"))
    lora = next((bundle / "lora").glob("*.safetensors"))
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(lora, src / lora.name)
    story["lora"] = {"path": lora.name, "scale": story["lora"]["scale"]}
    story["sampling"] = {**story["sampling"], "steps": 2, "guidance": 7.5}
    (src / "story.yaml").write_text(
        yaml.safe_dump(story, allow_unicode=True, sort_keys=False), encoding="utf-8"
    )
    render_story(load_story(src / "story.yaml"), src / "run", progress=False)
    for png in sorted((src / "run" / "images").glob("*.png")):
        shutil.copy(png, bundle / "images" / png.name)
    reforge(bundle)

    v = verify_bundle(bundle, rerun=False)
    panels = [p for p in v.problems if p.startswith("images/")]
    assert panels == [
        f"images/{i:02d}.png: embedded steps differs from story.yaml (panel {i})" for i in range(1, 9)
    ], v.problems


@pytest.mark.parametrize(
    "field, value",
    [
        ("guidance", 9.0),
        ("width", 128),
        ("height", 128),
        ("scheduler", "dpm"),
        ("negative_prompt", ""),
        ("steps", True),
        ("lora.scale", 2.0),
        ("lora.scale", None),
    ],
)
def test_each_embedded_render_setting_is_held_to_the_story(tmp_path, demo_bundle, field, value):
    bundle = copy_bundle(demo_bundle, tmp_path / "subs")
    png = bundle / "images" / "03.png"
    params = read_params(png)
    if field == "lora.scale":
        params["lora"] = None if value is None else {**params["lora"], "scale": value}
    else:
        params[field] = value
    save_png(Image.open(png).convert("RGB"), png, params)
    reforge(bundle)
    v = verify_bundle(bundle, rerun=False)
    assert v.problems == [f"images/03.png: embedded {field} differs from story.yaml (panel 3)"], v.problems


# --- a bundle's folder names its team ------------------------------------------------------------


def test_verify_all_holds_the_manifest_to_the_folder_it_sits_in(tmp_path, demo_bundle):
    """`<root>/<team>/<name>/` must hold the manifest of team/name and `<root>/<team>/` one of that
    team: a bundle moved one level up, or under another team's or name's folder, fails in one line
    naming the folder and the claim; the honest one passes and nothing outside the root changes."""
    from harness.bundle.batch import verify_all

    team, name = demo_bundle.parent.name, demo_bundle.name
    root = tmp_path / "subs"
    copy_bundle(demo_bundle, root)
    shutil.copytree(demo_bundle, root / "zzz", symlinks=True)  # one level up, another team's folder
    shutil.copytree(demo_bundle, root / team / "other", symlinks=True)
    shutil.copytree(demo_bundle, root / "thief" / name, symlinks=True)
    shutil.copytree(demo_bundle, tmp_path / "solo" / team, symlinks=True)  # one level, its own team
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    before = snapshot(tmp_path)

    rows = {r.bundle.relative_to(root).as_posix(): r.verdict for r in verify_all(root, rerun=False)}
    claim = f"{team}/{name}"
    assert {k: v["verdict"] for k, v in rows.items()} == {
        f"{team}/{name}": "pass",
        "zzz": "fail",
        f"{team}/other": "fail",
        f"thief/{name}": "fail",
    }, {k: v["problems"] for k, v in rows.items()}
    assert rows["zzz"]["problems"] == [f"folder zzz holds the bundle of {claim}"]
    assert rows[f"{team}/other"]["problems"] == [f"folder {team}/other holds the bundle of {claim}"]
    assert rows[f"thief/{name}"]["problems"] == [f"folder thief/{name} holds the bundle of {claim}"]
    (solo,) = verify_all(tmp_path / "solo", rerun=False)
    assert solo.verdict["verdict"] == "pass", solo.verdict["problems"]
    # only the judges' own files were written: verdicts and the ledger
    after = changed(before, snapshot(tmp_path))
    assert after and all(
        p.endswith(("verdict.json", LEDGER, LOCK)) or p.startswith("subs/.") or p.startswith("solo/.")
        for p in after
    ), sorted(after)
    assert not any(p.startswith("outside") for p in after)
