"""Free text in config files (prompts, negative prompts, titles, captions, file paths): what it
may hold and when it counts as blank.

Owns: the character rules every text field of the story and training configs applies, as
functions that raise `ValueError` (pydantic turns it into the field's one-line error). A text
field never holds control characters other than newline and tab, lone surrogates, Unicode line
or paragraph separators, bidirectional overrides, or noncharacters: they either break the one
line an error promises, cannot be written as UTF-8, or make a prompt display differently from
what runs. A required text (a prompt) is refused when nothing in it is visible: only spaces of
any kind (ASCII, no-break, full-width U+3000, ...), zero-width or format characters
(U+200B-U+200D, U+2060, U+FEFF, ...), combining marks or fillers. An optional text may be
empty, but not whitespace only. Must not know about any particular config kind.
"""

from __future__ import annotations

import unicodedata

# Characters drawn as nothing that Unicode does not class as space, format or mark.
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u2800\u180e\u17b4\u17b5\u034f")
# Embedding, override and isolate controls: text shown in another order than it is read.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_BLANK_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Mn", "Me"})


def is_blank(text: str) -> bool:
    """True when no character of `text` is visible (empty text is blank)."""
    return all(
        ch.isspace() or ch in _INVISIBLE or unicodedata.category(ch) in _BLANK_CATEGORIES for ch in text
    )


def _codepoint(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" {name}" if name else "")


def bad_character(text: str, *, multiline: bool) -> str | None:
    """Why `text` may not be used (the first forbidden character and where), or None."""
    for i, ch in enumerate(text, 1):
        if ch in "\n\t":
            if multiline:
                continue
            return f"must be one line (character {i} is {_codepoint(ch)})"
        cat = unicodedata.category(ch)
        code = ord(ch)
        if cat in ("Cc", "Cs", "Zl", "Zp"):
            return f"holds the control character {_codepoint(ch)} at character {i}"
        if ch in _BIDI:
            return f"holds the bidirectional override {_codepoint(ch)} at character {i}"
        if 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE:
            return f"holds the noncharacter {_codepoint(ch)} at character {i}"
    return None


def required_text(value: str, *, multiline: bool = True) -> str:
    """A text that must say something: refused when empty or blank, or with a bad character."""
    why = bad_character(value, multiline=multiline)
    if why:
        raise ValueError(why)
    if not value:
        raise ValueError("must not be empty")
    if is_blank(value):
        raise ValueError("is blank (only spaces or invisible characters)")
    return value


def optional_text(value: str, *, multiline: bool = True, empty: str = 'write "" for none') -> str:
    """A text that may be empty: refused when blank but not empty, or with a bad character."""
    why = bad_character(value, multiline=multiline)
    if why:
        raise ValueError(why)
    if value and is_blank(value):
        raise ValueError(f"holds only spaces or invisible characters; {empty}")
    return value


def path_text(value: str) -> str:
    """A file path written in a config: one line, no control characters (NUL included)."""
    why = bad_character(value, multiline=False)
    if why:
        raise ValueError(why)
    if is_blank(value):
        raise ValueError("is blank (only spaces or invisible characters)")
    return value
