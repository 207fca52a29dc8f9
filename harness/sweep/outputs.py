"""Write what a sweep found: the candidates table, the per-panel sheets, the swept story and
the report. Writers only: they read the typed result and the candidates' PNGs, never render.

Every file goes through `harness.safeio.write_atomic` (a link planted in the folder is
replaced, never written through).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.sweep import store

if TYPE_CHECKING:
    from harness.sweep.result import SweepResult
    from harness.sweep.select import Selection

TABLE_COLUMNS = (
    "id", "panel", "rank", "seed", "scale", "steps", "aesthetic", "clip_t", "chosen", "original",
    "png", "png_sha256", "story_sha256", "model_sha256", "lora_sha256", "aesthetic_model",
    "alignment_model", "consistency_model", "render_s",
)  # fmt: skip


def write_outputs(result: "SweepResult") -> None:
    """The table, the sheets, story.swept.yaml (with the LoRA it names) and report.json."""
    write_table(result)
    write_sheets(result)
    write_swept_story(result)
    from harness.safeio import write_json

    result.report = build_report(result)
    write_json(result.out / store.REPORT, result.report)


def write_table(result: "SweepResult") -> Path:
    """candidates.csv: one row per candidate of this sweep, with every score and hash."""
    import pandas as pd

    from harness.safeio import write_atomic

    chosen = {o.id for o in result.selection.chosen.values()}
    original = {o.id for o in result.selection.original.values()}
    records = []
    for row in sorted(
        result.rows.values(), key=lambda r: (r["panel"], r["steps"], str(r["scale"]), r["rank"])
    ):
        rec = {k: row.get(k) for k in TABLE_COLUMNS}
        rec["chosen"] = row["id"] in chosen
        rec["original"] = row["id"] in original
        records.append(rec)
    df = pd.DataFrame.from_records(records, columns=list(TABLE_COLUMNS))
    df["seed"] = df["seed"].astype(str)  # up to 2^64-1: no float64 rounding in a spreadsheet
    return write_atomic(result.out / store.TABLE, df.to_csv(index=False))


def read_table(out: Path):
    """candidates.csv as a DataFrame (seeds as text, so 64-bit seeds survive)."""
    import pandas as pd

    from harness.safeio import read_bytes

    data = read_bytes(out / store.TABLE, max_bytes=64 << 20)
    return pd.read_csv(io.BytesIO(data), dtype={"seed": str, "id": str})


# --- the sheets ---------------------------------------------------------------------------------
CELL = 160
PAD = 10
LABEL_H = 38


def write_sheets(result: "SweepResult") -> list[Path]:
    """sheets/panel-NN.png per swept panel: strengths as rows, seeds as columns."""
    plan = result.setup.plan
    story = result.setup.loaded.story
    chosen = {p: o.id for p, o in result.selection.chosen.items()}
    written = []
    for p in plan.panels:
        grid = []
        for s in plan.scales:
            line = []
            for r in range(len(plan.seeds[p])):
                full = result.rows.get(plan.candidate(p, r, s, plan.steps).id)
                preview = (
                    result.rows.get(plan.candidate(p, r, s, plan.preview_steps).id)
                    if plan.preview_steps is not None
                    else None
                )
                line.append(full or preview)
            grid.append(line)
        title = f"{p} · {story.panels[p - 1].prompt}"
        path = result.out / store.sheet_name(p)
        draw_sheet(result.out, grid, [_scale_label(s) for s in plan.scales], plan.seeds[p], title,
                   chosen.get(p), plan.steps, path)  # fmt: skip
        written.append(path)
    return written


def _scale_label(scale: float | None) -> str:
    return "no LoRA" if scale is None else f"LoRA ×{scale:g}"


def draw_sheet(out, grid, row_labels, seeds, title, winner, steps, path: Path) -> Path:
    """One panel's grid: each cell the candidate's picture, seed and scores; the winner outlined."""
    import functools

    from PIL import Image, ImageDraw

    from harness.fonts import load_font
    from harness.render.linebreak import wrap
    from harness.safeio import read_bytes, write_atomic

    cols, rows = len(seeds), len(grid)
    left = 90
    head_font, font = load_font(18), load_font(13)
    measure = functools.partial(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength, font=head_font)
    width = left + cols * (CELL + PAD) + PAD
    caption = wrap(title, measure, width - 2 * PAD, 3)
    header = 14 + 24 * len(caption) + 20
    sheet = Image.new("RGB", (width, header + rows * (CELL + LABEL_H + PAD) + PAD), "white")
    draw = ImageDraw.Draw(sheet)
    for i, line in enumerate(caption):
        draw.text((PAD, 10 + 24 * i), line, fill="black", font=head_font)
    for c, seed in enumerate(seeds):
        text = str(seed) if len(str(seed)) <= 12 else str(seed)[:11] + "…"
        label = f"story seed {text}" if c == 0 else f"#{c} seed {text}"
        draw.text((left + c * (CELL + PAD), header - 18), label, fill="#444", font=font)
    for r, line in enumerate(grid):
        y = header + r * (CELL + LABEL_H + PAD)
        draw.text((PAD, y + CELL // 2 - 8), row_labels[r], fill="black", font=font)
        for c, row in enumerate(line):
            x = left + c * (CELL + PAD)
            if row is None:
                draw.rectangle([x, y, x + CELL, y + CELL], outline="#ccc")
                draw.text((x + 8, y + CELL // 2), "not rendered", fill="#999", font=font)
                continue
            from harness.imaging import open_untrusted

            png = store.png_path(out, row["id"])
            try:
                with open_untrusted(io.BytesIO(read_bytes(png, max_bytes=256 << 20)), 1 << 26) as im:
                    thumb = im.convert("RGB")
            except HarnessError as e:
                raise HarnessError(f"{png}: {e}") from None
            scale = CELL / max(thumb.size)
            resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
            thumb = thumb.resize(
                (max(1, round(thumb.width * scale)), max(1, round(thumb.height * scale))), resample
            )
            sheet.paste(thumb, (x + (CELL - thumb.width) // 2, y + (CELL - thumb.height) // 2))
            preview = row["steps"] != steps
            colour = "#999" if preview else "black"
            text = f"aes {row['aesthetic']:.3f}" + (f" (preview {row['steps']} st)" if preview else "")
            draw.text((x, y + CELL + 3), text, fill=colour, font=font)
            clip_t = row.get("clip_t")
            draw.text(
                (x, y + CELL + 19),
                f"CLIP-T {clip_t:.3f}" if clip_t is not None else "",
                fill=colour,
                font=font,
            )
            if row["id"] == winner:
                draw.rectangle([x - 4, y - 4, x + CELL + 4, y + CELL + LABEL_H], outline="#e0201b", width=4)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return write_atomic(path, buf.getvalue())


# --- the swept story ----------------------------------------------------------------------------
def swept_story_data(result: "SweepResult", selection: "Selection | None" = None) -> dict[str, Any]:
    """The story with the chosen seeds and strength (a LoRA named as the copy in DIR/lora/)."""
    selection = selection or result.selection
    story = result.setup.loaded.story
    data = story.model_dump(mode="json", exclude_none=True)
    for p, option in selection.chosen.items():
        data["panels"][p - 1]["seed"] = option.seed
    if result.setup.lora_path is not None and selection.scale is not None:
        data["lora"] = {"path": f"{store.LORA}/{result.setup.lora_path.name}", "scale": selection.scale}
    return data


def swept_story_text(result: "SweepResult", selection: "Selection | None" = None) -> str:
    import yaml

    data = swept_story_data(result, selection)
    head = (
        f"# Written by `harness sweep` from {result.setup.loaded.path.name} "
        f"(story sha256 {result.setup.identity['story_sha256'][:12]}): the chosen seeds and LoRA strength.\n"
        "# Rendering this story gives exactly the winning candidates' pixels.\n"
    )
    return head + yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=1000)


def write_swept_story(result: "SweepResult", selection: "Selection | None" = None) -> Path:
    """story.swept.yaml (and the LoRA it names, copied into DIR/lora/), checked by `load_story`."""
    from harness.config.story import Story, load_story
    from harness.render.records import parse
    from harness.safeio import write_atomic

    out = result.out
    text = swept_story_text(result, selection)
    import yaml

    parse(Story, yaml.safe_load(text), f"{out / store.SWEPT_STORY}: not written")  # before any write
    lora = result.setup.lora_path
    if lora is not None:
        import os
        import stat

        folder = out / store.LORA
        if not os.path.lexists(folder):
            folder.mkdir()
        elif not stat.S_ISDIR(os.lstat(folder).st_mode):
            raise HarnessError(f"{folder}: is not a real folder; not written through")
        target = folder / lora.name
        from harness.hashing import sha256_file

        if not (
            target.is_file() and not target.is_symlink() and sha256_file(target) == result.setup.lora_sha256
        ):

            def copy(write):
                with open(lora, "rb") as f:
                    while chunk := f.read(1 << 20):
                        write(chunk)

            write_atomic(target, copy)
    path = write_atomic(out / store.SWEPT_STORY, text)
    load_story(path, follow_links=False)  # a swept story that does not validate is a bug: loud
    return path


# --- the report ---------------------------------------------------------------------------------
def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _pick(o) -> dict[str, Any]:
    return {"seed": o.seed, "scale": o.scale, "aesthetic": o.aesthetic, "clip_t": o.clip_t, "id": o.id}


def build_report(result: "SweepResult", selection: "Selection | None" = None) -> dict[str, Any]:
    """The JSON report: per panel original against chosen, the story before and after, the gate."""
    sel = selection or result.selection
    plan = result.setup.plan
    threshold = result.threshold
    panels = []
    for p in sorted(sel.chosen):
        o, c = sel.original[p], sel.chosen[p]
        panels.append(
            {
                "panel": p,
                "swept": p in plan.panels,
                "original": _pick(o),
                "chosen": _pick(c),
                "gain": c.aesthetic - o.aesthetic,
            }
        )  # fmt: skip
    story = result.setup.loaded.story
    return {
        "kind": "harness.sweep.report",
        "story": f"{story.team}/{story.name}",
        "story_sha256": result.setup.identity["story_sha256"],
        "model_sha256": result.setup.identity["model_sha256"],
        "lora_sha256": result.setup.identity["lora_sha256"],
        "objective": "mean aesthetic score over every panel",
        "method": "coordinate ascent over the swept panels, per LoRA strength",
        "threshold": threshold,
        "before": {
            "aesthetic_mean": sel.original_mean,
            "clip_i": _num(sel.original_clip_i),
            "gate": "VALID" if sel.original_mean >= threshold else "INVALID",
        },
        "after": {
            "aesthetic_mean": sel.aesthetic_mean,
            "clip_i": _num(sel.clip_i),
            "scale": sel.scale,
            "gate": "VALID" if sel.aesthetic_mean >= threshold else "INVALID",
        },
        "constraints": {
            "alignment_margin": sel.alignment_margin,
            "min_consistency": _num(sel.min_consistency),
            "met": sel.feasible,
        },
        "panels": panels,
        "swept_panels": plan.panels,
        "scales": plan.scales,
        "seeds_per_panel": len(plan.seeds[plan.panels[0]]) - 1 if plan.panels else 0,
        "steps": plan.steps,
        "preview_steps": plan.preview_steps,
        "keep": plan.keep,
        "preview_rank_correlation": _num(result.preview_correlation),
        "candidates": len(result.rows),
        "rendered_now": len(result.rendered),
        "notes": sel.notes,
        "swept_story": store.SWEPT_STORY,
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as a terminal table (every value from our own numbers; prompts not shown)."""
    lines = [
        f"sweep of {report['story']}: {report['candidates']} candidates "
        f"({report['rendered_now']} rendered now)"
    ]
    lines.append(f"{'panel':>5}  {'original (seed, aes)':>30}  {'chosen (seed, aes)':>30}  {'gain':>7}")
    for row in report["panels"]:
        o, c = row["original"], row["chosen"]
        mark = "" if row["swept"] else "  (not swept)"
        lines.append(
            f"{row['panel']:>5}  {o['seed']:>21} {o['aesthetic']:8.4f}  "
            f"{c['seed']:>21} {c['aesthetic']:8.4f}  {row['gain']:+7.4f}{mark}"
        )
    b, a = report["before"], report["after"]
    ci = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    lines.append(f"story mean aesthetic: {b['aesthetic_mean']:.4f} -> {a['aesthetic_mean']:.4f}  "
                 f"(CLIP-I {ci(b['clip_i'])} -> {ci(a['clip_i'])}, LoRA strength {a['scale']})")  # fmt: skip
    lines.append(f"gate (mean >= {report['threshold']:g}): {b['gate']} -> {a['gate']}")
    if report["preview_rank_correlation"] is not None:
        lines.append(
            f"preview ({report['preview_steps']} steps) vs full rank correlation: "
            f"{report['preview_rank_correlation']:+.3f} (Spearman)"
        )
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)
