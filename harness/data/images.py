"""Decide whether one file is a usable image, without trusting its name or extension.

Owns: this stage's pixel limit, detecting truncation (a full decode), and the short reason
strings that end up in the prepare report. The file is opened without following a link and
without blocking (a FIFO or device is refused by fstat before anything is read); decoding goes
through `harness.imaging`. Never raises for a bad file.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

# Larger images are refused as decompression bombs before any pixel is decoded: 64 Mpx (any
# camera up to 64 megapixels) decodes to at most 256 MiB (RGBA). Training uses <= 2048 px.
MAX_PIXELS = 8192 * 8192
_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
)


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
        fd = os.open(path, _FLAGS)
    except OSError as e:
        return ImageCheck(False, reason=f"not opened ({e.strerror}; links are not followed)")
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return ImageCheck(False, reason="not a regular file")
        try:
            with open_untrusted(f, MAX_PIXELS) as im:  # type: ignore[arg-type]
                im.verify()  # structure and checksums
            f.seek(0)
            with open_untrusted(f, MAX_PIXELS) as im:  # type: ignore[arg-type]
                im.load()  # a truncated file fails only here
                return ImageCheck(True, im.size[0], im.size[1], im.format or "")
        except HarnessError as e:
            return ImageCheck(False, reason=str(e))
