"""Decide whether one file is a usable image, without trusting its name or extension.

Owns: this stage's pixel limit, detecting truncation (a full decode), and the short reason
strings that end up in the prepare report. Opening goes through `harness.imaging`. Never
raises for a bad file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

MAX_PIXELS = 16384 * 16384  # larger files are refused as decompression bombs


@dataclass(frozen=True)
class ImageCheck:
    ok: bool
    width: int = 0
    height: int = 0
    format: str = ""
    reason: str = ""  # why it was refused; empty when ok


def check_image(path: Path) -> ImageCheck:
    """Open and fully decode `path`; any failure becomes a reason instead of an exception."""
    from harness.imaging import open_untrusted

    try:
        with open_untrusted(path, MAX_PIXELS) as im:
            im.verify()  # structure and checksums
        with open_untrusted(path, MAX_PIXELS) as im:
            im.load()  # a truncated file fails only here
            return ImageCheck(True, im.size[0], im.size[1], im.format or "")
    except HarnessError as e:
        return ImageCheck(False, reason=str(e))
