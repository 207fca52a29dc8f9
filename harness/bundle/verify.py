"""The judges' check of an untrusted bundle, and of a whole folder of bundles.

Owns: the order of the checks and the verdict. A bundle is never trusted: the manifest is
checked against the files first (missing, extra, altered, symlinked, oversized); only files the
manifest lists and that are intact regular files are opened, and only with the safe readers:
`harness.safeio` (JSON: no link followed, no FIFO opened, size and depth capped),
`harness.config.story.load_story` without file checks (story.yaml), `content.py` (images and their embedded
parameters) and `harness.lora.checks` (LoRA files). Nothing outside the bundle is opened,
hashed or read because of what the bundle says: its story's lora.path, its run record's
story.source and the LoRA file names its panels record are never used as paths; the only LoRA
candidates for the re-render are the bundle's own intact LoRA files, matched by sha256, and
the only base models it may name are ALLOWED_BASES. Re-scoring and re-rendering run only when
every file-level check passed, through the one seam `rerun_checks` (the scoring package's
`score_run`); every score and the gate then rest on the judges' own re-rendered pixels, never
on the team's (the verdict's `scored_pixels` says which), and the team's scores.json is held
against the team's own pixels scored by the judges (`claims.py`). Each failed check is one line
in verdict.json; nothing here lets a traceback escape for bad bundle content.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.bundle import manifest as mf
from harness.config.naming import parse_model_id
from harness.errors import HarnessError, first_line
from harness.layout import IMAGES as IMAGES_DIR
from harness.layout import PROMPTS, RUN_JSON, SCORES, STORY, panel_file
from harness.render.records import SAMPLING_KEYS, PanelParams
from harness.score.reproduce import ALLOWED_BASES, allowed_base

if TYPE_CHECKING:
    from harness.config.scoring import ScoringConfig

OK, FAILED, SKIPPED, WARNING = "ok", "failed", "skipped", "warning"
MAX_PROBLEMS = 50  # lines kept in one verdict
MAX_JSON_DEPTH = 16  # prompts.json and run.json as the harness writes them are 3 levels deep
# Base models a bundle may name (ALLOWED_BASES, from harness.score.reproduce): the real Kolors
# and the built-in tiny one. `local:` paths are refused: a bundle must not make the judges'
# machine load a folder the bundle chose.


@dataclass
class Check:
    name: str
    status: str
    detail: str = ""


@dataclass
class Verdict:
    bundle: str
    team: str | None = None
    name: str | None = None
    model_id: str | None = None
    digest: str | None = None
    files_total: int = 0
    files_ok: int = 0
    gate: str = SKIPPED
    reproducibility: str = SKIPPED
    checks: list[Check] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    scores: dict[str, Any] | None = None
    # Which pixels `scores` and the gate rest on: "re-rendered" (the judges' own re-render),
    # "submitted" (the team's files: no re-render happened) or "mixed"; None when nothing scored.
    scored_pixels: str | None = None
    # The team's own files scored by the judges, when they differ from the re-render.
    submitted_scores: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return not self.problems and all(c.status != FAILED for c in self.checks)

    def add(self, name: str, problems: list[str], ok_detail: str = "") -> None:
        """Record a check. A bundle chooses how many problems it has (200,000 planted links), so
        the verdict keeps at most MAX_PROBLEMS lines of at most 300 characters, one per line."""
        problems = [first_line(p) for p in problems]
        room = MAX_PROBLEMS - len(self.problems)
        kept = problems
        if len(problems) > room:
            kept = problems[: room - 1] + [f"{name}: {len(problems) - room + 1} more problems not listed"]
            kept = kept if room > 0 else []
        self.problems += kept
        self.checks.append(Check(name, FAILED if problems else OK, "; ".join(problems[:3]) or ok_detail))

    def to_json(self) -> dict[str, Any]:
        from harness import __version__

        data = asdict(self)
        data.update(
            kind="harness.verdict",
            verdict="pass" if self.passed else "fail",
            harness_version=__version__,
            verified=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        return data


def _allowed_base(ref: Any) -> bool:
    return allowed_base(ref)


def _base_shapes(base_model: str, notes: list[str]) -> dict[str, tuple[int, int]] | None:
    """Linear layer shapes of the base UNet when its config is on this machine; None otherwise."""
    from harness.config.refs import parse_ref
    from harness.lora.checks import unet_linear_shapes
    from harness.paths import cache_dir

    ref = parse_ref(base_model)
    config = None
    if ref.source == "tiny":
        from harness.models.tiny import ensure_tiny

        config = ensure_tiny(cache_dir()) / "unet" / "config.json"
    else:
        root = cache_dir() / "modelscope"
        found = sorted(root.glob("**/Kolors-diffusers/unet/config.json")) if root.is_dir() else []
        config = found[0] if found else None
    if config is None or not config.is_file():
        notes.append(f"LoRA shapes not checked against {base_model}: its UNet config is not on this machine")
        return None
    return unet_linear_shapes(config)


def _read_json(bundle: Path, rel: str) -> Any:
    """A JSON file of the bundle through `harness.safeio.read_json` (no link followed, no FIFO
    opened, at most the manifest's text cap, nested at most MAX_JSON_DEPTH); one line otherwise."""
    from harness.safeio import read_json

    return read_json(bundle / rel, max_bytes=mf.CAPS["text"], max_depth=MAX_JSON_DEPTH, what=rel)


def _story_checks(bundle: Path, v: Verdict, listed: set[str]):
    """Validate story.yaml, prompts.json and the run record; returns the parsed story or None."""
    from harness.config.story import load_story

    problems: list[str] = []
    if STORY not in listed:
        v.add("story", [f"{STORY}: not in the bundle"])
        return None
    try:
        # No file the story names is looked at (its LoRA is in lora/), no link followed.
        story = load_story(bundle / STORY, check_files=False, follow_links=False).story
    except HarnessError as e:
        v.add("story", [str(e).replace(str(bundle) + os.sep, "")])
        return None
    if (story.team, story.name) != (v.team, v.name):
        problems.append(
            f"{STORY}: team/name {story.team}/{story.name} differ from the manifest's {v.team}/{v.name}"
        )
    if not _allowed_base(story.base_model):
        problems.append(
            f"{STORY}: base_model {story.base_model!r} is not allowed (use {' or '.join(ALLOWED_BASES)})"
        )
    for i in range(1, story.panel_count + 1):
        if panel_file(i) not in listed:
            problems.append(f"{panel_file(i)}: panel {i} of {story.panel_count} is not in the bundle")
    expected = [
        {"index": i + 1, "seed": p.seed, "prompt": p.prompt, "negative_prompt": story.negative_for(i)}
        for i, p in enumerate(story.panels)
    ]
    if PROMPTS in listed:
        try:
            prompts = _read_json(bundle, PROMPTS)
        except HarnessError as e:
            problems.append(str(e))
        else:
            try:
                got = [{k: p.get(k) for k in ("index", "seed", "prompt", "negative_prompt")} for p in prompts]
            except (AttributeError, TypeError):
                got = None
            if got != expected:
                problems.append(f"{PROMPTS}: does not match the prompts and seeds in {STORY}")
    else:
        problems.append(f"{PROMPTS}: not in the bundle")
    v.add("story", problems, f"{story.panel_count} panels, base model {story.base_model}")
    return story


def _same(got: Any, want: Any) -> bool:
    """Equal and of the same kind (JSON `true` is not the number 1; 4 and 4.0 are one guidance)."""
    if isinstance(got, bool) or isinstance(want, bool):
        return got is want
    if isinstance(want, (int, float)):
        return isinstance(got, (int, float)) and got == want
    return type(got) is type(want) and got == want


# The settings a panel embeds that its story decides, in the order they are reported.
_HELD = ("negative_prompt", *SAMPLING_KEYS, "lora")


def _first_render_difference(params: PanelParams, story, index: int) -> str | None:
    """The first render setting a panel embeds that is not the story's, or None.

    The judges' re-render takes these settings from the panel itself, so each must be the
    story's: sampling (steps, guidance, size, scheduler), the panel's negative prompt, and the
    LoRA scale (`lora.scale`; no LoRA embedded when the story names none)."""
    want: dict[str, Any] = {
        "negative_prompt": story.negative_for(index),
        **story.sampling.model_dump(mode="json"),
    }
    for key in ("negative_prompt", *SAMPLING_KEYS):
        if not _same(getattr(params, key), want[key]):
            return key
    if story.lora is None:
        return None if params.lora is None else "lora"
    if params.lora is None or not _same(params.lora.scale, story.lora.scale):
        return "lora.scale"
    return None


def _embedded_problem(rel: str, raw: dict[str, Any], story, i: int) -> tuple[PanelParams | None, str | None]:
    """(the typed parameters of panel `i`, or None; the panel's problem line, or None)."""
    from harness.render.records import RecordError, parse

    try:
        params = parse(PanelParams, raw, f"{rel}: embedded parameters")
    except RecordError as e:
        # A setting the story decides, embedded with the wrong type, differs from the story.
        held = e.field if e.field == "lora.scale" else e.field.split(".")[0]
        if held in (*_HELD, "lora.scale"):
            return None, f"{rel}: embedded {held} differs from {STORY} (panel {i})"
        return None, str(e)
    panel = story.panels[i - 1]
    if params.prompt != panel.prompt or not _same(params.seed, panel.seed):
        return params, f"{rel}: embedded prompt or seed differ from panel {i} of {STORY}"
    differs = _first_render_difference(params, story, i - 1)
    if differs is not None:
        return params, f"{rel}: embedded {differs} differs from {STORY} (panel {i})"
    return params, None


def _content_checks(bundle: Path, v: Verdict, intact: dict[str, str], story, manifest) -> dict[str, Path]:
    """Open intact images and LoRA files safely; returns {sha256: path} of the sound LoRA files."""
    from harness.bundle.content import check_image
    from harness.lora.checks import check_lora

    size = (story.sampling.width, story.sampling.height) if story is not None else None
    image_problems: list[str] = []
    panel_params: dict[int, dict[str, Any]] = {}  # the JSON as found, by panel number
    embedded: dict[int, PanelParams] = {}  # the panels whose JSON is a PanelParams
    for rel in sorted(intact):
        if mf.kind_of(rel) != "image":
            continue
        is_panel = rel.startswith(f"{IMAGES_DIR}/")
        problems, params = check_image(bundle / rel, size if is_panel else None)
        image_problems += [f"{rel}: {p}" for p in problems]
        if is_panel and params is not None:
            stem = Path(rel).stem
            if stem.isdigit():
                panel_params[int(stem)] = params
    if story is not None:
        for i in range(1, story.panel_count + 1):
            params = panel_params.get(i)
            rel = panel_file(i)
            if rel not in intact:
                continue
            if params is None:
                image_problems.append(f"{rel}: no embedded harness parameters (cannot be re-rendered)")
                continue
            typed, problem = _embedded_problem(rel, params, story, i)
            if problem is not None:
                image_problems.append(problem)
            if typed is not None:
                embedded[i] = typed
            model = params.get("model")
            ref = (
                typed.model.ref
                if typed is not None
                else model.get("ref")
                if isinstance(model, dict)
                else None
            )
            if not _allowed_base(ref):
                image_problems.append(f"{rel}: embedded base model {ref!r} is not allowed")
    v.add("images", image_problems, f"{len(panel_params)} panels with embedded parameters")

    lora_problems: list[str] = []
    sound: dict[str, Path] = {}
    loras = [rel for rel in sorted(intact) if mf.kind_of(rel) == "lora"]
    shapes = None
    if loras and story is not None and _allowed_base(story.base_model):
        try:
            shapes = _base_shapes(story.base_model, v.notes)
        except Exception as e:  # a broken local cache must not hide the other checks
            v.notes.append(f"LoRA shapes not checked: {type(e).__name__}: {first_line(e)}")
    for rel in loras:
        problems, facts = check_lora(bundle / rel, shapes)
        lora_problems += [f"{rel}: {p}" for p in problems]
        if not problems:
            sound[intact[rel]] = bundle / rel
    used = {p.lora.sha256 for p in embedded.values() if p.lora is not None}
    for digest in sorted(used):
        if digest not in sound and not lora_problems:
            lora_problems.append(
                f"the panels were rendered with a LoRA (sha256 {digest[:12]}…) that the bundle does not hold"
            )
    if not loras:
        v.notes.append("no LoRA in the bundle (the competition asks for one)")
    v.add("lora", lora_problems, f"{len(sound)} LoRA file(s) sound" if loras else "none in the bundle")
    return sound


@dataclass
class Rerun:
    gate: str  # pass / fail / skipped
    reproducibility: str  # exact / reproducible / not reproducible / unchecked / refused / skipped
    problems: list[str]
    summary: dict[str, Any] | None = None  # on `scored_pixels`
    models: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # metric -> weights used
    scored_pixels: str | None = None  # re-rendered / submitted / mixed
    submitted_summary: dict[str, Any] | None = None  # the team's files, when they differ


def rerun_checks(bundle: Path, loras: Path | list[Path] | None, config: "ScoringConfig | None") -> Rerun:
    """THE seam to the scoring package: re-render for reproducibility and re-score the gate.

    Calls `harness.score.api.score_run` on the bundle as an untrusted folder: its images/ and
    story.yaml, and only `loras` (the bundle's own intact LoRA files) as LoRA candidates. The
    gate and every score rest on the judges' re-rendered pixels whenever the re-render ran
    (`scored_pixels`); the team's files are scored too when they differ, for the claims check.
    """
    from harness.config.scoring import scoring_for
    from harness.config.story import load_story
    from harness.score.api import score_run, summary

    # Schema only: the story's own lora.path is never followed (its LoRA is in lora/).
    story = load_story(bundle / STORY, check_files=False, check_tokens=False, follow_links=False)
    base_model = story.story.base_model
    if not allowed_base(base_model):  # _story_checks refused it already; never reached
        raise HarnessError(f"{STORY}: base_model {base_model!r} is not allowed")
    given = [] if loras is None else [loras] if isinstance(loras, Path) else list(loras)
    config = scoring_for(base_model, config)
    run = score_run(bundle, bundle / STORY, config, lora=given, untrusted=True)
    problems: list[str] = []
    aesthetic = run.metrics.get("aesthetic")
    gate = SKIPPED if aesthetic is None else ("pass" if run.valid else "fail")
    if aesthetic is not None and not run.valid:
        problems += [f"gate: {r}" for r in aesthetic.notes] or ["gate: the aesthetic gate failed"]
    if run.repro_error is not None:
        repro = "refused"
        problems.append(f"reproducibility: {run.repro_error}")
    elif run.reproducibility is not None:
        repro = run.reproducibility.verdict
        if run.reproducibility.failed:
            bad = [p for p in run.reproducibility.panels if p.verdict == "not reproducible"]
            problems += [f"reproducibility: {p.file}: {p.reason}" for p in bad[:8]]
    else:
        repro = SKIPPED
    if config.reproduce and run.repro_error is None and run.scored_pixels != "re-rendered":
        problems.append(
            f"scoring: only {sum(k == 're-rendered' for k in run.pixels)} of {len(run.panels)} panels "
            "were re-rendered; the judges score their own pixels only"
        )
    return Rerun(
        gate,
        repro,
        problems,
        summary(run),
        {n: m.models for n, m in run.metrics.items()},
        run.scored_pixels,
        summary(run, run.submitted_metrics) if run.submitted_metrics is not None else None,
    )


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

    story = _story_checks(bundle, v, listed)
    sound = _content_checks(bundle, v, intact, story, manifest)
    run_problems = []
    if RUN_JSON in listed:
        from harness.render.records import RunManifest, parse

        recorded = None
        try:
            run = parse(RunManifest, _read_json(bundle, RUN_JSON), f"{RUN_JSON}: not a readable run record")
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
        _claims_check(bundle, v, listed, result)
    return v


def _claims_check(bundle: Path, v: Verdict, intact: set[str], result: Rerun) -> None:
    """The team's scores.json against the judges' numbers (see harness.bundle.claims)."""
    from harness.bundle.claims import compare, read_claimed

    claimed, why = read_claimed(bundle, intact)
    if claimed is None or result.summary is None:
        v.checks.append(Check("claimed scores", SKIPPED, why or "nothing re-scored"))
        return
    # The team scored its own files: hold the claim against those pixels, scored by the judges.
    problems, notes = compare(claimed, result.models, result.submitted_summary or result.summary)
    v.notes += notes
    v.add("claimed scores", problems, "scores.json agrees with the re-score")


_MOVED = {
    "write_verdict",
    "find_bundles",
    "current_digest",
    "read_ledger",
    "Row",
    "verify_all",
    "summary_table",
}


def __getattr__(name: str):
    """The batch side (verify_all, the ledger, verdict writing) lives in harness.bundle.batch."""
    if name in _MOVED:
        from harness.bundle import batch

        return getattr(batch, name)
    raise AttributeError(name)
