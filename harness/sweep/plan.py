"""What a sweep will render: the candidates, their deterministic ids and derived seeds.

Owns: parsing and checking the sweep's options (panels, seed count, scales, preview), deriving
a panel's extra seeds from the story and the panel, and the candidate id (story sha256 + panel +
seed + scale + steps), which names a candidate's files so a finished one is never rendered
again. Torch-free; writes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.config.common import MAX_SEED
from harness.errors import HarnessError
from harness.hashing import sha256_bytes

MAX_SEEDS = 1024  # extra seeds per panel: far beyond any useful sweep, bounds the work
MAX_SCALES = 16
SCALE_RANGE = (-2.0, 2.0)  # the story schema's LoRA strength range


@dataclass(frozen=True)
class Candidate:
    """One picture the sweep may render: a panel at a seed, LoRA strength and step count.

    `rank` is the seed's place in the panel's list: 0 is the story's own seed."""

    panel: int
    rank: int
    seed: int
    scale: float | None  # None: the story has no LoRA
    steps: int
    story_sha256: str

    @property
    def id(self) -> str:
        return candidate_id(self.story_sha256, self.panel, self.seed, self.scale, self.steps)


def scale_text(scale: float | None) -> str:
    return "none" if scale is None else repr(float(scale))


def candidate_id(story_sha256: str, panel: int, seed: int, scale: float | None, steps: int) -> str:
    """The candidate's stable name: the same inputs give the same id in every process."""
    key = f"harness.sweep|{story_sha256}|{panel}|{seed}|{scale_text(scale)}|{steps}"
    return f"p{panel:02d}-{sha256_bytes(key.encode())[:16]}"


def derived_seeds(story_sha256: str, panel: int, own_seed: int, n: int) -> list[int]:
    """`n` seeds for `panel`, derived from the story's hash and the panel number, none equal to
    the story's own seed or to each other. The k-th seed does not depend on `n`, so a sweep
    with more seeds extends one with fewer."""
    seeds: list[int] = []
    k = 0
    while len(seeds) < n:
        k += 1
        digest = sha256_bytes(f"harness.sweep.seed|{story_sha256}|{panel}|{k}".encode())
        seed = int(digest[:16], 16) & MAX_SEED
        if seed != own_seed and seed not in seeds:
            seeds.append(seed)
    return seeds


def parse_scales(spec: str | None, story_scale: float | None) -> list[float | None]:
    """The LoRA strengths to sweep, the story's own first. None when the story has no LoRA."""
    if spec is None:
        return [story_scale]
    scales: list[float | None] = [story_scale]
    for part in spec.split(","):
        part = part.strip()
        try:
            value = float(part)
        except ValueError:
            raise HarnessError(
                f"--scales: {part!r} is not a number (use e.g. --scales 0.6,0.8,1.0)"
            ) from None
        lo, hi = SCALE_RANGE
        if not math.isfinite(value) or not lo <= value <= hi:
            raise HarnessError(f"--scales: {part} is outside the LoRA strength range {lo:g}..{hi:g}")
        if value not in scales:
            scales.append(value)
    if story_scale is None:
        raise HarnessError("--scales: the story has no LoRA, so there is no strength to sweep")
    if len(scales) > MAX_SCALES:
        raise HarnessError(f"--scales: at most {MAX_SCALES} strengths, got {len(scales)}")
    return scales


@dataclass(frozen=True)
class SweepOptions:
    """The sweep's command-line choices, checked by `check_options`."""

    seeds: int
    panels: str | None = None
    scales: str | None = None
    preview_steps: int | None = None
    keep: int | None = None
    min_consistency: float | None = None  # None: the original story's CLIP-I
    alignment_margin: float = 0.02
    device: str = "auto"
    backend: str = "local"
    address: str | None = None  # --backend ray: "auto", "ray://host:port"; None starts a private Ray
    workers: int | None = None  # --backend ray: None is one per GPU (one on a CPU-only cluster)
    gpus_per_worker: float | None = None
    progress: bool = True
    chunk: int = 4  # candidates rendered before they are scored and recorded


def check_options(opts: SweepOptions, story_steps: int) -> None:
    """One HarnessError line for the first bad option; nothing is read or written."""
    if opts.seeds < 1:
        raise HarnessError(f"--seeds: must be at least 1, got {opts.seeds}")
    if opts.seeds > MAX_SEEDS:
        raise HarnessError(f"--seeds: at most {MAX_SEEDS}, got {opts.seeds}")
    if (opts.preview_steps is None) != (opts.keep is None):
        raise HarnessError("--preview-steps and --keep go together (preview K steps, keep the best M)")
    if opts.preview_steps is not None:
        if not 1 <= opts.preview_steps < story_steps:
            raise HarnessError(
                f"--preview-steps: must be 1..{story_steps - 1} (fewer than the story's "
                f"{story_steps} steps), got {opts.preview_steps}"
            )
        if opts.seeds < 2:
            raise HarnessError(
                f"--preview-steps: needs --seeds 2 or more (the preview keeps fewer than it tries), "
                f"got --seeds {opts.seeds}"
            )
        if not 1 <= opts.keep < opts.seeds:  # type: ignore[operator]
            raise HarnessError(f"--keep: must be 1..{opts.seeds - 1} (fewer than --seeds), got {opts.keep}")
    if opts.min_consistency is not None and not (
        math.isfinite(opts.min_consistency) and -1.0 <= opts.min_consistency <= 1.0
    ):
        raise HarnessError(f"--min-consistency: must be a cosine in -1..1, got {opts.min_consistency}")
    if not (math.isfinite(opts.alignment_margin) and 0.0 <= opts.alignment_margin <= 2.0):
        raise HarnessError(f"--alignment-margin: must be 0..2, got {opts.alignment_margin}")
    if opts.chunk < 1:
        raise HarnessError(f"chunk: must be at least 1, got {opts.chunk}")


@dataclass
class SweepPlan:
    """Every candidate of a sweep, by phase: previews (few steps) and full renders."""

    story_sha256: str
    panels: list[int]  # the swept panels
    scales: list[float | None]
    steps: int
    preview_steps: int | None
    keep: int | None
    seeds: dict[int, list[int]]  # panel -> [own seed, derived...] (unswept panels: own seed only)

    def candidate(self, panel: int, rank: int, scale: float | None, steps: int) -> Candidate:
        return Candidate(panel, rank, self.seeds[panel][rank], scale, steps, self.story_sha256)

    def originals(self) -> list[Candidate]:
        """Every panel at its own seed, at every scale, full steps (the story as it is)."""
        return [self.candidate(p, 0, s, self.steps) for s in self.scales for p in sorted(self.seeds)]

    def previews(self) -> list[Candidate]:
        if self.preview_steps is None:
            return []
        return [
            self.candidate(p, r, s, self.preview_steps)
            for s in self.scales
            for p in self.panels
            for r in range(len(self.seeds[p]))
        ]

    def full(self) -> list[Candidate]:
        """Without a preview: every seed of every swept panel at every scale, full steps."""
        return [
            self.candidate(p, r, s, self.steps)
            for s in self.scales
            for p in self.panels
            for r in range(1, len(self.seeds[p]))
        ]


def make_plan(story, story_sha256: str, opts: SweepOptions) -> SweepPlan:
    """The sweep's candidates for a validated `story` (harness.config.story.Story)."""
    from harness.render.run import parse_panels  # the render's own rule for --panels

    check_options(opts, story.sampling.steps)
    if opts.panels is not None:
        named = [part.strip() for part in opts.panels.split(",")]
        twice = sorted({p for p in named if named.count(p) > 1})
        if twice:
            raise HarnessError(f"--panels: panel {twice[0]} is named more than once ({opts.panels})")
    panels = parse_panels(opts.panels, story.panel_count)
    scales = parse_scales(opts.scales, story.lora.scale if story.lora is not None else None)
    seeds = {i: [story.panels[i - 1].seed] for i in range(1, story.panel_count + 1)}
    for p in panels:
        seeds[p] += derived_seeds(story_sha256, p, seeds[p][0], opts.seeds)
    return SweepPlan(story_sha256, panels, scales, story.sampling.steps, opts.preview_steps, opts.keep, seeds)
