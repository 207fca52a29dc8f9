"""Find a font that can draw Chinese prompts (contact sheets, plots).

Order: $HARNESS_FONT, the Noto Sans CJK wheel the harness installs (noto-cjk-sans-otc), then
fonts the system has (fontconfig, well-known paths on Linux, macOS and Windows).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

FONT_ENV = "HARNESS_FONT"

_SYSTEM_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/STHeiti Medium.ttc",
    "C:/Windows/Fonts/msyh.ttc",
    "C:/Windows/Fonts/simhei.ttf",
)


def _fontconfig() -> Path | None:
    if not shutil.which("fc-match"):
        return None
    try:
        out = subprocess.run(
            ["fc-match", "-f", "%{file}", ":lang=zh-cn"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out) if out and Path(out).is_file() else None


@lru_cache(maxsize=1)
def cjk_font_path() -> Path | None:
    """Path of a font with Chinese glyphs, or None when none can be found."""
    env = os.environ.get(FONT_ENV)
    if env and Path(env).is_file():
        return Path(env)
    try:
        import noto_cjk_sans_otc

        p = Path(str(noto_cjk_sans_otc.FONT_PATH))
        if p.is_file():
            return p
    except ImportError:
        pass
    for cand in _SYSTEM_CANDIDATES:
        if Path(cand).is_file():
            return Path(cand)
    found = _fontconfig()
    if found is not None and _has_han(found):
        return found
    return None


def _has_han(path: Path) -> bool:
    from PIL import ImageFont

    try:
        font = ImageFont.truetype(str(path), 32)
    except OSError:
        return False
    return font.getmask("猫").getbbox() != font.getmask("狗").getbbox() or bytes(font.getmask("猫")) != bytes(
        font.getmask("狗")
    )


_warned = False


def load_font(size: int):
    """A PIL font of `size` px that draws Chinese; falls back (with one warning) if none exists."""
    global _warned
    from PIL import ImageFont

    path = cjk_font_path()
    if path is not None:
        return ImageFont.truetype(str(path), size)
    if not _warned:
        print(
            "harness: warning: no CJK font found, Chinese captions will show as boxes "
            f"(pip install noto-cjk-sans-otc, or point {FONT_ENV} at a .ttf/.ttc/.otf)",
            file=sys.stderr,
        )
        _warned = True
    return ImageFont.load_default(size)
