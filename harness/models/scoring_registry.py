"""The registry of scoring models (aesthetic predictor, CLIP towers), by name.

Owns: which weights a score name stands for (source, pinned revision or content hash, kind) and
turning an entry or a reference into a local folder. It loads no weights and imports no torch.

A reference is a registry name, `modelscope:<id>[@revision]`, `local:<path>`, or one of the
built-in tiny models (`tiny-aesthetic`, `tiny-clip`, `tiny-clip-ml`), which are built in-process
with fixed seeds and saved in the real formats (see `harness.score.tiny`). Whatever folder is
used, its content hash is recorded with the scores, and where an entry pins a sha256 a folder
with other content is refused: two people scoring the same images get the same numbers or an
error, never silently different ones.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping

from harness.errors import HarnessError

Kind = Literal["aesthetic", "open_clip"]

TINY_NAMES = ("tiny-aesthetic", "tiny-clip", "tiny-clip-ml")


@dataclass(frozen=True)
class ScoringModelSpec:
    """One scoring model: where its files come from and what they must hash to."""

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


# The real entries pin no sha256 yet: the build machine has no hub access, so their content hashes
# are unknown. The ModelScope ids of the multilingual models and xlm-roberta towers follow the
# AI-ModelScope mirror naming but are unverified. The hash actually used is recorded in scores.json.
SCORING_MODELS: dict[str, ScoringModelSpec] = {
    spec.name: spec
    for spec in (
        ScoringModelSpec(
            name="aesthetic-v2-linear",
            kind="aesthetic",
            ref="modelscope:AI-ModelScope/aesthetics-predictor-v2-sac-logos-ava1-l14-linearMSE",
            description="the competition's gate: LAION improved aesthetic predictor v2 "
            "(sac+logos+ava1, linear MSE head) on CLIP ViT-L/14, via simple-aesthetics-predictor",
        ),
        ScoringModelSpec(
            name="clip-vit-h-14",
            kind="open_clip",
            ref="modelscope:AI-ModelScope/CLIP-ViT-H-14-laion2B-s32B-b79K",
            arch="ViT-H-14",
            description="open_clip ViT-H-14 laion2b_s32b_b79k: strong image features (story consistency)",
        ),
        ScoringModelSpec(
            name="xlm-roberta-base-vit-b-32",
            kind="open_clip",
            ref="modelscope:AI-ModelScope/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k",
            arch="xlm-roberta-base-ViT-B-32",
            text_tower="modelscope:AI-ModelScope/xlm-roberta-base",
            description="multilingual open_clip xlm-roberta-base-ViT-B-32 laion5b_s13b_b90k "
            "(understands Chinese prompts)",
        ),
        ScoringModelSpec(
            name="xlm-roberta-large-vit-h-14",
            kind="open_clip",
            ref="modelscope:AI-ModelScope/CLIP-ViT-H-14-frozen-xlm-roberta-large-laion5B-s13B-b90k",
            arch="xlm-roberta-large-ViT-H-14",
            text_tower="modelscope:AI-ModelScope/xlm-roberta-large",
            description="multilingual open_clip xlm-roberta-large-ViT-H-14 frozen_laion5b_s13b_b90k "
            "(stronger, slower)",
        ),
        ScoringModelSpec(
            name="tiny-aesthetic",
            kind="aesthetic",
            ref="tiny-aesthetic",
            description="seeded miniature AestheticsPredictorV2Linear (tests and demos; random scores)",
        ),
        ScoringModelSpec(
            name="tiny-clip",
            kind="open_clip",
            ref="tiny-clip",
            description="seeded miniature open_clip model (tests and demos; random embeddings)",
        ),
        ScoringModelSpec(
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


@dataclass(frozen=True)
class ResolvedScoringModel:
    spec: ScoringModelSpec
    folder: Path
    sha256: str
    text_tower: Path | None = None
    text_tower_sha256: str | None = None

    def describe(self) -> dict:
        """What the scores record about the model: enough to get the same weights again."""
        out = {"name": self.spec.name, "ref": self.spec.ref, "sha256": self.sha256}
        if self.text_tower is not None:  # its tokenizer and config change the scores too
            out.update(text_tower=self.spec.text_tower, text_tower_sha256=self.text_tower_sha256)
        return out


def lookup(text: str, kind: Kind) -> ScoringModelSpec:
    """A registry entry by name, or an ad-hoc entry for a `modelscope:`/`local:` reference."""
    text = text.strip()
    if text in SCORING_MODELS:
        spec = SCORING_MODELS[text]
        if spec.kind != kind:
            raise HarnessError(f"scoring model {text!r} is a {spec.kind} model, not {kind}")
        return spec
    if text.startswith(("modelscope:", "local:")):
        return ScoringModelSpec(name=text, kind=kind, ref=text, description="given on the command line")
    names = [n for n, s in SCORING_MODELS.items() if s.kind == kind]
    near = difflib.get_close_matches(text, names, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise HarnessError(
        f"unknown {kind} scoring model {text!r}{hint} (known: {', '.join(names)}; "
        "or modelscope:<id>, local:<path>)"
    )


def _folder(ref_text: str) -> Path:
    from harness.models.refs import parse_ref
    from harness.models.resolve import fetch_folder
    from harness.paths import cache_dir

    if ref_text in TINY_NAMES:
        from harness.score.tiny import ensure_tiny_scorer

        return ensure_tiny_scorer(ref_text, cache_dir())
    try:
        ref = parse_ref(ref_text)
    except ValueError as e:
        raise HarnessError(str(e)) from None
    if ref.source == "tiny":
        raise HarnessError(f"'tiny' is the tiny Kolors; scoring models use {', '.join(TINY_NAMES)}")
    folder = fetch_folder(ref)
    if not folder.is_dir():
        raise HarnessError(f"{ref_text}: {folder} is not a folder")
    return folder


def _check_pins(what: str, folder: Path, digest: str, pins: list[tuple[str, str | None]]) -> None:
    for where, expected in pins:
        if expected is not None and digest != expected:
            raise HarnessError(
                f"{what}: {folder} hashes to {digest[:16]}..., {where} pins {expected[:16]}...; "
                "refusing to score with different weights"
            )


def resolve_scoring_model(
    spec: ScoringModelSpec, pins: Mapping[str, str] | None = None
) -> ResolvedScoringModel:
    """Locate (download or build) the model's folder, hash it, and check every pin that applies.

    `pins` (a scoring config's `pins:`) maps a registry name or a reference (`modelscope:...`,
    `local:...`, a text tower's reference) to the sha256 its folder must have.
    """
    from harness.hashing import sha256_tree
    from harness.paths import cache_dir

    pins = pins or {}
    folder = _folder(spec.ref)
    digest = sha256_tree(folder, cache_dir() / "digests.json")
    _check_pins(
        f"scoring model {spec.name}",
        folder,
        digest,
        [("the registry", spec.sha256), ("the scoring config", pins.get(spec.name) or pins.get(spec.ref))],
    )
    tower = tower_digest = None
    if spec.text_tower:
        tower = _folder(spec.text_tower)
        tower_digest = sha256_tree(tower, cache_dir() / "digests.json")
        _check_pins(
            f"text tower {spec.text_tower} of {spec.name}",
            tower,
            tower_digest,
            [("the scoring config", pins.get(spec.text_tower))],
        )
    return ResolvedScoringModel(spec, folder, digest, tower, tower_digest)
