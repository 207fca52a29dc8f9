"""The contact sheet: all panels in a grid (2x4 for 8) with panel numbers and prompts.

Captions break by measured width with the kinsoku rule (`harness.render.linebreak`): no line
starts with closing punctuation such as ，。）」.

Written through `harness.safeio.write_atomic` (no link in the run folder is followed).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

from harness.fonts import load_font
from harness.render.linebreak import wrap

TILE = 256  # px per panel thumbnail
PAD = 12
CAPTION_LINES = 3


def contact_sheet(panels: list[tuple[int, str, Path]], title: str, out: Path) -> Path:
    """Write a grid of (number, prompt, image path) to `out` (PNG); returns `out`."""
    from PIL import Image, ImageDraw

    n = len(panels)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    head_font, num_font, cap_font = load_font(22), load_font(18), load_font(14)
    line_h = 18
    cell_w, cell_h = TILE, TILE + PAD // 2 + CAPTION_LINES * line_h
    header = 40
    sheet = Image.new(
        "RGB", (cols * cell_w + (cols + 1) * PAD, header + rows * cell_h + (rows + 1) * PAD), "white"
    )
    draw = ImageDraw.Draw(sheet)
    draw.text((PAD, 10), title, fill="black", font=head_font)
    for k, (number, prompt, path) in enumerate(panels):
        r, c = divmod(k, cols)
        x = PAD + c * (cell_w + PAD)
        y = header + PAD + r * (cell_h + PAD)
        with Image.open(path) as im:
            thumb = im.convert("RGB")
        # Small panels (the tiny model's) are enlarged without smoothing so pixels stay honest.
        scale = TILE / max(thumb.size)
        resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
        thumb = thumb.resize((round(thumb.width * scale), round(thumb.height * scale)), resample)
        sheet.paste(thumb, (x + (TILE - thumb.width) // 2, y + (TILE - thumb.height) // 2))
        label = f" {number} "
        lw = draw.textlength(label, font=num_font)
        draw.rectangle([x, y, x + lw + 4, y + 24], fill="black")
        draw.text((x + 2, y + 2), label, fill="white", font=num_font)
        measure = functools.partial(draw.textlength, font=cap_font)
        for i, line in enumerate(wrap(prompt, measure, cell_w, CAPTION_LINES)):
            draw.text((x, y + TILE + PAD // 2 + i * line_h), line, fill="black", font=cap_font)
    import io

    from harness.safeio import write_atomic

    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return write_atomic(out, buf.getvalue())  # a link planted at the name is replaced, not followed
