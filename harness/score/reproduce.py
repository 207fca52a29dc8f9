"""Reproducibility: re-render each panel from the parameters embedded in its PNG and compare.

Owns: finding the model and LoRA a panel names (refusing files whose content hash differs from
the recorded one), replaying the render through the harness's one render path
(`harness.render.path`: the same preparation and panel loop `harness render` uses, fed from the
typed `PanelParams` each PNG embeds), and the verdicts.
Re-rendering (`rerender`) and judging (`judge_rerenders`) are apart so that scoring can render
first and load its own models only once Kolors has left the GPU. Verdicts:

- `exact`: the re-render is bit-identical to the file's pixels;
- `reproducible`: not identical, but within every tolerance (largest channel difference, PSNR,
  and CLIP-I between original and re-render);
- `not reproducible`: outside a tolerance (the numbers say which);
- `unchecked`: the panel has no embedded parameters, so no check is possible.

The story's verdict is the worst verdict over the checked panels.

Untrusted folders (`untrusted=True`: a bundle under judgement): the only LoRA candidates are the
files the caller passes (the bundle's own intact LoRA files, matched by sha256); no path written
inside the folder (the story's lora.path, a run manifest's story.source, a panel's recorded LoRA
file name) is opened, and the model a panel names must be an allowed base (`allowed_base`), so
nothing outside the folder is read or hashed. A recorded LoRA file name is only ever used as a
bare name beside a candidate the user gave.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from harness.errors import HarnessError
from harness.render.records import LoraRecord, PanelParams

if TYPE_CHECKING:
    from harness.config.scoring import Tolerances
    from harness.score.images import Panel

# Base models an untrusted folder may name: the real Kolors and the built-in tiny one. `local:`
# paths are refused (a bundle must not make the judges' machine hash or load a folder it chose),
# and so is a revision that is not a plain tag or commit name.
ALLOWED_BASES = ("tiny", "modelscope:Kwai-Kolors/Kolors-diffusers")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_LORA_CANDIDATES = 16  # LoRA files looked at in an untrusted folder's lora/

EXACT, REPRODUCIBLE, NOT_REPRODUCIBLE, UNCHECKED = "exact", "reproducible", "not reproducible", "unchecked"
_RANK = {EXACT: 0, REPRODUCIBLE: 1, NOT_REPRODUCIBLE: 2}


@dataclass
class PanelRepro:
    index: int
    file: str
    verdict: str
    max_abs_diff: int | None = None
    psnr: float | None = None  # dB; None when the pixels are identical (infinite PSNR)
    clip_i: float | None = None
    reason: str | None = None


@dataclass
class ReproResult:
    verdict: str  # exact / reproducible / not reproducible / unchecked
    panels: list[PanelRepro]
    tolerances: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.verdict == NOT_REPRODUCIBLE


def compare(original, rerender) -> tuple[int, float | None, bool]:
    """(max abs channel difference 0..255, PSNR in dB or None if identical, identical) of two RGB images."""
    import numpy as np

    a = np.asarray(original.convert("RGB"), dtype=np.int16)
    b = np.asarray(rerender.convert("RGB"), dtype=np.int16)
    diff = np.abs(a - b)
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    identical = mse == 0.0
    psnr = None if identical else 10.0 * math.log10(255.0**2 / mse)
    return int(diff.max()), psnr, identical


def judge(
    max_abs: int, psnr: float | None, clip_i: float | None, tol: "Tolerances"
) -> tuple[str, str | None]:
    """Verdict for a non-identical re-render, with the tolerances it broke."""
    broken = []
    if max_abs > tol.max_abs_diff:
        broken.append(f"max abs diff {max_abs} > {tol.max_abs_diff}")
    if psnr is not None and psnr < tol.min_psnr:
        broken.append(f"PSNR {psnr:.2f} dB < {tol.min_psnr:g}")
    if clip_i is not None and clip_i < tol.min_clip_i:
        broken.append(f"CLIP-I {clip_i:.4f} < {tol.min_clip_i:g}")
    return (NOT_REPRODUCIBLE, "; ".join(broken)) if broken else (REPRODUCIBLE, None)


def story_verdict(panels: list[PanelRepro]) -> str:
    checked = [p.verdict for p in panels if p.verdict in _RANK]
    return max(checked, key=_RANK.__getitem__) if checked else UNCHECKED


def allowed_base(ref: Any) -> bool:
    """True for a model reference an untrusted folder may name (see ALLOWED_BASES)."""
    if not isinstance(ref, str) or len(ref) > 300:
        return False
    try:
        from harness.config.refs import parse_ref

        parsed = parse_ref(ref)
    except ValueError:
        return False
    if parsed.revision is not None and (".." in parsed.revision or not _REVISION.fullmatch(parsed.revision)):
        return False
    return str(parsed).split("@")[0] in ALLOWED_BASES


def bare_name(name: Any) -> str | None:
    """A recorded file name usable beside a folder: one plain component, else None."""
    if not isinstance(name, str) or not name or len(name) > 255 or name in (".", ".."):
        return None
    if any(c in name for c in "/\\\x00") or os.path.isabs(name):
        return None
    return name


def folder_loras(folder: Path) -> list[Path]:
    """The regular LoRA files directly in an untrusted `folder` (links, FIFOs and folders are
    left alone; at most MAX_LORA_CANDIDATES), for re-rendering a bundle with its own LoRA."""
    from harness.layout import LORA_EXT

    out: list[Path] = []
    try:
        if not os.path.isdir(folder) or os.path.islink(folder):
            return []
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.lower().endswith(LORA_EXT) and entry.is_file(follow_symlinks=False):
                    out.append(Path(entry.path))
                if len(out) >= MAX_LORA_CANDIDATES:
                    break
    except OSError:
        return out
    return sorted(out)


def _story_lora_paths(run_dir: Path | None, story_path: Path | None) -> list[Path]:
    """Where a run says its LoRA lives: the story's lora.path, relative to the original story
    file (manifest story.source), the run folder, or the story given with --story."""
    from harness.config.story import load_story
    from harness.layout import STORY_COPY
    from harness.render.outdir import read_run_manifest

    out: list[Path] = []

    def from_story(story_file: Path, bases: list[Path]) -> None:
        try:
            story = load_story(story_file, check_files=False, check_tokens=False, follow_links=False).story
        except HarnessError:
            return
        rel = story.lora.path if story.lora is not None else None
        if rel:
            p = Path(rel).expanduser()
            out.extend([p] if p.is_absolute() else [b / p for b in bases])

    if story_path is not None:
        from_story(story_path, [story_path.parent])
    if run_dir is not None and (run_dir / STORY_COPY).is_file():
        bases = []
        try:
            manifest = read_run_manifest(run_dir)
        except HarnessError:
            manifest = None
        if manifest is not None:
            bases.append(Path(manifest.story.source).parent)
        bases.append(run_dir)
        from_story(run_dir / STORY_COPY, bases)
    return out


def find_lora(recorded: LoraRecord, candidates: list[Path], *, untrusted: bool = False) -> Path:
    """The first candidate whose sha256 matches the recorded one; refuse otherwise.

    `untrusted`: candidates are hashed without following a link or opening a FIFO, and one
    that cannot be read that way is skipped (`harness.locate.find_by_sha256`).
    """
    from harness.locate import find_by_sha256

    found, seen = find_by_sha256(candidates, recorded.sha256, untrusted=untrusted)
    if found is not None:
        return found
    if seen:
        listed = ", ".join(f"{path} (sha256 {digest[:12]}...)" for path, digest in seen)
        raise HarnessError(
            f"LoRA {recorded.file}: recorded sha256 {recorded.sha256[:12]}... but found {listed}; "
            "refusing to re-render with a different LoRA"
        )
    raise HarnessError(
        f"LoRA {recorded.file} (recorded with the panels) not found; pass --lora PATH to re-render"
    )


def _embedded(panel: "Panel", untrusted: bool) -> PanelParams:
    """The panel's embedded parameters as the typed record. An untrusted folder's model is held
    to ALLOWED_BASES first: that refusal matters more than any other problem of the record."""
    from harness.render.records import parse

    raw = panel.params or {}
    if untrusted:
        ref = raw.get("model", {}).get("ref") if isinstance(raw.get("model"), dict) else None
        if not allowed_base(ref):
            raise HarnessError(
                f"{panel.name}: embedded model {str(ref)[:80]!r} is not allowed in a "
                f"folder from someone else (use {' or '.join(ALLOWED_BASES)})"
            )
    return parse(PanelParams, raw, f"{panel.path}: embedded parameters")


def _render_group(
    group: list[tuple["Panel", PanelParams]], lora_candidates: list[Path], notes: list[str], untrusted: bool
) -> dict[int, Any]:
    """Re-render the panels of one parameter group; returns {panel position: PIL image}."""
    from harness.config.story import Sampling
    from harness.render.engine import PanelJob
    from harness.render.path import PipelineRequest, place, prepare_pipeline, render_panels, resolve_model

    first, p0 = group[0]
    model = resolve_model(
        p0.model.ref, sha256=p0.model.sha256, label=f"{first.path}: embedded model reference"
    )
    lora_path = None
    if p0.lora is not None:
        name = None if untrusted else bare_name(p0.lora.file)
        beside = [c.parent / name for c in lora_candidates] if name else []
        lora_path = find_lora(p0.lora, [*lora_candidates, *beside], untrusted=untrusted)

    recorded_device = p0.device if p0.device in ("cpu", "cuda") else "auto"
    try:
        placement = place(model, recorded_device)
    except HarnessError:
        placement = place(model, "auto")
        notes.append(
            f"rendered on {recorded_device}, re-rendered on {placement.device}: expect small differences"
        )
    if placement.dtype_name != p0.dtype:
        notes.append(f"rendered in {p0.dtype}, re-rendered in {placement.dtype_name}")
    try:
        sampling = Sampling(**p0.sampling.model_dump())
    except ValueError as e:
        raise HarnessError(f"{first.path}: embedded sampling parameters unusable ({e})") from None
    # Replay the recorded batching: panels in story order, chunked by the recorded batch size.
    jobs = [
        PanelJob(panel.index, p.prompt, p.negative_prompt, p.seed)
        for panel, p in sorted(group, key=lambda g: (g[1].panel, g[0].index))
    ]
    request = PipelineRequest(
        model,
        placement,
        lora_path,
        p0.lora.sha256 if lora_path is not None and p0.lora is not None else None,
        p0.lora.scale if lora_path is not None and p0.lora is not None else 1.0,
    )
    # The render's own pipeline when `harness run` rendered in this process.
    pipe = prepare_pipeline(request, progress=False)
    done = render_panels(pipe, request, jobs, sampling, batch_size=p0.batch_size, progress=False)
    return {job.index: image for job, image in done}


@dataclass
class Rerendered:
    """The re-renders of every panel that carries parameters, by panel index."""

    images: dict[int, Any]
    notes: list[str] = field(default_factory=list)


def rerender(
    panels: list["Panel"],
    *,
    run_dir: Path | None = None,
    story_path: Path | None = None,
    lora: Path | Sequence[Path] | None = None,
    untrusted: bool = False,
) -> Rerendered:
    """Re-render every panel that carries parameters, one group of equal parameters at a time.

    `lora`: the LoRA file(s) to try first (by sha256). Trusted folders also look where the story
    says (`_story_lora_paths`); an `untrusted` folder's only candidates are `lora` (see the
    module docstring). Raises HarnessError when a model or LoRA with the recorded content cannot
    be found, or an untrusted folder names a model it may not.
    """
    notes: list[str] = []
    groups: dict[tuple, list[tuple[Panel, PanelParams]]] = {}
    for panel in panels:
        if panel.params is not None:
            params = _embedded(panel, untrusted)
            groups.setdefault(params.render_key(), []).append((panel, params))
    given = [] if lora is None else [Path(lora)] if isinstance(lora, (str, Path)) else [Path(p) for p in lora]
    if not untrusted:
        for path in given:
            if not path.is_file():
                raise HarnessError(f"--lora: {path}: no such file")
    candidates = given if untrusted else given + _story_lora_paths(run_dir, story_path)
    images: dict[int, Any] = {}
    for group in groups.values():
        images.update(_render_group(group, candidates, notes, untrusted))
    return Rerendered(images, notes)


def judge_rerenders(
    panels: list["Panel"],
    rerendered: Rerendered,
    tolerances: "Tolerances",
    *,
    clip_model=None,
    batch_size: int = 8,
) -> ReproResult:
    """Compare each panel with its re-render (pixels, then CLIP-I when a model is given)."""
    results: list[PanelRepro] = []
    for panel in panels:
        again = rerendered.images.get(panel.index)
        if again is None:
            reason = "no embedded parameters: cannot re-render"
            results.append(PanelRepro(panel.index, panel.name, UNCHECKED, reason=reason))
            continue
        max_abs, psnr, identical = compare(panel.image, again)
        clip_i = None
        if clip_model is not None:
            e = clip_model.embed_images([panel.image, again], batch_size)
            clip_i = float((e[0] * e[1]).sum())
        if identical and panel.mode == "RGB":
            verdict, reason = EXACT, None
        else:
            verdict, reason = judge(max_abs, psnr, clip_i, tolerances)
        results.append(PanelRepro(panel.index, panel.name, verdict, max_abs, psnr, clip_i, reason))
    return ReproResult(story_verdict(results), results, tolerances.model_dump(), list(rerendered.notes))
