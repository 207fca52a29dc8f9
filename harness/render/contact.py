"""The contact sheet: all panels in a grid (2x4 for 8) with panel numbers and prompts.

Written through `harness.safeio.write_atomic` (no link in the run folder is followed).
"""

from __future__ import annotations

import math
from pathlib import Path

from harness.fonts import load_font

TILE = 256  # px per panel thumbnail
PAD = 12
CAPTION_LINES = 3


def _wrap(draw, text: str, font, width: int, max_lines: int) -> list[str]:
    """Wrap by measured width, character by character (Chinese has no spaces to break at)."""
    lines, line = [], ""
    for ch in text.replace("\n", " "):
        if draw.textlength(line + ch, font=font) <= width:
            line += ch
            continue
        lines.append(line)
        line = ch
        if len(lines) == max_lines:
            break
    else:
        lines.append(line)
        return lines[:max_lines]
    last = lines[-1]
    while last and draw.textlength(last + "…", font=font) > width:
        last = last[:-1]
    lines[-1] = last + "…"
    return lines


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
        for i, line in enumerate(_wrap(draw, prompt, cap_font, cell_w, CAPTION_LINES)):
            draw.text((x, y + TILE + PAD // 2 + i * line_h), line, fill="black", font=cap_font)
    import io

    from harness.safeio import write_atomic

    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return write_atomic(out, buf.getvalue())  # a link planted at the name is replaced, not followed
