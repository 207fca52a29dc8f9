"""Prompt alignment: does each panel show what its (Chinese) prompt says?

Owns: CLIP-T, the cosine similarity between a panel's image embedding and its prompt's text
embedding under a multilingual open_clip model (English CLIP scores near zero on Chinese text).
Range -1..1; matching image-text pairs typically score 0.2-0.35 with these models, so compare
panels and runs with each other rather than against an absolute bar. Informative, not a gate.
"""

from __future__ import annotations

import math

from harness.score.registry import MetricResult, ScoreContext, Scorer, register


@register("alignment")
class AlignmentScorer(Scorer):
    """CLIP-T per panel against its prompt, and the mean over panels with prompts."""

    @classmethod
    def models_needed(cls, config):
        return [("open_clip", config.alignment_model)]

    def load(self) -> None:
        (self.model,) = self.load_models()

    def score(self, ctx: ScoreContext) -> MetricResult:
        with_prompt = [i for i, p in enumerate(ctx.prompts) if p]
        values: list[float | None] = [None] * len(ctx.panels)
        if with_prompt:
            bs = self.config.batch_size
            images = self.model.embed_images([ctx.panels[i].image for i in with_prompt], bs)
            texts = self.model.embed_texts([ctx.prompts[i] for i in with_prompt], bs)  # type: ignore[misc]
            for k, i in enumerate(with_prompt):
                values[i] = float((images[k] * texts[k]).sum())
        known = [v for v in values if v is not None]
        missing = [i + 1 for i, v in enumerate(values) if v is None]
        notes = (
            [f"no prompt known for panel(s) {', '.join(map(str, missing))}: pass --story"] if missing else []
        )
        return MetricResult(
            name=self.name,
            models=[self.model.resolved.describe()],
            per_panel=[{"clip_t": v} for v in values],
            summary={"clip_t_mean": math.fsum(known) / len(known) if known else None},
            notes=notes,
        )
