"""The board's fast story-title reader gives the bounded YAML reader's answer, bombs included."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config.yamlio import read_yaml
from harness.errors import HarnessError
from harness.leaderboard import synthetic
from harness.leaderboard.title import _PLAIN, _fast_title, story_title

LAUGHS = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
)
CORPUS = [
    "title: The Moon",
    "title: 长安夜游\nteam: t\npanels:\n- prompt: 古风\n  seed: 1",
    "title: true",
    "title: TRUE",
    "title: Truth",
    "title: null",
    "title: Nullify",
    "title: ~",
    "title:",
    "title: ''",
    "title: 1e3",
    "title: -3.5",
    "title: .inf",
    "title: .5 of us",
    "title: 12",
    "title: 12 monkeys",
    "title: 010",
    "title: 0x10",
    "title: 1:30",
    "title: 1_000",
    "title: '010'",
    'title: "tab\\there"',
    "title: |\n  a block\n  title\n",
    "title: >\n  folded\n  title\n",
    "title: [a, b]",
    "title: {a: 1}",
    "{title: flow}",
    "? title\n: explicit key",
    "seed: 010\ntitle: an ambiguous number elsewhere",
    "title: a\ntitle: b",
    'title: a\n"title": b',
    "x:\n  y: 1\n  y: 2\ntitle: nested duplicate",
    "[a]: b\ntitle: a key that is not text",
    "1: one\ntitle: a number key",
    "title: &t anchored\nother: *t",
    "title: !!str 12",
    "title: !custom x",
    "- a\n- b",
    "",
    "# only a comment\n",
    "title: a\n---\ntitle: b",
    "title: [unclosed",
    "title: \x07bell",
    "title: " + "9" * 4100,
    "title: " + "9" * 5000,
    "panels:\n  title: not top level\n",
    "title: " + "[" * 40 + "]" * 40,
    LAUGHS + "title: after the laughs",
    "\ufefftitle: with a BOM",
]


def outcome(fn, path: Path):
    try:
        return "ok", fn(path)
    except Exception as e:  # the board reads any failure as "no title"; both must fail alike
        return "error", type(e).__name__


def canonical(path: Path):
    data = read_yaml(path).data
    title = data.get("title") if isinstance(data, dict) else None
    return title if isinstance(title, str) else None


@pytest.mark.parametrize("text", CORPUS, ids=range(len(CORPUS)))
def test_same_title_as_the_bounded_reader(tmp_path, text):
    path = tmp_path / "story.yaml"
    path.write_text(text, encoding="utf-8")
    assert outcome(story_title, path) == outcome(canonical, path)


def test_a_written_story_takes_the_fast_path(tmp_path):
    bundle = synthetic.write(tmp_path, synthetic.Spec("t", "s", 7.0, title="长安 night: 1"))
    text = (bundle / "story.yaml").read_text(encoding="utf-8")
    assert _fast_title(text) == "长安 night: 1" == story_title(bundle / "story.yaml")
    assert _fast_title(LAUGHS) is _PLAIN  # aliases go to the bounded reader, which refuses them
    with pytest.raises(HarnessError, match="aliases"):
        story_title_from(tmp_path, LAUGHS)


def story_title_from(tmp_path: Path, text: str):
    path = tmp_path / "other.yaml"
    path.write_text(text, encoding="utf-8")
    return story_title(path)
