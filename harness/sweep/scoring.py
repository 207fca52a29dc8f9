"""Score sweep candidates with the judges' scorers: one set of models per process.

Owns: turning rendered candidates into score rows (aesthetic and CLIP-T through the registered
scorers `harness score` runs, under the same ScoringConfig and pins; the consistency model's
image embedding, from which the choice computes any set's CLIP-I as `harness score` would).
Must not render or write files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.config.scoring import ScoringConfig


class CandidateScorer:
    """The scorers for a whole sweep: models load on first use and stay for every candidate."""

    def __init__(self, config: "ScoringConfig"):
        from harness.score import registry
        from harness.score.models import shared_cache

        self.config = config
        self.models = shared_cache(config.device, config.pins)
        self.aesthetic = registry.get("aesthetic")(config, self.models)
        self.alignment = registry.get("alignment")(config, self.models)

    def load(self) -> None:
        """Load every scoring model now: a missing or mis-pinned one fails here, not mid-sweep."""
        self.aesthetic.load()
        self.alignment.load()
        self.models.get("open_clip", self.config.consistency_model)

    def park(self) -> None:
        """Scoring models off the accelerator while Kolors renders (nothing moves on a CPU)."""
        self.models.park()

    def score(self, images: list, prompts: list[str]) -> list[dict[str, Any]]:
        """Per image: {'aesthetic', 'clip_t', 'embedding'} (the embedding L2-normalised)."""
        from harness.score.images import Panel
        from harness.score.registry import ScoreContext

        c = self.config
        panels = [
            Panel(index=i + 1, path=Path(f"candidate-{i + 1}.png"), image=im.convert("RGB"), mode="RGB")
            for i, im in enumerate(images)
        ]
        ctx = ScoreContext(panels, list(prompts), c, self.models, required_panels=len(panels))
        self.aesthetic.load()
        self.alignment.load()
        aesthetic = self.aesthetic.score(ctx).per_panel
        alignment = self.alignment.score(ctx).per_panel
        clip = self.models.get("open_clip", c.consistency_model)
        embeds = clip.embed_images([p.image for p in panels], c.batch_size).double().tolist()
        return [
            {"aesthetic": float(a["aesthetic"]), "clip_t": t["clip_t"], "embedding": e}
            for a, t, e in zip(aesthetic, alignment, embeds, strict=True)
        ]
