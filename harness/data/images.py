"""Decide whether one file is a usable image, without trusting its name or extension.

Owns: opening with PIL under a pixel limit, detecting truncation (a full decode), and the
short reason strings that end up in the prepare report. Never raises for a bad file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()  # structure and checksums
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                return ImageCheck(False, w, h, im.format or "", f"too large ({w}x{h})")
            im.load()  # a truncated file fails only here
            return ImageCheck(True, w, h, im.format or "")
    except UnidentifiedImageError:
        return ImageCheck(False, reason="not an image")
    except Image.DecompressionBombError:
        return ImageCheck(False, reason="too large (decompression bomb)")
    except (OSError, SyntaxError, ValueError) as e:  # truncated, corrupt chunk, bad header
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return ImageCheck(False, reason=f"unreadable: {text}")
