"""Check what is inside untrusted bundle images.

Owns: the bundle's image pixel cap and size rule, and reading the harness parameters a panel
embeds. Opening is `harness.imaging`'s (PIL guard, pixel cap). LoRA files are checked by
`harness.lora.checks` (the same check `render` applies before loading one). Every problem is
returned as one line; nothing here raises on bad content.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

MAX_IMAGE_PIXELS = 16 * 1024 * 1024  # 4096x4096; the story caps panels at 2048x2048


def check_image(
    path: Path, expect_size: tuple[int, int] | None = None
) -> tuple[list[str], dict[str, Any] | None]:
    """(problems, embedded harness parameters or None) for one image file."""
    from harness.imaging import open_untrusted
    from harness.render.pngmeta import CHUNK

    problems: list[str] = []
    params = None
    try:
        with open_untrusted(path, MAX_IMAGE_PIXELS) as im:
            w, h = im.size
            im.load()  # decode fully: a truncated file fails here
            text = getattr(im, "text", {}).get(CHUNK) if im.format == "PNG" else None
    except HarnessError as e:
        return [str(e)], None
    if expect_size is not None and (w, h) != expect_size:
        problems.append(f"{w}x{h} pixels, the story renders {expect_size[0]}x{expect_size[1]}")
    if text is not None:
        try:
            params = json.loads(text)
        except ValueError:
            problems.append("embedded harness parameters are not valid JSON")
        if params is not None and not isinstance(params, dict):
            params, _ = None, problems.append("embedded harness parameters are not a mapping")
    return problems, params
