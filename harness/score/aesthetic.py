"""The competition's objective gate: the LAION aesthetic predictor's mean over the panels.

Owns: per-panel aesthetic scores (AestheticsPredictorV2Linear logits[0][0], on the image as the
competition's CLIPProcessor sees it), their mean, and the gate: mean >= threshold is valid.
A story with fewer panels than required is invalid whatever its mean.
"""

from __future__ import annotations

import math

from harness.score.registry import MetricResult, ScoreContext, Scorer, register


def gate(scores: list[float], threshold: float, required: int, weakest: int) -> tuple[bool, float, list[str]]:
    """(valid, mean, reasons). The mean is exactly rounded (math.fsum), so panel order never matters."""
    mean = math.fsum(scores) / len(scores) if scores else 0.0
    reasons = []
    if len(scores) < required:
        reasons.append(f"only {len(scores)} usable panels, {required} required")
    if mean < threshold:
        order = sorted(range(len(scores)), key=lambda i: (scores[i], i))[:weakest]
        named = ", ".join(f"panel {i + 1} ({scores[i]:.3f})" for i in order)
        reasons.append(f"mean aesthetic score {mean:.4f} is below {threshold:g}; weakest: {named}")
    return not reasons, mean, reasons


@register("aesthetic")
class AestheticScorer(Scorer):
    """Aesthetic score per panel and the competition's validity gate."""

    @classmethod
    def models_needed(cls, config):
        return [("aesthetic", config.aesthetic_model)]

    def load(self) -> None:
        (self.model,) = self.load_models()

    def score(self, ctx: ScoreContext) -> MetricResult:
        scores = self.model.scores([p.image for p in ctx.panels], self.config.batch_size)
        required = ctx.required_panels
        valid, mean, reasons = gate(scores, self.config.threshold, required, self.config.weakest)
        return MetricResult(
            name=self.name,
            models=[self.model.resolved.describe()],
            per_panel=[{"aesthetic": s} for s in scores],
            summary={
                "aesthetic_mean": mean,
                "threshold": self.config.threshold,
                "panels": len(scores),
                "required_panels": required,
                "valid": valid,
            },
            passed=valid,
            notes=reasons,
        )
