"""Contact-sheet captions: no line starts with closing punctuation, and wrapping loses nothing.

Measured with the sheet's own caption font through PIL, as `contact_sheet` measures.
"""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.render.contact import CAPTION_LINES, TILE
from harness.render.linebreak import CLOSING, OPENING, wrap

# What a reader must never see at the start of a line, written out here rather than imported.
MUST_NOT_START = "，。、．）」』】》！？：；…,.)!?:;"
MUST_NOT_END = "（「『【《(["


@pytest.fixture(scope="module")
def measure():
    from PIL import Image, ImageDraw

    from harness.fonts import load_font

    draw = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    return functools.partial(draw.textlength, font=load_font(14))


def _breakable(line: str) -> bool:
    """Whether the rule allows a break anywhere inside `line`."""
    return any(line[k] not in CLOSING and line[k - 1] not in OPENING for k in range(1, len(line)))


WORDS = "猫少年在窗边看书红色的二次元风格 abcXYZ\n"
captions = st.text(alphabet=st.sampled_from(list(WORDS + MUST_NOT_START + MUST_NOT_END)), max_size=160)


def test_the_rule_covers_the_usual_closing_and_opening_marks():
    assert set(MUST_NOT_START) <= CLOSING
    assert set(MUST_NOT_END) <= OPENING


@settings(max_examples=300, deadline=None)
@given(text=captions, width=st.integers(min_value=30, max_value=300))
def test_no_wrapped_line_starts_with_closing_punctuation_and_nothing_is_lost(measure, text, width):
    lines = wrap(text, measure, width)
    assert "".join(lines) == text.replace("\n", " ")
    assert all(lines)
    for line in lines[1:]:
        assert line[0] not in CLOSING, lines
    for line in lines[:-1]:
        assert line[-1] not in OPENING, lines
    for line in lines:
        # too wide only where the rule leaves no place to break (a run of closing punctuation)
        assert measure(line) <= width or not _breakable(line), (line, width)


@settings(max_examples=200, deadline=None)
@given(text=captions)
def test_a_long_caption_is_cut_to_the_sheet_lines_with_an_ellipsis(measure, text):
    lines = wrap(text, measure, TILE, CAPTION_LINES)
    flat = text.replace("\n", " ")
    assert len(lines) <= CAPTION_LINES
    for line in lines[1:]:
        assert line[0] not in CLOSING, lines
    joined = "".join(lines)
    if joined != flat:
        assert lines[-1].endswith("…") and flat.startswith(joined[:-1])


def test_a_full_stop_at_the_break_takes_the_previous_character_down(measure):
    fit = 1
    while measure("猫" * (fit + 1)) <= TILE:
        fit += 1
    text = "猫" * fit + "。" + "书" * 5  # a per-character break would start line 2 with 。
    lines = wrap(text, measure, TILE)
    assert lines == ["猫" * (fit - 1), "猫。" + "书" * 5]
    text = "猫" * (fit - 2) + "「书」。" + "书" * 5  # 」。 must not start a line, 「 must not end one
    lines = wrap(text, measure, TILE)
    assert "".join(lines) == text and lines[1][0] not in CLOSING and lines[0][-1] not in OPENING
