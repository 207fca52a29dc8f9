"""Story consistency: how alike the panels look to a strong open_clip image encoder.

Owns: CLIP-I, the mean pairwise cosine similarity of the panels' image embeddings (1.0 for
identical panels; unrelated photos are typically 0.3-0.5 with ViT-H-14), and for each panel its
mean similarity to the others. A panel more than `outlier_margin` below the median panel is
flagged as an outlier: the one that breaks the story's style.
"""

from __future__ import annotations

import math
import statistics

from harness.score.registry import MetricResult, ScoreContext, Scorer, register


def consistency(embeds) -> tuple[float | None, list[float | None]]:
    """(mean pairwise cosine, per-panel mean cosine to the others) of L2-normalised rows."""
    n = len(embeds)
    if n < 2:
        return None, [None] * n
    sims = (embeds @ embeds.T).double().tolist()
    per_panel = [math.fsum(sims[i][j] for j in range(n) if j != i) / (n - 1) for i in range(n)]
    pairs = [sims[i][j] for i in range(n) for j in range(i + 1, n)]
    return math.fsum(sorted(pairs)) / len(pairs), per_panel


@register("consistency")
class ConsistencyScorer(Scorer):
    """CLIP-I over the panels, with outlier panels flagged."""

    @classmethod
    def models_needed(cls, config):
        return [("open_clip", config.consistency_model)]

    def load(self) -> None:
        (self.model,) = self.load_models()

    def score(self, ctx: ScoreContext) -> MetricResult:
        embeds = self.model.embed_images([p.image for p in ctx.panels], self.config.batch_size)
        mean, per_panel = consistency(embeds)
        notes: list[str] = []
        outliers: list[int] = []
        if mean is None:
            notes.append("story consistency needs at least 2 panels")
        else:
            median = statistics.median(per_panel)  # type: ignore[arg-type]
            outliers = [
                i + 1
                for i, v in enumerate(per_panel)
                if v is not None and v < median - self.config.outlier_margin
            ]
            for i in outliers:
                notes.append(
                    f"panel {i} is an outlier: mean similarity {per_panel[i - 1]:.3f} to the others, "
                    f"median panel {median:.3f}"
                )
        return MetricResult(
            name=self.name,
            models=[self.model.resolved.describe()],
            per_panel=[{"consistency": v, "outlier": (i + 1) in outliers} for i, v in enumerate(per_panel)],
            summary={"clip_i": mean, "outliers": outliers, "outlier_margin": self.config.outlier_margin},
            notes=notes,
        )
