"""The one registry of everything that has weights, by name.

Each entry names its source (ModelScope id, local path or the built-in tiny model) and, where
one is known, a pinned revision. The content hash of what was actually used is recorded in every
run manifest, so a render can always be tied to exact bytes even when the revision floats.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    ref: str
    kind: str
    description: str


KNOWN_MODELS: dict[str, ModelSpec] = {
    "kolors": ModelSpec(
        ref="modelscope:Kwai-Kolors/Kolors-diffusers",
        kind="kolors",
        description="Kolors base model, diffusers layout (UNet 2.6B, ChatGLM3-6B, SDXL VAE)",
    ),
    "tiny": ModelSpec(
        ref="tiny",
        kind="kolors",
        description="seeded miniature Kolors built in-process (same classes, real tokenizer)",
    ),
}

DEFAULT_BASE_MODEL = KNOWN_MODELS["kolors"].ref
