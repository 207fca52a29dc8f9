"""Write a scoring run as scores.json and as a readable per-panel table.

Owns: the scores.json layout (kind "harness.scores") and the text table. Writers only: nothing
here loads models or computes a score.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.layout import SCORES
from harness.score.api import ScoreRun, summary


def to_json(run: ScoreRun) -> dict[str, Any]:
    """The scores.json content."""
    from harness import __version__

    repro = run.reproducibility
    repro_by_panel = {p.index: p for p in repro.panels} if repro else {}
    panels = []
    for i, panel in enumerate(run.panels):
        row: dict[str, Any] = {
            "index": panel.index,
            "file": panel.name,
            "mode": panel.mode,
            "panel": (panel.params or {}).get("panel"),
            "prompt": run.prompts[i],
            "pixels": run.pixels[i] if i < len(run.pixels) else None,
        }
        for metric in run.metrics.values():
            row.update(metric.per_panel[i])
        r = repro_by_panel.get(panel.index)
        if r is not None:
            row["reproducibility"] = {
                "verdict": r.verdict,
                "max_abs_diff": r.max_abs_diff,
                "psnr": r.psnr,
                "clip_i": r.clip_i,
                "reason": r.reason,
            }
        row["notes"] = panel.notes
        panels.append(row)
    return {
        "kind": "harness.scores",
        "harness_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "folder": str(run.folder),
        "images": str(run.image_folder),
        "summary": summary(run),
        "scored_pixels": run.scored_pixels,
        "submitted": (
            None
            if run.submitted_metrics is None
            else {
                "summary": summary(run, run.submitted_metrics),
                "per_panel": [
                    {k: v for m in run.submitted_metrics.values() for k, v in m.per_panel[i].items()}
                    for i in range(len(run.panels))
                ],
            }
        ),
        "exit_code": run.exit_code,
        "config": run.config.model_dump(mode="json"),
        "models": {name: m.models for name, m in run.metrics.items()},
        "metrics": {
            name: {"summary": m.summary, "passed": m.passed, "notes": m.notes}
            for name, m in run.metrics.items()
        },
        "reproducibility": (
            {"verdict": repro.verdict, "tolerances": repro.tolerances, "notes": repro.notes}
            if repro
            else ({"verdict": "refused", "error": run.repro_error} if run.repro_error else None)
        ),
        "panels": panels,
        "skipped": [{"file": s.path.name, "reason": s.reason} for s in run.skipped],
        "notes": run.notes,
    }


def default_scores_path(folder: Path, image_folder: Path) -> Path:
    """<run>/scores.json for a run; beside a plain image folder (<folder>.scores.json) otherwise,
    because the competition's evaluate() reads every file in the image folder."""
    folder = Path(folder)
    if Path(image_folder) != folder:
        return folder / SCORES
    return folder.resolve().parent / f"{folder.resolve().name}.{SCORES}"


def write_scores(run: ScoreRun, path: Path | None = None) -> Path:
    """Write scores.json atomically (`harness.safeio.write_json`: a link planted at the name or a
    temporary name is never written through); returns its path (default: `default_scores_path`)."""
    from harness.safeio import write_json

    path = Path(path) if path is not None else default_scores_path(run.folder, run.image_folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json(path, to_json(run))


def _pixels_line(run: ScoreRun) -> str:
    """Which pixels the numbers above rest on, and what the files themselves score if different."""
    rerendered = sum(k == "re-rendered" for k in run.pixels)
    if run.scored_pixels == "re-rendered":
        line = "scored on the re-rendered pixels (every panel re-rendered here)"
    elif run.scored_pixels == "submitted":
        line = "scored on the files' own pixels (no re-render)"
    else:
        line = (
            f"scored on re-rendered pixels for {rerendered} of {len(run.panels)} panels, "
            "the files' own for the rest"
        )
    if run.submitted_metrics is not None:
        own = summary(run, run.submitted_metrics).get("aesthetic_mean")
        if own is not None:
            line += f"; the files themselves score aesthetic mean {own:.4f}"
    return line


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def format_table(run: ScoreRun) -> str:
    """Per-panel table plus the summary and verdicts, for the terminal."""
    repro = {p.index: p for p in run.reproducibility.panels} if run.reproducibility else {}
    headers = ["#", "file"]
    cols: list[tuple[str, str]] = []
    if "aesthetic" in run.metrics:
        cols.append(("aesthetic", "aesthetic"))
    if "consistency" in run.metrics:
        cols += [("consistency", "clip-i"), ("outlier", "outlier")]
    if "alignment" in run.metrics:
        cols.append(("clip_t", "clip-t"))
    for name, metric in run.metrics.items():  # plug-in metrics: show their per-panel keys
        if name not in ("aesthetic", "consistency", "alignment") and metric.per_panel:
            cols += [(k, k) for k in metric.per_panel[0]]
    headers += [h for _, h in cols]
    if repro:
        headers += ["repro", "max diff", "psnr", "clip-i re"]
    rows = []
    for i, panel in enumerate(run.panels):
        values: dict[str, Any] = {}
        for metric in run.metrics.values():
            values.update(metric.per_panel[i])
        row = [str(panel.index), panel.name] + [_fmt(values.get(k)) for k, _ in cols]
        if repro:
            r = repro.get(panel.index)
            psnr = "inf" if r and r.verdict == "exact" else _fmt(r.psnr, 2) if r else "-"
            row += [
                r.verdict if r else "-",
                _fmt(r.max_abs_diff) if r else "-",
                psnr,
                _fmt(r.clip_i, 4) if r else "-",
            ]
        rows.append(row)
    widths = [max(len(h), *(len(r[j]) for r in rows)) for j, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]

    s = summary(run)
    lines.append("")
    gate = "VALID" if run.valid else "INVALID"
    if "aesthetic_mean" in s:
        lines.append(
            f"aesthetic mean {s['aesthetic_mean']:.4f} (threshold {run.config.threshold:g}, "
            f"{s['panels']}/{s['required_panels']} panels): {gate}"
        )
    else:
        lines.append(f"{s['panels']}/{s['required_panels']} panels: {gate}")
    if s.get("clip_i") is not None:
        lines.append(f"story consistency (CLIP-I) {s['clip_i']:.4f}")
    if s.get("clip_t_mean") is not None:
        lines.append(f"prompt alignment (CLIP-T) mean {s['clip_t_mean']:.4f}")
    lines.append(_pixels_line(run))
    if run.reproducibility is not None:
        lines.append(f"reproducibility: {run.reproducibility.verdict}")
    elif run.repro_error is not None:
        lines.append(f"reproducibility: refused: {run.repro_error}")
    notes = list(run.notes)
    for metric in run.metrics.values():
        notes += metric.notes
    if run.reproducibility is not None:
        notes += run.reproducibility.notes
        notes += [f"panel {p.index}: {p.verdict}: {p.reason}" for p in run.reproducibility.panels if p.reason]
    notes += [f"{p.name}: {n}" for p in run.panels for n in p.notes]
    notes += [f"skipped {s.path.name}: {s.reason}" for s in run.skipped]
    lines += [f"  - {n}" for n in dict.fromkeys(notes)]
    return "\n".join(lines)
