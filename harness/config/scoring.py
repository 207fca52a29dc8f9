"""The scoring config: one strict pydantic model that mirrors a scoring YAML one to one.

Owns: thresholds, reproducibility tolerances, which registered model each score uses, the
content hashes those models must have (`pins`), and `load_scoring_config`. Names models, never
loads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from harness.config import scorers as scorer_names
from harness.config.common import StrictModel
from harness.config.gate import AESTHETIC_GATE
from harness.config.registry import DEFAULT_AESTHETIC, DEFAULT_ALIGNMENT, DEFAULT_CONSISTENCY
from harness.config.yamlio import parse_model, read_yaml

DEFAULT_SCORERS = ("aesthetic", "consistency", "alignment")


class Tolerances(StrictModel):
    """How close a re-render must be to count as `reproducible` (all three must hold)."""

    max_abs_diff: int = Field(64, ge=0, le=255)  # largest per-channel difference, 0..255
    min_psnr: float = Field(35.0, ge=0.0)  # dB over the whole panel (8-bit peak 255)
    min_clip_i: float = Field(0.98, ge=-1.0, le=1.0)  # cosine of consistency-model embeddings


class ScoringConfig(StrictModel):
    """Everything that decides a score apart from the images themselves."""

    threshold: float = Field(AESTHETIC_GATE, allow_inf_nan=False)  # the competition's gate
    min_panels: int = Field(8, ge=1, le=64)  # used when no story says how many panels
    scorers: list[str] = list(DEFAULT_SCORERS)
    aesthetic_model: str = DEFAULT_AESTHETIC
    consistency_model: str = DEFAULT_CONSISTENCY
    alignment_model: str = DEFAULT_ALIGNMENT
    outlier_margin: float = Field(0.05, ge=0.0, le=2.0)  # below the median panel -> flagged
    weakest: int = Field(3, ge=1, le=64)  # weakest panels named when the gate fails
    reproduce: bool = True
    tolerances: Tolerances = Tolerances()
    max_pixels: int = Field(64 * 1024 * 1024, ge=1)  # larger images are refused (decompression bombs)
    batch_size: int = Field(8, ge=1, le=256)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Registry name or reference (a text tower's too) -> the sha256 its folder must hash to, so
    # everyone scoring with this config uses the same weights or gets an error
    # (`harness score-models --pin` prints this block for the models a config uses).
    pins: dict[str, str] = {}

    @field_validator("pins")
    @classmethod
    def _sha256_pins(cls, v: dict[str, str]) -> dict[str, str]:
        for key, digest in v.items():
            if not key.strip():
                raise ValueError("a pin needs a model name or reference")
            if not (len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
                raise ValueError(
                    f"pin for {key!r}: expected 64 lowercase hex digits (a sha256), got {digest!r}"
                )
        return v

    @field_validator("scorers")
    @classmethod
    def _known_scorers(cls, v: list[str]) -> list[str]:
        scorer_names.check_names(v)  # ValueError naming the unknown one and the near names
        return v


def reproduce_model(config: ScoringConfig) -> tuple[str, str]:
    """The model that gives CLIP-I between a panel and its re-render: the consistency model."""
    return ("open_clip", config.consistency_model)


def load_scoring_config(path: str | Path) -> ScoringConfig:
    """Read and validate a scoring YAML; any problem raises one HarnessError line."""
    return parse_model(read_yaml(path), ScoringConfig)


# A story on the tiny model is scored by the tiny scorers (unless told otherwise): the real
# scoring models would have to be downloaded, and their numbers mean nothing on random pixels.
TINY_SCORERS = {
    "aesthetic_model": "tiny-aesthetic",
    "consistency_model": "tiny-clip",
    "alignment_model": "tiny-clip-ml",
}


def scoring_for(base_model: str, scoring: ScoringConfig | None) -> ScoringConfig:
    """The scoring config for a story: tiny scorers replace the defaults on a tiny story."""
    from harness.config.refs import parse_ref

    scoring = scoring or ScoringConfig()
    if parse_ref(base_model).source != "tiny":
        return scoring
    defaults = ScoringConfig()
    swap = {k: v for k, v in TINY_SCORERS.items() if getattr(scoring, k) == getattr(defaults, k)}
    return scoring.model_copy(update=swap)
