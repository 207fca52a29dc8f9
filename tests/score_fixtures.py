"""Helpers shared by the scoring tests: tiny-model configs and synthetic panels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from harness.config.scoring import ScoringConfig

TINY_MODELS = dict(
    aesthetic_model="tiny-aesthetic", consistency_model="tiny-clip", alignment_model="tiny-clip-ml"
)


def tiny_config(**overrides) -> ScoringConfig:
    """Tiny scoring models, no re-rendering unless asked."""
    return ScoringConfig(**{**TINY_MODELS, "reproduce": False, **overrides})


def noise_image(seed: int, size: int = 48) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")


def write_panels(folder: Path, images: list[Image.Image], names: list[str] | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f"{i + 1:02d}.png" for i in range(len(images))]
    paths = []
    for name, im in zip(names, images, strict=True):
        im.save(folder / name)
        paths.append(folder / name)
    return paths
