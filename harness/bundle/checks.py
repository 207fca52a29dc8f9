"""The file-level checks of an untrusted bundle: story, embedded parameters, images, LoRA files,
and the team's claimed scores against the judges' numbers.

Every function records its findings on the `Verdict` it is given, one line per problem, and
opens only files the manifest lists and that are intact regular files, with the safe readers
(see `harness.bundle.verify` for the order they run in).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.bundle import manifest as mf
from harness.errors import HarnessError, first_line
from harness.layout import IMAGES as IMAGES_DIR
from harness.layout import PROMPTS, STORY, panel_file
from harness.render.records import SAMPLING_KEYS, PanelParams
from harness.score.reproduce import ALLOWED_BASES, allowed_base

if TYPE_CHECKING:
    pass

from harness.bundle.rerun import Rerun
from harness.bundle.verdict import SKIPPED, Check, Verdict

MAX_JSON_DEPTH = 16  # prompts.json and run.json as the harness writes them are 3 levels deep
# Base models a bundle may name (ALLOWED_BASES, from harness.score.reproduce): the real Kolors
# and the built-in tiny one. `local:` paths are refused: a bundle must not make the judges'
# machine load a folder the bundle chose.


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


def read_bundle_json(bundle: Path, rel: str) -> Any:
    """A JSON file of the bundle through `harness.safeio.read_json` (no link followed, no FIFO
    opened, at most the manifest's text cap, nested at most MAX_JSON_DEPTH); one line otherwise."""
    from harness.safeio import read_json

    return read_json(bundle / rel, max_bytes=mf.CAPS["text"], max_depth=MAX_JSON_DEPTH, what=rel)


def story_checks(bundle: Path, v: Verdict, listed: set[str]):
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
            prompts = read_bundle_json(bundle, PROMPTS)
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


def content_checks(bundle: Path, v: Verdict, intact: dict[str, str], story, manifest) -> dict[str, Path]:
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


def claims_check(bundle: Path, v: Verdict, intact: set[str], result: Rerun) -> None:
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
