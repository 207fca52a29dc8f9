"""The judges' check of one untrusted bundle: the order of the checks.

Owns: `verify_bundle`. The verdict is `verdict.py`, the file-level checks `checks.py`, the
re-render and re-score seam `rerun.py`; judging a folder of bundles (the ledger, verdict files,
the local and Ray backends) is `batch.py` and `ray_backend.py`.

A bundle is never trusted: the manifest is checked against the files first (missing, extra,
altered, symlinked, oversized); only files the manifest lists and that are intact regular files
are opened, and only with the safe readers: `harness.safeio` (JSON: no link followed, no FIFO
opened, size and depth capped), `harness.config.story.load_story` without file checks
(story.yaml), `content.py` (images and their embedded parameters) and `harness.lora.checks`
(LoRA files). Nothing outside the bundle is opened, hashed or read because of what the bundle
says: its story's lora.path, its run record's story.source and the LoRA file names its panels
record are never used as paths; the only LoRA candidates for the re-render are the bundle's own
intact LoRA files, matched by sha256, and the only base models it may name are ALLOWED_BASES.
Re-scoring and re-rendering run only when every file-level check passed, through the one seam
`rerun_checks` (the scoring package's `score_run`); every score and the gate then rest on the
judges' own re-rendered pixels, never on the team's (the verdict's `scored_pixels` says which),
and the team's scores.json is held against the team's own pixels scored by the judges
(`claims.py`). Each failed check is one line in verdict.json; nothing here lets a traceback
escape for bad bundle content.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness.bundle import manifest as mf
from harness.bundle.checks import claims_check, content_checks, read_bundle_json, story_checks
from harness.bundle.rerun import Rerun, rerun_checks
from harness.bundle.verdict import MAX_PROBLEMS, SKIPPED, Check, Verdict
from harness.config.naming import parse_model_id
from harness.errors import HarnessError
from harness.layout import RUN_JSON, SCORES

if TYPE_CHECKING:
    from harness.config.scoring import ScoringConfig

__all__ = ["MAX_PROBLEMS", "Check", "Rerun", "Verdict", "rerun_checks", "verify_bundle"]


def verify_bundle(
    bundle: str | Path,
    *,
    rerun: bool = True,
    scoring: "ScoringConfig | None" = None,
    expected: tuple[str, str | None] | None = None,
) -> Verdict:
    """Check one bundle (see module docstring) and return its verdict; writes nothing.

    `expected`: the (team, name) its place in a folder of bundles gives it (`<team>/<name>/`),
    or (team, None) for a bundle directly in `<team>/`; the manifest must claim the same, so no
    bundle passes as another team's. Raises HarnessError only when `bundle` is not a folder at all.
    """
    bundle = Path(bundle)
    if bundle.is_symlink():
        raise HarnessError(f"{bundle}: is a symlink; verify the real folder")
    if not bundle.is_dir():
        raise HarnessError(f"{bundle}: no such bundle folder")
    v = Verdict(str(bundle))
    try:
        manifest, raw = mf.read(bundle)
    except HarnessError as e:
        v.add("manifest", [str(e)])
        files, walk_problems = mf.walk(bundle)
        v.problems += walk_problems
        try:  # the digest covers whatever sits there, read with the same caps as the manifest
            from harness.safeio import read_bytes

            raw = read_bytes(bundle / mf.MANIFEST, max_bytes=mf.MAX_MANIFEST_BYTES)
        except HarnessError:
            raw = b""
        v.digest = mf.bundle_digest(raw, {})
        return v
    v.team, v.name, v.model_id = manifest.team, manifest.name, manifest.model_id
    try:
        mid = parse_model_id(manifest.model_id)
        naming = (
            []
            if (mid.team, mid.name) == (manifest.team, manifest.name)
            else [
                f"model id {manifest.model_id} does not match team {manifest.team} and name {manifest.name}"
            ]
        )
    except HarnessError as e:
        naming = [str(e)]
    if expected is not None:
        team, name = expected
        if manifest.team != team or (name is not None and manifest.name != name):
            folder = team if name is None else f"{team}/{name}"
            naming.insert(0, f"folder {folder} holds the bundle of {manifest.team}/{manifest.name}")
    v.add("manifest", naming, manifest.model_id)

    problems, actual, intact_count = mf.check_files(bundle, manifest)
    v.digest = mf.bundle_digest(raw, actual)
    v.files_total, v.files_ok = len(manifest.files), intact_count
    v.add("files", problems, f"{intact_count}/{len(manifest.files)} files match the manifest")
    intact = {e.path: e.sha256 for e in manifest.files if actual.get(e.path) == e.sha256}
    listed = set(intact)

    story = story_checks(bundle, v, listed)
    sound = content_checks(bundle, v, intact, story, manifest)
    run_problems = []
    if RUN_JSON in listed:
        from harness.render.records import RunManifest, parse

        recorded = None
        try:
            raw_run = read_bundle_json(bundle, RUN_JSON)
            run = parse(RunManifest, raw_run, f"{RUN_JSON}: not a readable run record")
            recorded = {p.file: p.sha256 for p in run.panels}
        except HarnessError as e:
            run_problems.append(str(e))
        if recorded is not None:
            for rel, digest in sorted(recorded.items()):
                if rel in intact and intact[rel] != digest:
                    run_problems.append(f"{rel}: differs from the image recorded when the run was rendered")
    else:
        v.notes.append(f"{RUN_JSON}: absent (no record of the original render)")
    v.add("run record", run_problems, "panels match the render record")
    if SCORES in listed:  # read now, so a hostile scores.json fails with --no-rerun too
        from harness.bundle.claims import read_json as read_claims

        try:
            read_claims(bundle / SCORES, SCORES)
            v.add("scores file", [], "readable")
        except HarnessError as e:
            v.add("scores file", [str(e)])
    if not manifest.scored:
        v.notes.append("unscored bundle: no scores.json from the participant")

    if not rerun:
        v.checks.append(Check("rescore/rerender", SKIPPED, "not requested"))
    elif not v.passed:
        v.checks.append(Check("rescore/rerender", SKIPPED, "file or content checks failed"))
    else:
        try:
            result = rerun_checks(bundle, list(sound.values()), scoring)
        except HarnessError as e:
            result = Rerun(SKIPPED, "refused", [f"rescore/rerender: {e}"])
        v.gate, v.reproducibility, v.scores = result.gate, result.reproducibility, result.summary
        v.scored_pixels, v.submitted_scores = result.scored_pixels, result.submitted_summary
        if result.scored_pixels == "submitted":
            v.notes.append("the scores rest on the team's own pixels: nothing was re-rendered")
        pixels = "the judges' re-render" if result.scored_pixels == "re-rendered" else result.scored_pixels
        v.add(
            "rescore/rerender",
            result.problems,
            f"gate {result.gate}, reproducibility {result.reproducibility}, scored on {pixels}",
        )
        claims_check(bundle, v, listed, result)
    return v
