"""Story files copied from strangers, against `harness validate`, `render` and `run`.

Each attack asserts what a participant cares about: exit code 2 and exactly one line on stderr
naming the field, nothing written or changed anywhere (a snapshot of the tree before and after),
and a time bound. Rendering uses the tiny Kolors and stories of 1-2 panels at 64x64.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from tests.conftest import ROOT

QUICK_S = 60  # a refusal is a parse and a few checks; a hang is the attack this bounds


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under `root` (links not followed): kind, size, content hash, link target."""
    out: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            p = Path(folder, name)
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif p.is_file():
                out[rel] = ("file", st.st_size, hashlib.sha256(p.read_bytes()).hexdigest())
            else:
                out[rel] = ("dir" if p.is_dir() else "other",)
    return out


def changed(before: dict, after: dict) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def cli(capsys, *argv) -> tuple[int, str, str, float]:
    """harness.cli.main in this process: (exit code, stdout, stderr, seconds)."""
    t0 = time.monotonic()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err, time.monotonic() - t0


def refused(capsys, *argv, needles=(), seconds=QUICK_S) -> str:
    """Exit 2, exactly one line on stderr holding every needle, within `seconds`."""
    code, _, err, took = cli(capsys, *argv)
    assert code == 2, err
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    line = err.rstrip("\n")
    assert line.isprintable(), repr(line)  # newlines, escapes and controls arrive escaped
    for needle in needles:
        assert needle in line, line
    assert took < seconds
    return line


def story(**overrides) -> dict:
    """A 2-panel story on the tiny model, 64x64, 2 steps (seconds to render on a CPU)."""
    data = {
        "team": "demo",
        "name": "hostile",
        "base_model": "tiny",
        "sampling": {"steps": 2, "width": 64, "height": 64},
        "panel_count": 2,
        "panels": [{"prompt": "卡通，一只猫", "seed": 1}, {"prompt": "卡通，一只狗", "seed": 2}],
    }
    data.update(overrides)
    return data


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


# --- class 3: names become paths only after the bundle's naming rule --------------------------

BAD_NAMES = [
    "..",
    "../../../escaped",
    "/tmp/harness-absolute",
    "a/b",
    "a\\b",
    "a\x00b",
    "a\nb",
    "a\x1b[2Jb",
    "a\u202eb",
    "dеmo",  # Cyrillic е
    "ｄｅｍｏ",  # full-width
    "CON",
    "nul.txt",
    "LPT1",
    "x" * 65,
    "",
    " demo",
    "demo.",
    "-demo",
    "de..mo",
]


@pytest.mark.parametrize("field", ["team", "name"])
@pytest.mark.parametrize("value", BAD_NAMES, ids=[repr(v)[:24] for v in BAD_NAMES])
def test_bad_team_or_name_is_refused_before_any_path_is_built(capsys, tmp_path, monkeypatch, field, value):
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    path = write(work / "story.yaml", story(**{field: value}))
    before = snapshot(tmp_path)
    line = refused(capsys, "validate", path, needles=(str(path), f": {field}:"))
    assert "\x00" not in line and "\x1b" not in line
    # `run` with its default --out runs/<team>-<name> and bundle submissions/<team>/<name>
    refused(capsys, "run", path, "--quiet", needles=(f": {field}:",))
    refused(capsys, "render", path, "--out", work / "out", "--quiet", needles=(f": {field}:",))
    assert snapshot(tmp_path) == before
    assert not Path("/tmp/harness-absolute-hostile").exists()


def test_team_and_name_too_long_together_for_the_model_id(capsys, tmp_path):
    """Each part fits (<= 64) but <team>-可图Kolors训练-<name> is over 64 characters."""
    path = write(tmp_path / "story.yaml", story(team="t" * 30, name="n" * 30))
    refused(capsys, "validate", path, needles=(": name:", "over the limit of 64"))
    ok = write(tmp_path / "ok.yaml", story(team="t" * 26, name="n" * 26))  # 26 + 12 + 26 = 64
    code, _, err, _ = cli(capsys, "validate", ok)
    assert code == 0, err


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_bad_namespace_is_refused_before_the_run_writes(capsys, tmp_path, monkeypatch, how):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "story.yaml", story())
    argv = ["run", path, "--out", tmp_path / "out", "--quiet", "--no-score"]
    if how == "flag":
        argv += ["--namespace", "../../evil"]
    else:
        monkeypatch.setenv("MODELSCOPE_NAMESPACE", "evil/ns")
    before = snapshot(tmp_path)
    refused(capsys, *argv, needles=("namespace",))
    assert snapshot(tmp_path) == before


def test_valid_names_keep_working(capsys, tmp_path):
    path = write(tmp_path / "story.yaml", story(team="Data_whale.2", name="cat-and-youth_v2"))
    code, out, err, _ = cli(capsys, "validate", path)
    assert code == 0 and "Data_whale.2/cat-and-youth_v2" in out, err


# --- class 5: blank text ----------------------------------------------------------------------

BLANKS = [
    " ",
    "   \t \n ",
    "\u3000\u3000",  # full-width (ideographic) space
    "\u00a0",  # no-break space
    "\u2003\u2009\u202f",  # em, thin, narrow no-break spaces
    "\u200b",  # zero-width space
    "\u200c\u200d",  # zero-width non-joiner / joiner
    "\u2060",  # word joiner
    "\ufeff",  # byte order mark
    "\u3164",  # Hangul filler
    "\u034f\u00ad",  # combining grapheme joiner, soft hyphen
    " \u200b\u3000\ufeff ",
]


@pytest.mark.parametrize("blank", BLANKS, ids=[repr(b) for b in BLANKS])
def test_blank_prompt_is_refused(capsys, tmp_path, blank):
    data = story()
    data["panels"][1]["prompt"] = blank
    path = write(tmp_path / "story.yaml", data)
    before = snapshot(tmp_path)
    refused(capsys, "validate", path, needles=("panels[1].prompt", "blank"))
    refused(capsys, "render", path, "--out", tmp_path / "out", needles=("panels[1].prompt",))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("where", "needle"),
    [("title", "title"), ("negative_prompt", "negative_prompt"), ("panel", "panels[0].negative_prompt")],
)
def test_whitespace_only_title_or_negative_prompt_is_refused_but_empty_is_allowed(
    capsys, tmp_path, where, needle
):
    def with_text(text):
        data = story()
        if where == "panel":
            data["panels"][0]["negative_prompt"] = text
        else:
            data[where] = text
        return data

    path = write(tmp_path / "blank.yaml", with_text(" \u3000\u200b"))
    refused(capsys, "validate", path, needles=(needle, "only spaces or invisible characters"))
    path = write(tmp_path / "empty.yaml", with_text(""))
    code, _, err, _ = cli(capsys, "validate", path)
    assert code == 0, err


CONTROLS = [
    ("\x00", "U+0000"),
    ("\x1b[31mred", "U+001B"),
    ("\x7f", "U+007F"),
    ("\x85", "U+0085"),
    ("\r", "U+000D"),
    ("\u2028", "U+2028"),
    ("\ud800", "unicode"),  # pydantic refuses a lone surrogate itself
    ("\u202e", "U+202E"),
    ("\u2066", "U+2066"),
    ("\uffff", "U+FFFF"),
]


@pytest.mark.parametrize(("char", "code"), CONTROLS, ids=[c for _, c in CONTROLS])
def test_control_characters_in_prompts_are_refused_and_named(capsys, tmp_path, char, code):
    data = story()
    data["panels"][0]["prompt"] = f"卡通，一只猫{char}在睡觉"
    path = tmp_path / "story.yaml"
    # yaml.safe_dump writes these as double-quoted escapes, which the reader turns back into them
    path.write_text(yaml.safe_dump(data, allow_unicode=False, sort_keys=False), encoding="utf-8")
    line = refused(capsys, "validate", path, needles=("panels[0].prompt", code))
    assert char not in line


def test_multi_line_prompt_is_allowed_and_a_multi_line_title_is_not(capsys, tmp_path):
    data = story()
    data["panels"][0]["prompt"] = "卡通，一只猫\n在沙发上睡觉\t安静"
    code, _, err, _ = cli(capsys, "validate", write(tmp_path / "ok.yaml", data))
    assert code == 0, err
    path = write(tmp_path / "bad.yaml", story(title="第一行\n![x](https://example.com/p.png)"))
    refused(capsys, "validate", path, needles=("title", "must be one line"))


# --- class 6: every refusal is one line -------------------------------------------------------


def test_field_names_and_paths_with_newlines_are_one_escaped_line(capsys, tmp_path):
    """The field name comes from the file and the path from the command line: both escaped."""
    data = story()
    data["evil\nharness: error: forged second line"] = 1
    path = write(tmp_path / "story.yaml", data)
    line = refused(capsys, "validate", path, needles=("unknown field", "\\nharness: error: forged"))
    assert line.count("harness: error:") == 2 and line.startswith("harness: error: ")
    odd = tmp_path / "a\nb\x1b[0m.yaml"
    refused(capsys, "validate", odd, needles=("a\\nb\\x1b[0m.yaml", "no such file"))


def test_over_long_message_is_capped(capsys, tmp_path):
    deep = tmp_path / ("d" * 200) / ("e" * 200) / ("f" * 200) / ("g" * 200) / ("h" * 200) / "s.yaml"
    line = refused(capsys, "validate", deep)
    assert len(line) <= len("harness: error: ") + 1000 and line.endswith("…")


def test_bad_command_lines_are_one_line(capsys, tmp_path):
    """argparse prints its usage over several lines; the harness says it in one."""
    for argv in (["render", "story.yaml"], ["render"], ["nosuchcommand"], ["render", "s.yaml", "--out"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err and "--help" in err, err


def test_out_name_too_long_for_the_file_system_is_one_line(capsys, tmp_path):
    path = write(tmp_path / "story.yaml", story())
    before = snapshot(tmp_path)
    refused(
        capsys, "render", path, "--out", tmp_path / ("o" * 300), "--quiet", needles=("File name too long",)
    )
    assert snapshot(tmp_path) == before


def test_refusals_are_one_line_from_a_real_process(tmp_path):
    """Through the real entry point: no warning, traceback or usage adds a line."""
    data = story(team="../x")
    data["panels"][0]["prompt"] = "\u3000"
    path = write(tmp_path / "story.yaml", data)
    for argv in (["validate", str(path)], ["render", str(path), "--out", str(tmp_path / "out")]):
        t0 = time.monotonic()
        p = subprocess.run(
            [sys.executable, "-m", "harness.cli", *argv],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 2 and p.stdout == ""
        assert p.stderr.count("\n") == 1 and p.stderr.startswith("harness"), p.stderr
        assert time.monotonic() - t0 < 120


# --- class 7: a bad LoRA is refused before the output folder exists ---------------------------


@pytest.fixture(scope="module")
def good_lora(tmp_path_factory, tiny_model_dir) -> bytes:
    from tests.bundle_fixtures import make_lora

    return make_lora(tmp_path_factory.mktemp("good-lora"), tiny_model_dir).read_bytes()


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / "harness-hostile-story-pickle-ran"


def bad_lora(kind: str, good: bytes) -> bytes:
    import torch
    from safetensors.torch import load, save

    if kind == "random bytes":
        return os.urandom(4096)
    if kind == "pickle":
        return pickle.dumps({"w": _Payload()})
    tensors = load(good)
    first_a = next(k for k in sorted(tensors) if "lora_A" in k or "lora.down" in k)
    if kind == "NaN":
        tensors[first_a] = tensors[first_a].clone()
        tensors[first_a][0, 0] = float("nan")
    elif kind == "wrong shapes":
        r, n = tensors[first_a].shape
        tensors[first_a] = torch.zeros(r, n + 8)
    elif kind == "integer dtype":
        tensors[first_a] = tensors[first_a].to(torch.int32)
    elif kind == "text encoder keys":
        tensors = {f"text_encoder.{k}": v for k, v in tensors.items()}
    return save(tensors)


BAD_LORAS = ["random bytes", "pickle", "NaN", "wrong shapes", "integer dtype", "text encoder keys"]


@pytest.mark.parametrize("kind", BAD_LORAS)
def test_bad_lora_is_refused_before_anything_is_written(capsys, tmp_path, good_lora, kind):
    MARKER.unlink(missing_ok=True)
    lora = tmp_path / "loras" / "style.safetensors"
    lora.parent.mkdir()
    lora.write_bytes(bad_lora(kind, good_lora))
    path = write(tmp_path / "story.yaml", story(lora={"path": "loras/style.safetensors", "scale": 0.8}))
    before = snapshot(tmp_path)
    refused(capsys, "render", path, "--out", tmp_path / "runs" / "out", "--quiet", needles=(str(lora),))
    refused(capsys, "run", path, "--out", tmp_path / "out2", "--quiet", "--submissions", tmp_path / "subs")
    assert snapshot(tmp_path) == before  # no out folder, no runs/ parent, no lock, no bundle
    assert not MARKER.exists()


def test_corrected_lora_renders_into_the_same_folder_without_force(capsys, tmp_path, good_lora):
    lora = tmp_path / "style.safetensors"
    lora.write_bytes(bad_lora("wrong shapes", good_lora))
    path = write(tmp_path / "story.yaml", story(lora={"path": "style.safetensors", "scale": 0.8}))
    out = tmp_path / "out"
    refused(capsys, "render", path, "--out", out, "--quiet", needles=("LoRA maps",))
    assert not out.exists()
    lora.write_bytes(good_lora)
    code, _, err, _ = cli(capsys, "render", path, "--out", out, "--quiet")
    assert code == 0, err
    from harness.hashing import sha256_bytes
    from harness.safeio import read_json

    manifest = read_json(out / "manifest.json")
    assert manifest["status"] == "complete"
    assert manifest["lora"]["sha256"] == sha256_bytes(good_lora)
    assert not (tmp_path / ".out.lock").exists()


def test_a_record_of_a_render_stopped_before_its_first_panel_does_not_block(capsys, tmp_path):
    """What a render killed while loading leaves: its manifest, status rendering, no panel."""
    from harness.safeio import read_json, write_json

    path = write(tmp_path / "story.yaml", story())
    out = tmp_path / "out"
    assert cli(capsys, "render", path, "--out", out, "--quiet", "--panels", "1")[0] == 0
    record = read_json(out / "manifest.json")
    record.update(status="rendering", panels=[])
    record["identity"]["lora_sha256"] = "0" * 64  # the run before used another LoRA
    write_json(out / "manifest.json", record)
    (out / "images" / "01.png").unlink()
    code, _, err, _ = cli(capsys, "render", path, "--out", out, "--quiet")
    assert code == 0, err
    assert read_json(out / "manifest.json")["status"] == "complete"
    # a different run with panels is still protected
    other = write(tmp_path / "other.yaml", story(panels=[{"prompt": "卡通，一棵树", "seed": 9}] * 2))
    refused(capsys, "render", other, "--out", out, "--quiet", needles=("holds a different run",))


# --- concurrency and planted links in the run folder ------------------------------------------


def _harness(*argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_second_render_into_a_busy_folder_is_refused_and_kill_9_does_not_block(tmp_path):
    slow = write(tmp_path / "slow.yaml", story(sampling={"steps": 200, "width": 512, "height": 512}))
    quick = write(tmp_path / "quick.yaml", story())
    out = tmp_path / "out"
    lock = tmp_path / ".out.lock"
    first = _harness("render", str(slow), "--out", str(out), "--quiet")
    try:
        deadline = time.monotonic() + 180
        while not lock.exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first render never took the folder's lock"
            time.sleep(0.2)
        t0 = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "harness.cli", "render", str(slow), "--out", str(out), "--quiet"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert time.monotonic() - t0 < 180
        assert first.poll() is None, "the first render ended too soon for this test to mean anything"
        assert second.returncode == 2, second.stderr
        assert second.stderr.count("\n") == 1 and "another harness render or run" in second.stderr
        assert f"process {first.pid}" in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    assert lock.exists()  # the killed process could not clean up; its flock is gone anyway
    # the killed render left at most a record without panels: a different story may take the folder
    t0 = time.monotonic()
    rerun = subprocess.run(
        [sys.executable, "-m", "harness.cli", "render", str(quick), "--out", str(out), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert time.monotonic() - t0 < 300
    assert not lock.exists()
    from harness.safeio import read_json

    assert read_json(out / "manifest.json")["status"] == "complete"


def test_a_planted_lock_link_is_refused(capsys, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / ".out.lock").symlink_to(victim)
    path = write(tmp_path / "story.yaml", story())
    refused(capsys, "render", path, "--out", tmp_path / "out", "--quiet", needles=(".out.lock", "link"))
    assert victim.read_text() == "keep me" and not (tmp_path / "out").exists()


@pytest.fixture
def finished_run(capsys, tmp_path) -> tuple[Path, Path]:
    path = write(tmp_path / "story.yaml", story())
    out = tmp_path / "out"
    assert cli(capsys, "render", path, "--out", out, "--quiet")[0] == 0
    return path, out


def test_links_planted_in_a_run_folder_are_replaced_never_written_through(capsys, tmp_path, finished_run):
    path, out = finished_run
    outside = tmp_path / "outside"
    outside.mkdir()
    victims = {}
    for name in ("contact_sheet.png", "story.yaml", "images/01.png", ".manifest.json.tmp"):
        victim = outside / name.replace("/", "_")
        victim.write_text(f"victim {name}")
        target = out / name
        target.unlink(missing_ok=True)
        target.symlink_to(victim)
        victims[victim] = victim.read_text()
    # a hard link to a file outside, planted at a panel's name
    hard = outside / "hard.txt"
    hard.write_text("hard victim")
    (out / "images" / "02.png").unlink()
    os.link(hard, out / "images" / "02.png")
    victims[hard] = "hard victim"
    before = snapshot(outside)
    code, _, err, _ = cli(capsys, "render", path, "--out", out, "--quiet")
    assert code == 0, err
    assert snapshot(outside) == before
    assert all(v.read_text() == text for v, text in victims.items())
    for name in ("contact_sheet.png", "story.yaml", "images/01.png", "images/02.png"):
        assert not (out / name).is_symlink() and (out / name).stat().st_nlink == 1


@pytest.mark.parametrize("planted", ["manifest.json", "images"])
def test_a_linked_manifest_or_images_folder_is_refused(capsys, tmp_path, finished_run, planted):
    path, out = finished_run
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "thing"
    if planted == "images":
        target.mkdir()
        import shutil

        shutil.rmtree(out / "images")
    else:
        target.write_bytes((out / "manifest.json").read_bytes())
        (out / "manifest.json").unlink()
    (out / planted).symlink_to(target)
    before_out, before_outside = snapshot(out), snapshot(outside)
    refused(capsys, "render", path, "--out", out, "--quiet", needles=(planted, "link"))
    assert snapshot(out) == before_out and snapshot(outside) == before_outside


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"data": {"caption": "\u3000\u200b"}}, "data.caption"),
        ({"validation": {"prompts": ["卡通，一只猫", " \ufeff"]}}, "prompt 2 is blank"),
        ({"validation": {"negative_prompt": " \t"}}, "validation.negative_prompt"),
    ],
)
def test_blank_training_text_is_refused_before_anything_is_trained(capsys, tmp_path, override, needle):
    from tests.train_helpers import tiny_config

    config = tiny_config(tmp_path, **override)
    path = write(tmp_path / "story.yaml", story(lora={"train": config.name}))
    before = snapshot(tmp_path)
    refused(capsys, "run", path, "--out", tmp_path / "out", "--quiet", needles=(str(config), needle))
    assert snapshot(tmp_path) == before


def test_bad_name_is_refused_before_a_declared_lora_is_trained(capsys, tmp_path, monkeypatch, harness_cache):
    from tests.train_helpers import tiny_config

    monkeypatch.chdir(tmp_path)
    config = tiny_config(tmp_path)
    path = write(tmp_path / "story.yaml", story(team="../../x", lora={"train": config.name}))
    before, cache_before = snapshot(tmp_path), snapshot(harness_cache)
    refused(capsys, "run", path, "--quiet", needles=(": team:",))
    assert snapshot(tmp_path) == before
    assert snapshot(harness_cache) == cache_before  # no training started, nothing cached


def test_an_unknown_scoring_model_is_refused_before_the_render(capsys, tmp_path):
    path = write(tmp_path / "story.yaml", story())
    before = snapshot(tmp_path)
    argv = ["run", path, "--out", tmp_path / "out", "--quiet", "--no-bundle", "--aesthetic-model", "nope"]
    refused(capsys, *argv, needles=("unknown aesthetic scoring model 'nope'",))
    assert snapshot(tmp_path) == before


def test_a_bundle_the_run_may_not_replace_is_refused_before_the_render(capsys, tmp_path):
    """Another story with the same team and name: refused before its run folder exists."""
    subs = tmp_path / "submissions"
    first = write(tmp_path / "first.yaml", story())
    code, _, err, _ = cli(
        capsys, "run", first, "--out", tmp_path / "run1", "--quiet", "--no-score", "--submissions", subs
    )
    assert code == 0, err
    other = write(tmp_path / "other.yaml", story(title="另一个故事"))
    before = snapshot(tmp_path)
    argv = ["run", other, "--out", tmp_path / "run2", "--quiet", "--no-score", "--submissions", subs]
    refused(capsys, *argv, needles=("holds the bundle of a different story",))
    assert snapshot(tmp_path) == before
    # the same story again (a re-bundle) is still welcome
    argv = ["run", first, "--out", tmp_path / "run3", "--quiet", "--no-score", "--submissions", subs]
    assert cli(capsys, *argv)[0] == 0


# --- class 9: what a story names stays inside the story's folder -------------------------------


def _outside_and_work(tmp_path: Path, good_lora: bytes) -> tuple[Path, Path]:
    """`outside/` holds a LoRA, a training config and images a story may not reach; `work/` is
    the folder the story was unpacked into."""
    from harness.data.demo import write_demo_images
    from tests.train_helpers import tiny_config

    outside, work = tmp_path / "outside", tmp_path / "work"
    (outside / "loras").mkdir(parents=True)
    (outside / "loras" / "style.safetensors").write_bytes(good_lora)
    write_demo_images(outside / "data", count=2, with_bad=False)
    tiny_config(outside, images=outside / "data")
    work.mkdir()
    return outside, work


def _tripwires(outside: Path) -> list[Path]:
    from tests.hostile_helpers import tripwire

    files = [p for p in outside.rglob("*") if p.is_file() and not p.is_symlink()]
    for p in files:
        tripwire(p)
    return files


ESCAPES = [
    ("absolute", "{outside}/{rel}"),
    ("home", "~/{rel}"),
    ("dot-dot", "../outside/{rel}"),
    ("dot-dot after a folder", "sub/../../outside/{rel}"),
    ("dot-dot deep", "a/b/../../../outside/{rel}"),
    ("backslash", "..\\outside\\{rel}"),
    ("linked folder", "linked/{rel}"),
    ("linked file", "{link_name}"),
    ("linked folder then dot-dot", "linked/../outside/{rel}"),
    ("NUL", "sty\x00le"),
    ("newline", "style\n.safetensors"),
    ("escape sequence", "\x1b[2Jstyle"),
]


@pytest.mark.parametrize("field", ["path", "train"])
@pytest.mark.parametrize("how", [c[1] for c in ESCAPES], ids=[c[0] for c in ESCAPES])
def test_a_story_names_no_file_outside_its_folder(capsys, tmp_path, monkeypatch, good_lora, field, how):
    """lora.path and lora.train are refused in one line naming the story and the field, before
    anything is read from outside or written anywhere (the LoRA would be rendered and bundled)."""
    from tests.hostile_helpers import snapshot as tree
    from tests.hostile_helpers import tripped

    outside, work = _outside_and_work(tmp_path, good_lora)
    rel = "loras/style.safetensors" if field == "path" else "train.yaml"
    os.symlink(outside, work / "linked")
    link_name = "style.safetensors" if field == "path" else "train.yaml"
    os.symlink(outside / rel, work / link_name)
    (work / "sub").mkdir()
    (work / "a" / "b").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(outside))
    monkeypatch.chdir(work)
    value = how.format(outside=outside, rel=rel, link_name=link_name)
    path = write(work / "story.yaml", story(lora={field: value}))
    watched = _tripwires(outside)
    before = tree(tmp_path)
    needles = (f"{path}:", f": lora.{field}:")
    refused(capsys, "validate", path, needles=needles)
    refused(capsys, "render", path, "--out", work / "out", "--quiet", needles=needles)
    subs = work / "submissions"
    refused(capsys, "run", path, "--out", work / "run", "--quiet", "--submissions", subs, needles=needles)
    assert tree(tmp_path) == before
    assert not [p for p in watched if tripped(p)], "a file outside the story's folder was read"


def test_dot_dot_that_stays_inside_the_story_folder_is_allowed(capsys, tmp_path, good_lora):
    outside, work = _outside_and_work(tmp_path, good_lora)
    (work / "loras").mkdir()
    (work / "loras" / "style.safetensors").write_bytes(good_lora)
    (work / "notes").mkdir()
    path = write(work / "story.yaml", story(lora={"path": "notes/../loras/./style.safetensors"}))
    code, _, err, _ = cli(capsys, "validate", path)
    assert code == 0, err
    # a name that merely starts with two dots is a file name, not a way out
    (work / "..style.safetensors").write_bytes(good_lora)
    path = write(work / "story.yaml", story(lora={"path": "..style.safetensors"}))
    assert cli(capsys, "validate", path)[0] == 0
    # a training config beside the story may take the story's own folder as its dataset
    from harness.data.demo import write_demo_images

    write_demo_images(work, count=2, with_bad=False)
    (work / "cfg").mkdir()
    cfg = {"base_model": "tiny", "data": {"source": "folder", "path": ".."}, "resolution": 64}
    (work / "cfg" / "train.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    path = write(work / "story.yaml", story(lora={"train": "cfg/./train.yaml"}))
    code, _, err, _ = cli(capsys, "validate", path)
    assert code == 0, err


def _chained(work: Path, outside: Path, where: str, value: str | None) -> Path:
    """work/cfg/train.yaml (named by the story) with one path field set to `value`."""
    from harness.data.demo import write_demo_images

    cfgdir = work / "cfg"
    cfgdir.mkdir()
    write_demo_images(work / "data", count=2, with_bad=False)
    cfg: dict = {
        "base_model": "tiny",
        "data": {"source": "folder", "path": "../data", "prepared": "../prepared"},
        "resolution": 64,
        "max_steps": 1,
    }
    if where == "base_model":
        cfg["base_model"] = f"local:{value}"
    elif value is None:
        del cfg["data"][where]
    else:
        cfg["data"][where] = value
    path = cfgdir / "train.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


CHAIN = [
    ("data.path absolute", "path", "{outside}/data"),
    ("data.path home", "path", "~/data"),
    ("data.path dot-dot", "path", "../../outside/data"),
    ("data.path through a link", "path", "../linked/data"),
    ("data.prepared absolute", "prepared", "{outside}/prepared"),
    ("data.prepared dot-dot", "prepared", "../../outside/prepared"),
    ("data.prepared through a link", "prepared", "../linked/prepared"),
    ("default prepared through a link", "prepared", None),
    ("local base model absolute", "base_model", "{outside}/model"),
    ("local base model dot-dot", "base_model", "../../outside/model"),
    # a model folder shipped beside the story is refused too: it is hashed whole, and a link in it
    # (weights.bin -> /dev/zero) made `run` spin forever (red team, round 2)
    ("local base model inside the story's folder", "base_model", "model"),
]


@pytest.mark.parametrize(("where", "how"), [c[1:] for c in CHAIN], ids=[c[0] for c in CHAIN])
def test_a_training_config_named_by_a_story_stays_inside_the_story_folder(
    capsys, tmp_path, monkeypatch, harness_cache, good_lora, where, how
):
    """story -> training config -> dataset/prepared/model come from the same stranger: every path
    of the config stays inside the story's folder; refused naming the config and its field."""
    from tests.hostile_helpers import snapshot as tree
    from tests.hostile_helpers import tripped

    outside, work = _outside_and_work(tmp_path, good_lora)
    os.symlink(outside, work / "linked")
    value = None if how is None else how.format(outside=outside)
    config = _chained(work, outside, where, value)
    if how is None:  # the default prepared folder, cfg/prepared/train, reached through a link
        os.symlink(outside, work / "cfg" / "prepared")
    monkeypatch.setenv("HOME", str(outside))
    monkeypatch.chdir(work)
    path = write(work / "story.yaml", story(lora={"train": "cfg/train.yaml"}))
    watched = _tripwires(outside)
    before, cache_before = tree(tmp_path), tree(harness_cache)
    field = "base_model" if where == "base_model" else f"data.{where}"
    needles = (f"{config}:", f": {field}:")
    refused(capsys, "validate", path, needles=needles)
    refused(capsys, "run", path, "--out", work / "run", "--quiet", "--no-score", needles=needles)
    assert tree(tmp_path) == before
    assert tree(harness_cache) == cache_before  # nothing prepared or trained
    assert not [p for p in watched if tripped(p)], "a file outside the story's folder was read"


def test_a_config_the_user_names_may_point_anywhere(capsys, tmp_path, good_lora):
    """`harness data prepare CONFIG`: the user's own config keeps paths outside its folder."""
    outside, work = _outside_and_work(tmp_path, good_lora)
    config = _chained(work, outside, "path", str(outside / "data"))
    code, _, err, _ = cli(capsys, "data", "prepare", config)
    assert code == 0, err
    assert (work / "prepared" / "metadata.csv").is_file()


# --- class 11: render --force replaces only what the harness made ------------------------------


def test_force_never_clears_a_user_folder(capsys, tmp_path):
    """A folder of the user's that happens to hold images/ and a manifest.json of its own."""
    from tests.hostile_helpers import snapshot as tree

    path = write(tmp_path / "story.yaml", story())
    mine = tmp_path / "mine"
    (mine / "images").mkdir(parents=True)
    (mine / "images" / "01.png").write_bytes(b"\x89PNG my holiday")
    (mine / "manifest.json").write_text('{"shipment": 42, "identity": {}}\n', encoding="utf-8")
    (mine / "contact_sheet.png").write_bytes(b"mine too")
    before = tree(tmp_path)
    for extra in (["--force"], []):
        refused(capsys, "render", path, "--out", mine, "--quiet", *extra, needles=(str(mine),))
        argv = ["run", path, "--out", mine, "--quiet", "--no-score", "--submissions", tmp_path / "subs"]
        refused(capsys, *argv, *extra, needles=(str(mine),))
    # a lookalike of a stopped render's record (status rendering, no panel), without the
    # harness's kind, is not cleared either
    (mine / "manifest.json").write_text(
        '{"identity": {"story_sha256": "x"}, "status": "rendering", "panels": []}\n', encoding="utf-8"
    )
    before = tree(tmp_path)
    for extra in (["--force"], []):
        line = refused(capsys, "render", path, "--out", mine, "--quiet", *extra, needles=(str(mine),))
        assert "harness" in line
    assert tree(tmp_path) == before


def test_force_still_replaces_a_run_the_harness_made(capsys, tmp_path, finished_run):
    _, out = finished_run
    (out / "my-notes.txt").write_text("kept", encoding="utf-8")
    other = write(tmp_path / "other.yaml", story(panels=[{"prompt": "卡通，一棵树", "seed": 9}] * 2))
    refused(capsys, "render", other, "--out", out, "--quiet", needles=("holds a different run",))
    code, _, err, _ = cli(capsys, "render", other, "--out", out, "--quiet", "--force")
    assert code == 0, err
    assert (out / "my-notes.txt").read_text(encoding="utf-8") == "kept"  # not the harness's: kept
