"""Check what is inside untrusted bundle images.

Owns: the bundle's image pixel cap and size rule, and reading the harness parameters a panel
embeds. Each image is read once through `harness.safeio.read_bytes` (no link followed, no FIFO
opened, at most the manifest's image cap) and decoded from memory by `harness.imaging` (PIL
guard, pixel cap); the embedded parameters are checked by `harness.render.pngmeta`
(`params_from_text`: size and depth capped). LoRA files are checked by `harness.lora.checks`
(the same check `render` applies before loading one). Every problem is returned as one line;
nothing here raises on bad content.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

MAX_IMAGE_PIXELS = 16 * 1024 * 1024  # 4096x4096; the story caps panels at 2048x2048


def check_image(
    path: Path, expect_size: tuple[int, int] | None = None
) -> tuple[list[str], dict[str, Any] | None]:
    """(problems, embedded harness parameters or None) for one image file."""
    from harness.bundle.manifest import CAPS
    from harness.imaging import open_untrusted
    from harness.render.pngmeta import params_from_text, png_text
    from harness.safeio import read_bytes

    problems: list[str] = []
    params = None
    try:
        data = read_bytes(path, max_bytes=CAPS["image"])
        with open_untrusted(io.BytesIO(data), MAX_IMAGE_PIXELS) as im:
            w, h = im.size
            im.load()  # decode fully: a truncated file fails here
            text = png_text(im)
    except HarnessError as e:
        return [str(e).removeprefix(f"{path}: ")], None
    if expect_size is not None and (w, h) != expect_size:
        problems.append(f"{w}x{h} pixels, the story renders {expect_size[0]}x{expect_size[1]}")
    if text is not None:
        try:
            params = params_from_text(text, "embedded harness parameters")
        except HarnessError as e:
            problems.append(str(e).removeprefix("embedded harness parameters: "))
    return problems, params
