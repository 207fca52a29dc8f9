"""The one exception type for bad user input.

A `HarnessError` is printed by the CLI as a single line and exits with code 2. Anything else
that escapes is a bug and keeps its traceback.
"""


class HarnessError(Exception):
    """Bad input (a file, a field, a flag): one clear line for the user, exit code 2."""

    exit_code = 2


LINE_LIMIT = 300


def first_line(e: BaseException | str, limit: int = LINE_LIMIT) -> str:
    """A library's error as one short line: its first non-empty line (the exception's type name
    when it has no message), cut at `limit` characters. Libraries put whole module lists or
    tracebacks in a message; the user gets the start of it."""
    text = str(e).strip()
    if not text:
        return type(e).__name__ if isinstance(e, BaseException) else ""
    line = next(ln.strip() for ln in text.splitlines() if ln.strip())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


MESSAGE_LIMIT = 1000


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """`text` as one printable line: every character that is not printable (newlines, tabs,
    control, format and separator characters other than the ASCII space) is written as its
    Python escape (\\n, \\x1b, \\u202e), and the result is cut at `limit` characters. Everything
    printed that came from an untrusted file goes through this, so no terminal escape arrives."""
    out = "".join(ch if ch == " " or ch.isprintable() else repr(ch)[1:-1] for ch in str(text))
    return out if len(out) <= limit else out[: limit - 1] + "…"
