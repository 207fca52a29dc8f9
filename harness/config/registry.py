"""The one registry of everything that has weights, by name: base models and scoring models.

Each entry names its kind, its source (ModelScope id, local path or a built-in tiny model built
in-process with fixed seeds) and, where known, a pinned sha256 of its folder's content. The
content hash of what was actually used is recorded in every run manifest and scores.json, so a
render or a score can always be tied to exact bytes. Resolving an entry to a folder lives in
`resolve` (base models) and `scoring_registry` (scoring models); this module imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["kolors", "aesthetic", "open_clip"]


@dataclass(frozen=True)
class ModelSpec:
    """One model: where its files come from and, where known, what they must hash to."""

    name: str
    kind: Kind
    ref: str  # modelscope:<id>[@rev], local:<path> or a tiny name
    description: str
    sha256: str | None = None  # pinned content hash of the folder (harness.hashing.sha256_tree)
    # open_clip only: architecture name to use when the folder has no open_clip_config.json.
    arch: str | None = None
    # open_clip with a Hugging Face text tower (xlm-roberta): a reference to a folder holding that
    # tower's config.json and tokenizer files, so nothing is fetched from the Hugging Face hub.
    text_tower: str | None = None


# No real entry pins a sha256 yet: the build machine has no hub access, so their content hashes
# are unknown (a scoring config can pin them, see `pins:`). The ids of the multilingual open_clip
# mirrors follow the AI-ModelScope naming but are unverified. The hash used is in scores.json.
MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="kolors",
            kind="kolors",
            ref="modelscope:Kwai-Kolors/Kolors-diffusers",
            description="Kolors base model, diffusers layout (UNet 2.6B, ChatGLM3-6B, SDXL VAE)",
        ),
        ModelSpec(
            name="tiny",
            kind="kolors",
            ref="tiny",
            description="seeded miniature Kolors built in-process (same classes, real tokenizer)",
        ),
        ModelSpec(
            name="aesthetic-v2-linear",
            kind="aesthetic",
            ref="modelscope:AI-ModelScope/aesthetics-predictor-v2-sac-logos-ava1-l14-linearMSE",
            description="the competition's gate: LAION improved aesthetic predictor v2 "
            "(sac+logos+ava1, linear MSE head) on CLIP ViT-L/14, via simple-aesthetics-predictor",
        ),
        ModelSpec(
            name="clip-vit-h-14",
            kind="open_clip",
            ref="modelscope:AI-ModelScope/CLIP-ViT-H-14-laion2B-s32B-b79K",
            arch="ViT-H-14",
            description="open_clip ViT-H-14 laion2b_s32b_b79k: strong image features (story consistency)",
        ),
        ModelSpec(
            name="xlm-roberta-base-vit-b-32",
            kind="open_clip",
            ref="modelscope:AI-ModelScope/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k",
            arch="xlm-roberta-base-ViT-B-32",
            text_tower="modelscope:AI-ModelScope/xlm-roberta-base",
            description="multilingual open_clip xlm-roberta-base-ViT-B-32 laion5b_s13b_b90k "
            "(understands Chinese prompts)",
        ),
        ModelSpec(
            name="xlm-roberta-large-vit-h-14",
            kind="open_clip",
            ref="modelscope:AI-ModelScope/CLIP-ViT-H-14-frozen-xlm-roberta-large-laion5B-s13B-b90k",
            arch="xlm-roberta-large-ViT-H-14",
            text_tower="modelscope:AI-ModelScope/xlm-roberta-large",
            description="multilingual open_clip xlm-roberta-large-ViT-H-14 frozen_laion5b_s13b_b90k "
            "(stronger, slower)",
        ),
        ModelSpec(
            name="tiny-aesthetic",
            kind="aesthetic",
            ref="tiny-aesthetic",
            description="seeded miniature AestheticsPredictorV2Linear (tests and demos; random scores)",
        ),
        ModelSpec(
            name="tiny-clip",
            kind="open_clip",
            ref="tiny-clip",
            description="seeded miniature open_clip model (tests and demos; random embeddings)",
        ),
        ModelSpec(
            name="tiny-clip-ml",
            kind="open_clip",
            ref="tiny-clip-ml",
            description="seeded miniature open_clip stand-in for the multilingual model "
            "(open_clip's built-in tokenizer; tests and demos)",
        ),
    )
}

DEFAULT_AESTHETIC = "aesthetic-v2-linear"
DEFAULT_CONSISTENCY = "clip-vit-h-14"
DEFAULT_ALIGNMENT = "xlm-roberta-base-vit-b-32"

BASE_MODELS = {name: spec for name, spec in MODELS.items() if spec.kind == "kolors"}
SCORING_MODELS = {name: spec for name, spec in MODELS.items() if spec.kind != "kolors"}
DEFAULT_BASE_MODEL = MODELS["kolors"].ref
