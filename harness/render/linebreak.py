"""Caption line breaking for the contact sheet: by measured width, with the kinsoku rule.

Owns: where a caption breaks. Chinese has no spaces to break at, so a line breaks before the
first character that does not fit; but a line never starts with closing punctuation (，。、）」
！？… and ASCII ,.)!?:;) and never ends with an opening bracket (（「『【《). When a break would
do that, the characters before it move down with it; only when the whole line is such
punctuation is it left hanging past the width, since a break there cannot follow the rule.
Pure: the width of a string comes from the `measure` callable the caller passes (PIL's
`draw.textlength` on the sheet), so nothing here draws or loads fonts.
"""

from __future__ import annotations

from typing import Callable

# May not start a line (closing brackets and quotes, stops, commas, colons, marks, ellipses,
# iteration marks and small kana, after JIS X 4051 and the Chinese GB/T 15834 practice).
CLOSING = frozenset(
    "，。、．,.）)」』】》〉〕〗〙］]｝}！!？?：:；;…‥’”〞％%·・〜～ー々〻ゝゞヽヾ"
    "ぁぃぅぇぉっゃゅょゎゕゖァィゥェォッャュョヮヵヶㇰㇱㇲㇳㇴㇵㇶㇷㇸㇹㇺㇻㇼㇽㇾㇿ"
)
# May not end a line (opening brackets and quotes).
OPENING = frozenset("（(「『【《〈〔〖〘［[｛{‘“〝")
ELLIPSIS = "…"


def _break_at(s: str) -> int | None:
    """The latest index k (1 <= k < len(s)) where `s` may break into s[:k] | s[k:], else None."""
    for k in range(len(s) - 1, 0, -1):
        if s[k] not in CLOSING and s[k - 1] not in OPENING:
            return k
    return None


def wrap(text: str, measure: Callable[[str], float], width: float, max_lines: int | None = None) -> list[str]:
    """Break `text` (newlines read as spaces) into lines no wider than `width` where the rule allows.

    Without `max_lines` the lines joined are exactly the text. With it, text beyond the last
    line is cut and the last line ends in "…" (shortened until that fits).
    """
    lines: list[str] = []
    line = ""
    chars = text.replace("\n", " ")
    for ch in chars:
        s = line + ch
        if not line or measure(s) <= width:
            line = s
            continue
        k = _break_at(s)
        if k is None:  # the line is all punctuation that may not start or end one: let it hang
            line = s
            continue
        lines.append(s[:k])
        line = s[k:]
        if max_lines is not None and len(lines) == max_lines:
            return _truncate(lines, measure, width)
    if line:
        lines.append(line)
    return lines


def _truncate(lines: list[str], measure: Callable[[str], float], width: float) -> list[str]:
    last = lines[-1]
    while last and measure(last + ELLIPSIS) > width:
        last = last[:-1]
    # the ellipsis is closing punctuation: it stays behind at least one character of the line
    lines[-1] = (last or lines[-1][:1]) + ELLIPSIS
    return lines
