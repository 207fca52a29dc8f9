"""The one bounded YAML reader: YAML 1.2 core scalars (what a person writes is what runs), and
bombs (aliases, depth, size, recursion) refused in one line within a time bound, before anything
walks the document. Plus a property-based fuzz over the story and training loaders."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.config.yamlio import MAX_DEPTH, loads_yaml, read_yaml
from harness.errors import HarnessError
from tests.conftest import DEMO_STORY


def _data(text: str):
    return loads_yaml(text, Path("s.yaml")).data


def _refusal(text: str) -> str:
    with pytest.raises(HarnessError) as e:
        loads_yaml(text, Path("s.yaml"))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("s.yaml"), msg
    return msg


@pytest.mark.parametrize(
    "text, value",
    [
        ("a: 1e-4", 0.0001),  # YAML 1.1 reads this as the string '1e-4'
        ("a: 1.0e-4", 0.0001),
        ("a: 5e3", 5000.0),
        ("a: .5", 0.5),
        ("a: 7", 7),
        ("a: -0", 0),
        ("a: 18446744073709551615", 2**64 - 1),
        ("a: yes", "yes"),  # YAML 1.1: True
        ("a: off", "off"),  # YAML 1.1: False
        ("a: 2024-01-01", "2024-01-01"),  # YAML 1.1: a date
        ("a: true", True),
        ("a: ~", None),
        ("a: '010'", "010"),
        ("a: 1:30 pm", "1:30 pm"),
    ],
)
def test_yaml_12_core_scalars(text, value):
    assert _data(text) == {"a": value}


@pytest.mark.parametrize(
    "text", ["a: 010", "a: 0x10", "a: 0o17", "a: 1:30", "a: 190:20:30", "a: 1_000", "a: 00.5"]
)
def test_numbers_yaml_11_reads_differently_are_refused(text):
    """YAML 1.1 reads 010 as 8, 0x10 as 16, 1:30 as 90, 1_000 as 1000: refused, never guessed."""
    assert "is ambiguous" in _refusal(text) and "s.yaml:1:" in _refusal(text)


def test_story_with_ambiguous_seed_names_line_and_value(write_story):
    from harness.config.story import load_story

    text = yaml.safe_dump(DEMO_STORY, allow_unicode=True, sort_keys=False).replace("seed: 3", "seed: 010", 1)
    path = write_story(text)
    with pytest.raises(HarnessError) as e:
        load_story(path, check_tokens=False)
    assert "'010' is ambiguous" in str(e.value) and str(path) in str(e.value)


def _billion_laughs(levels: int = 12, width: int = 9) -> str:
    lines = ['l0: &l0 "lol"']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "text, why",
    [
        (_billion_laughs(), "aliases"),  # 9^11 values after expansion, 800 bytes on disk
        ("a: " + "[" * 100_000 + "]" * 100_000, "nested more than"),
        ("a: " + "{b: " * 5000 + "1" + "}" * 5000, "nested more than"),
        ("".join("  " * i + f"k{i}:\n" for i in range(MAX_DEPTH + 5)), "nested more than"),
        ("a: &a [*a]", "refers to itself"),
        ("a: &x " + "y" * 400_000 + "\n" + "b: [" + ", ".join(["*x"] * 20) + "]", "characters"),
        ("a: b: c", "malformed YAML"),
        ("a: !!python/object:os.system x", "could not determine a constructor"),
        ("a: 1\na: 2", "duplicate key"),
        ("? [1, 2]\n: x", "key must be plain text"),
    ],
)
def test_bombs_and_malformed_yaml_are_refused_fast_in_one_line(text, why):
    start = time.monotonic()
    assert why in _refusal(text)
    assert time.monotonic() - start < 5


def test_a_story_bomb_is_refused_by_validate_fast(tmp_path):
    from harness.cli import main

    path = tmp_path / "story.yaml"
    path.write_text(_billion_laughs() + "team: t\nname: n\npanels: *l11\n", encoding="utf-8")
    start = time.monotonic()
    assert main(["validate", str(path)]) == 2
    assert time.monotonic() - start < 10


def test_oversized_fifo_and_link_files_are_refused(tmp_path):
    import os

    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * (2 << 20))
    os.mkfifo(tmp_path / "fifo.yaml")
    (tmp_path / "link.yaml").symlink_to(big)
    start = time.monotonic()
    for name, why in (("big.yaml", "over the cap"), ("fifo.yaml", "FIFO"), ("link.yaml", "symlink")):
        with pytest.raises(HarnessError) as e:
            read_yaml(tmp_path / name)
        assert why in str(e.value) and "\n" not in str(e.value)
    assert time.monotonic() - start < 5


# --- property-based fuzz: any input loads into the strict model or is one HarnessError line ---

_scalar = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=30)
    | st.sampled_from(["010", "0x1F", "1:30", "1e-4", "yes", "~", "", " ", "\u3000", "\u200b", "..", "/etc"])
)
_value = st.recursive(
    _scalar,
    lambda kids: st.lists(kids, max_size=9) | st.dictionaries(st.text(max_size=12), kids, max_size=6),
    max_leaves=30,
)
_STORY_PATHS = [
    ("team",),
    ("name",),
    ("title",),
    ("base_model",),
    ("negative_prompt",),
    ("panel_count",),
    ("panels",),
    ("sampling",),
    ("sampling", "steps"),
    ("sampling", "width"),
    ("sampling", "scheduler"),
    ("panels", 0),
    ("panels", 0, "prompt"),
    ("panels", 3, "seed"),
    ("panels", 7, "negative_prompt"),
    ("lora",),
    ("extra_field",),
]


def _mutate(doc: dict, path: tuple, value) -> dict:
    doc = copy.deepcopy(doc)
    here = doc
    for part in path[:-1]:
        here = here[part]
    here[path[-1]] = value
    return doc


def _loads_or_refuses(loader, path: Path) -> None:
    try:
        loader(path)
    except HarnessError as e:
        msg = str(e)
        assert msg and "\n" not in msg and len(msg) < 1000, msg


@pytest.fixture(scope="module", autouse=True)
def _tokenizer_loaded():
    """The Kolors tokenizer loads once (seconds) before any timed example."""
    from harness.models.tokenizer import kolors_tokenizer

    kolors_tokenizer()


_FUZZ = settings(
    max_examples=120,
    deadline=3000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_FUZZ
@given(st.sampled_from(_STORY_PATHS), _value)
def test_fuzz_story_fields(tmp_path, where, value):
    from harness.config.story import load_story

    path = tmp_path / "story.yaml"
    text = yaml.safe_dump(_mutate(DEMO_STORY, where, value), allow_unicode=True, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    _loads_or_refuses(lambda p: load_story(p, check_tokens=True), path)


@_FUZZ
@given(st.text(max_size=600))
def test_fuzz_story_text(tmp_path, text):
    from harness.config.story import load_story

    path = tmp_path / "story.yaml"
    path.write_text(text, encoding="utf-8")
    _loads_or_refuses(lambda p: load_story(p, check_tokens=False), path)


@_FUZZ
@given(st.data())
def test_fuzz_story_mutated_bytes(tmp_path, data):
    """Random byte edits of the demo story file (truncation, flips, insertions)."""
    from harness.config.story import load_story

    raw = bytearray((Path(__file__).resolve().parents[1] / "stories" / "demo.yaml").read_bytes())
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "insert", "cut"]))
        if op == "flip":
            raw[i] = data.draw(st.integers(0, 255))
        elif op == "insert":
            raw[i:i] = data.draw(st.sampled_from([b"&a ", b"*a", b"[", b"{", b"\t", b"\x00", b"!!", b"\n- "]))
        else:
            del raw[i : i + data.draw(st.integers(1, 40))]
    path = tmp_path / "story.yaml"
    path.write_bytes(bytes(raw))
    _loads_or_refuses(lambda p: load_story(p, check_tokens=False), path)


@_FUZZ
@given(st.sampled_from(["data", "max_steps", "resolution", "optimizer", "lora", "seed", "x"]), _value)
def test_fuzz_training_config_fields(tmp_path, field, value):
    from harness.config.training import load_training_config

    base = yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "configs" / "lora-demo.yaml").read_text(encoding="utf-8")
    )
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({**base, field: value}, allow_unicode=True), encoding="utf-8")
    _loads_or_refuses(load_training_config, path)


@pytest.mark.parametrize(
    "text",
    [
        "a: [" + "1, " * 340_000 + "1]",
        "\n".join(f"k{i}: v" for i in range(100_000)),
        "- x\n" * 260_000,
    ],
)
def test_a_megabyte_of_flat_yaml_is_refused_before_it_is_composed(text):
    """Flat documents near the 1 MiB cap used to cost 11-22 s of CPU per read (two full parses
    before the node cap); the event scan now stops at the cap."""
    start = time.monotonic()
    assert "more than 20000 values" in _refusal(text[: 1 << 20])
    assert time.monotonic() - start < 3
