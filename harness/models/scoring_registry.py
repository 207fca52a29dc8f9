"""Scoring models (aesthetic predictor, CLIP towers): from a name or reference to a checked folder.

Owns: looking a scoring model up (registry name or ad-hoc reference; the table itself is in
`harness.config.registry`), turning it into a local folder, and checking its content hash
against every pin that applies. It loads no weights and imports no torch.

A reference is a registry name, `modelscope:<id>[@revision]`, `local:<path>`, or one of the
built-in tiny models (`tiny-aesthetic`, `tiny-clip`, `tiny-clip-ml`), which are built in-process
with fixed seeds and saved in the real formats (see `harness.models.tiny_scorers`). Whatever folder is
used, its content hash is recorded with the scores, and where an entry pins a sha256 a folder
with other content is refused: two people scoring the same images get the same numbers or an
error, never silently different ones.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping

from harness.config.registry import SCORING_MODELS, ModelSpec
from harness.errors import HarnessError

ScoringKind = Literal["aesthetic", "open_clip"]

TINY_NAMES = ("tiny-aesthetic", "tiny-clip", "tiny-clip-ml")


@dataclass(frozen=True)
class ResolvedScoringModel:
    spec: ModelSpec
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


def lookup(text: str, kind: ScoringKind) -> ModelSpec:
    """A registry entry by name, or an ad-hoc entry for a `modelscope:`/`local:` reference."""
    text = text.strip()
    if text in SCORING_MODELS:
        spec = SCORING_MODELS[text]
        if spec.kind != kind:
            raise HarnessError(f"scoring model {text!r} is a {spec.kind} model, not {kind}")
        return spec
    if text.startswith(("modelscope:", "local:")):
        return ModelSpec(name=text, kind=kind, ref=text, description="given on the command line")
    names = [n for n, s in SCORING_MODELS.items() if s.kind == kind]
    near = difflib.get_close_matches(text, names, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise HarnessError(
        f"unknown {kind} scoring model {text!r}{hint} (known: {', '.join(names)}; "
        "or modelscope:<id>, local:<path>)"
    )


def _folder(ref_text: str) -> Path:
    from harness.config.refs import parse_ref
    from harness.models.resolve import fetch_folder
    from harness.paths import cache_dir

    if ref_text in TINY_NAMES:
        from harness.models.tiny_scorers import ensure_tiny_scorer

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


def _pinned_folder(ref_text: str, what: str, pins: list[tuple[str, str | None]]) -> tuple[Path, str]:
    """(folder, sha256) of `ref_text`, refused when a pin that applies names another hash."""
    from harness.hashing import sha256_tree
    from harness.paths import cache_dir

    folder = _folder(ref_text)
    digest = sha256_tree(folder, cache_dir() / "digests.json")
    for where, expected in pins:
        if expected is not None and digest != expected:
            raise HarnessError(
                f"{what}: {folder} hashes to {digest[:16]}..., {where} pins {expected[:16]}...; "
                "refusing to score with different weights"
            )
    return folder, digest


def resolve_scoring_model(spec: ModelSpec, pins: Mapping[str, str] | None = None) -> ResolvedScoringModel:
    """Locate (download or build) the model's folder, hash it, and check every pin that applies.

    `pins` (a scoring config's `pins:`) maps a registry name or a reference (`modelscope:...`,
    `local:...`, a text tower's reference) to the sha256 its folder must have.
    """
    pins = pins or {}
    folder, digest = _pinned_folder(
        spec.ref,
        f"scoring model {spec.name}",
        [("the registry", spec.sha256), ("the scoring config", pins.get(spec.name) or pins.get(spec.ref))],
    )
    tower = tower_digest = None
    if spec.text_tower:
        tower, tower_digest = _pinned_folder(
            spec.text_tower,
            f"text tower {spec.text_tower} of {spec.name}",
            [("the scoring config", pins.get(spec.text_tower))],
        )
    return ResolvedScoringModel(spec, folder, digest, tower, tower_digest)
