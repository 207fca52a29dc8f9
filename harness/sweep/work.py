"""The sweep's unit of work: render and score one chunk of candidates, writing nothing.

Owns: `SweepWork` (what a process needs to render a sweep's candidates; plain, picklable data),
`CandidateRenderer` (one pipeline and one set of scorers per process: render a chunk through
the render path, encode each PNG with its parameters, score the chunk, build each row) and its
result `Rendered`, `chunks` (how candidates are cut into chunks), `record` (PNG first, then its
row: the only writes) and `Backend` (what a backend gives the orchestrator). Both backends
call these: the local backend in the sweeping process, the Ray backend
(`harness.sweep.ray_backend`) in each worker, with the driver alone recording. So a
candidate's pixels and row do not depend on the backend that rendered it (on a CPU, the torch
thread count does: see docs/sweep.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from harness.sweep import store
from harness.sweep.plan import Candidate, scale_text

if TYPE_CHECKING:
    from harness.config.scoring import ScoringConfig
    from harness.config.story import Story
    from harness.sweep.result import SweepSetup

# Candidates rendered by this process (all sweeps): tests and benchmarks read it to prove a
# resumed sweep rendered only what was missing.
RENDER_COUNT = [0]


@dataclass(frozen=True)
class SweepWork:
    """What rendering a sweep's candidates needs: the validated story, the base model by
    reference and content hash, the LoRA file by path and content hash, the scoring config and
    the device asked for. No models, no open files: a Ray worker receives it as it is."""

    story: "Story"
    model_sha256: str
    lora_path: Path | None
    lora_sha256: str | None
    scoring: "ScoringConfig"
    device: str

    @classmethod
    def of(cls, setup: "SweepSetup") -> "SweepWork":
        """The work of a checked sweep request."""
        return cls(
            setup.loaded.story,
            setup.model.sha256,
            setup.lora_path,
            setup.lora_sha256,
            setup.config,
            setup.opts.device,
        )


@dataclass(frozen=True)
class Rendered:
    """One rendered and scored candidate, not yet on disk: the PNG file's bytes and its row."""

    id: str
    png: bytes
    row: dict[str, Any]


@dataclass(frozen=True)
class Backend:
    """What a sweep backend's context manager yields (`harness.sweep.run.BACKENDS`): `start()`
    readies it (Ray: connect and start the workers; idempotent; the driver calls it before it
    makes the sweep folder when something is left to render, so a cluster that cannot be used
    leaves nothing behind) and `render(todo, on_done)` renders, scores and records `todo`,
    calling `on_done(rows)` per chunk, and returns the ids it rendered."""

    start: Callable[[], None]
    render: Callable[[list[Candidate], Callable[[list[dict]], None]], list[str]]


def chunks(todo: list[Candidate], size: int) -> list[list[Candidate]]:
    """`todo` cut into chunks of at most `size` sharing a LoRA strength and a step count (one
    pipeline state per chunk), in order of first appearance."""
    groups: dict[tuple, list[Candidate]] = {}
    for c in todo:
        groups.setdefault((scale_text(c.scale), c.steps), []).append(c)
    return [g[i : i + size] for g in groups.values() for i in range(0, len(g), size)]


class CandidateRenderer:
    """Renders and scores chunks of one sweep's candidates in this process.

    The base model is resolved here and must have the sweep's content hash; it is placed on the
    device this process has (a Ray worker: the GPU Ray gave it). The pipeline is kept between
    chunks (`pipeline_for`, LoRA strength swapped) and the scorers load once."""

    def __init__(self, work: SweepWork, *, model: Any = None, placement: Any = None):
        from harness.render.path import place, resolve_model

        self.work = work
        self.model = model or resolve_model(work.story.base_model, sha256=work.model_sha256)
        self.placement = placement or place(self.model, work.device)
        self._scorer = None

    @property
    def scorer(self):
        """The sweep's scorers (`harness.sweep.scoring.CandidateScorer`), made on first use."""
        if self._scorer is None:
            from harness.sweep.scoring import CandidateScorer

            self._scorer = CandidateScorer(self.work.scoring)
        return self._scorer

    def render(self, chunk: list[Candidate]) -> list[Rendered]:
        """Render `chunk` (one strength and step count; batch size 1, so a panel's pixels are
        those of a story render) and score it; nothing is written."""
        from harness.hashing import sha256_bytes
        from harness.render.engine import PanelJob
        from harness.render.path import PipelineRequest, prepare_pipeline, render_panels
        from harness.render.pipelines import park_pipeline
        from harness.render.pngmeta import png_bytes
        from harness.render.records import LoraRecord, ModelRecord, PanelParams

        if not chunk:
            return []
        work, story, c0 = self.work, self.work.story, chunk[0]
        if any((scale_text(c.scale), c.steps) != (scale_text(c0.scale), c0.steps) for c in chunk):
            raise ValueError("a chunk shares one LoRA strength and one step count (see `chunks`)")
        request = PipelineRequest(
            self.model,
            self.placement,
            work.lora_path,
            work.lora_sha256,
            c0.scale if c0.scale is not None else 1.0,
        )
        sampling = story.sampling.model_copy(update={"steps": c0.steps})
        lora = (
            LoraRecord(file=work.lora_path.name, sha256=work.lora_sha256, scale=float(c0.scale))
            if work.lora_path is not None and c0.scale is not None
            else None
        )
        model_rec = ModelRecord(ref=str(self.model.ref), sha256=self.model.sha256)
        self.scorer.park()
        pipe = prepare_pipeline(request, progress=False)
        jobs = [
            PanelJob(c.panel, story.panels[c.panel - 1].prompt, story.negative_for(c.panel - 1), c.seed)
            for c in chunk
        ]
        t0 = time.perf_counter()
        drawn = render_panels(pipe, request, jobs, sampling, batch_size=1, progress=False)
        seconds = (time.perf_counter() - t0) / len(chunk)
        pngs = []
        for job, image in drawn:
            params = PanelParams.for_job(story, job, sampling, model_rec, lora, self.placement, 1)
            pngs.append(png_bytes(image, params))
            RENDER_COUNT[0] += 1
        park_pipeline()
        scores = self.scorer.score([im for _, im in drawn], [j.prompt for j in jobs])
        out = []
        for c, png, s in zip(chunk, pngs, scores, strict=True):
            row = {
                "id": c.id,
                "panel": c.panel,
                "rank": c.rank,
                "seed": c.seed,
                "scale": c.scale,
                "steps": c.steps,
                "aesthetic": s["aesthetic"],
                "clip_t": s["clip_t"],
                "png": f"{store.CANDIDATES}/{c.id}.png",
                "png_sha256": sha256_bytes(png),
                "story_sha256": c.story_sha256,
                "model_sha256": self.model.sha256,
                "lora_sha256": work.lora_sha256,
                **store.scoring_identity(work.scoring),
                "render_s": round(seconds, 3),
                "embedding": s["embedding"],
            }
            out.append(Rendered(c.id, png, row))
        return out


def record(out: Path, done: list[Rendered]) -> list[dict[str, Any]]:
    """Write each candidate into the sweep folder, its PNG first and then its row (a row names
    a PNG that is on disk, so a kill between the two leaves the candidate unfinished, not
    forged); returns the rows. The one place a sweep writes candidates."""
    from harness.safeio import write_atomic

    rows = []
    for r in done:
        write_atomic(store.png_path(out, r.id), r.png)
        store.write_row(out, r.row)
        rows.append(r.row)
    return rows
