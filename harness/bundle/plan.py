"""Plan a submission bundle from a finished run folder: every check and read, nothing written.

Owns: the checks `harness bundle` makes before it writes anything (the model id, the run's
completeness, the LoRA files' hashes and content, the folder the bundle goes to) and the
`BundlePlan` they produce. `writer.write_plan` turns a plan into files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.bundle import manifest as mf
from harness.config.naming import ModelId, model_id
from harness.errors import HarnessError
from harness.layout import (
    LORA_DIR,
    RUN_MANIFEST,
    SCORES,
    STORY,
    TRAINING_JSON,
)
from harness.ownership import Purpose, inspect
from harness.render.records import RunManifest

NAMESPACE_ENV = "MODELSCOPE_NAMESPACE"


@dataclass(frozen=True)
class BundlePlan:
    """What a bundle will hold and where, every input checked (see `plan_bundle`)."""

    run_dir: Path
    run: RunManifest
    story: Any  # harness.config.story.Story: the exact story rendered
    model_id: ModelId
    target: Path  # <out_root>/<team>/<name>
    lora_files: tuple[Path, ...]
    lora_facts: dict[str, dict[str, Any]]  # file name -> check_lora's facts (format, rank, ...)
    story_sha256: str
    lora_sha256: frozenset[str]
    training: dict[str, Any] | None  # the training settings for the model card
    scores: Any  # the run's scores.json, or None when the run was not scored
    license: str
    force: bool


def plan_bundle(
    run_dir: str | Path,
    *,
    out_root: str | Path = "submissions",
    namespace: str | None = None,
    loras: list[Path] | tuple[Path, ...] = (),
    training: dict[str, Any] | None = None,
    license: str = "apache-2.0",
    force: bool = False,
) -> BundlePlan:
    """Check everything `write_bundle` needs and return the plan; reads only, writes nothing.

    `namespace` defaults to $MODELSCOPE_NAMESPACE, else the team name. `loras` adds LoRA files in
    other formats. An existing bundle of the same story is replaced (a re-bundle); one of a
    different story, or whose LoRA would be lost, only with `force`; anything else never.
    """
    from harness.hashing import sha256_file
    from harness.lora.checks import check_lora

    run_dir = Path(run_dir)
    run = _check_run(run_dir)
    story = _run_story(run_dir)
    ns = namespace or os.environ.get(NAMESPACE_ENV) or story.team
    mid = model_id(ns, story.team, story.name)  # validated before anything is written
    lora_files = _collect_loras(run_dir, run, story, list(loras))
    facts: dict[str, dict[str, Any]] = {}
    for p in lora_files:
        problems, info = check_lora(p)
        if problems:
            raise HarnessError(f"{p}: cannot bundle this LoRA: {problems[0]}")
        facts[p.name] = info
    training_settings = _training_settings(run_dir, training)
    scores_path = run_dir / SCORES
    scores = _read_json(scores_path, "scores") if scores_path.is_file() else None
    target = Path(out_root) / story.team / story.name
    story_sha = sha256_file(run_dir / STORY)
    lora_shas = frozenset(sha256_file(p) for p in lora_files)
    check_target(target, story_sha, lora_shas, force=force)
    return BundlePlan(
        run_dir=run_dir,
        run=run,
        story=story,
        model_id=mid,
        target=target,
        lora_files=tuple(lora_files),
        lora_facts=facts,
        story_sha256=story_sha,
        lora_sha256=lora_shas,
        training=training_settings,
        scores=scores,
        license=license,
        force=force,
    )


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise HarnessError(f"{path}: unreadable {what} ({e})") from None


def _run_story(run_dir: Path):
    from harness.config.story import load_story

    # The exact story rendered, for its settings: the files it names were checked at render time.
    return load_story(run_dir / STORY, check_files=False, check_tokens=False, follow_links=False).story


def _story_lora(run_dir: Path, run: RunManifest, story) -> Path | None:
    """The LoRA file the story used, found beside the original story, checked against its hash."""
    from harness.locate import find_by_sha256

    rec = run.lora
    if rec is None or story.lora is None:
        return None
    # A story that trains its LoRA (lora.train) names no file: `harness run` keeps the trained
    # formats in RUN_DIR/lora/, and the hash recorded with the panels picks the one rendered with.
    p = Path(story.lora.path or rec.file or "").expanduser()
    candidates = [p] if p.is_absolute() else []
    if not p.is_absolute():
        if run.story.source:
            candidates.append(Path(run.story.source).parent / p)
        candidates += [run_dir / p, run_dir / LORA_DIR / p.name]
    found, _ = find_by_sha256(candidates, rec.sha256)
    if found is not None:
        return found
    looked = ", ".join(str(c) for c in candidates)
    raise HarnessError(
        f"{run_dir}: the LoRA the panels were rendered with ({rec.file}, sha256 "
        f"{rec.sha256[:12]}…) was not found unchanged (looked at {looked}); "
        "pass it with --lora or render again"
    )


def _collect_loras(run_dir: Path, run: RunManifest, story, extra: list[Path]) -> list[Path]:
    files: list[Path] = []
    used = _story_lora(run_dir, run, story)
    if used is not None:
        files.append(used)
    trained = run_dir / LORA_DIR  # the training stage may leave its formats here
    if trained.is_symlink():  # it would ship whatever folder it points at, for public upload
        raise HarnessError(f"{trained}: is a symlink; a run folder's lora/ must be its own folder")
    if trained.is_dir():
        for entry in sorted(os.scandir(trained), key=lambda e: e.name):
            if Path(entry.name).suffix.lower() not in mf.LORA_EXT:
                continue
            if not entry.is_file(follow_symlinks=False):
                raise HarnessError(f"{trained / entry.name}: is not a plain file (a link?); not bundled")
            files.append(Path(entry.path))
    for p in extra:
        p = Path(p)
        if not p.is_file():
            raise HarnessError(f"--lora: {p}: no such file")
        files.append(p)
    out: list[Path] = []
    names: set[str] = set()
    for p in files:
        if p.name in names:
            if any(q.samefile(p) for q in out if q.name == p.name):
                continue
            raise HarnessError(f"two different LoRA files are named {p.name}; rename one")
        reason = mf.unsafe_path_reason(f"{LORA_DIR}/{p.name}") or (
            None if p.suffix.lower() in mf.LORA_EXT else "not a LoRA file type"
        )
        if reason:
            raise HarnessError(f"{p}: cannot bundle this LoRA: {reason}")
        names.add(p.name)
        out.append(p)
    return out


def _check_run(run_dir: Path) -> RunManifest:
    from harness.hashing import sha256_file
    from harness.render.outdir import read_run_manifest

    if not run_dir.is_dir():
        raise HarnessError(f"{run_dir}: no such run folder")
    run = read_run_manifest(run_dir)
    if run is None:
        raise HarnessError(f"{run_dir}: no {RUN_MANIFEST} (not a harness run folder)")
    if run.status != "complete":
        raise HarnessError(f"{run_dir}: the run is {run.status!r}, not complete; render every panel first")
    for p in run.panels:
        if mf.unsafe_path_reason(p.file) is not None:
            raise HarnessError(f"{run_dir}: {RUN_MANIFEST} names panel file {p.file!r} outside the run")
        f = run_dir / p.file
        if not f.is_file() or sha256_file(f) != p.sha256:
            raise HarnessError(f"{f}: missing or changed since it was rendered; render again")
    if not (run_dir / STORY).is_file():
        raise HarnessError(f"{run_dir}: no {STORY} (the exact story file used)")
    return run


def _training_settings(run_dir: Path, training: dict[str, Any] | None) -> dict[str, Any] | None:
    if training is not None:
        return dict(training)
    path = run_dir / TRAINING_JSON
    if path.is_file():
        data = _read_json(path, "training settings")
        return data if isinstance(data, dict) else None
    return None


def _bundle_stray(folder: Path, marker: dict[str, Any]) -> str | None:
    """The first file in a bundle folder that its manifest does not list (links count)."""
    files = marker.get("files") if isinstance(marker.get("files"), list) else []
    listed = {f.get("path") for f in files if isinstance(f, dict)} | {mf.MANIFEST, mf.VERDICT}
    found, problems = mf.walk(folder)
    if problems:
        return problems[0].split(": ", 1)[0]
    return next((rel for rel in found if rel not in listed), None)


BUNDLE = Purpose("a bundle", mf.MANIFEST, "harness.bundle", mf.MAX_MANIFEST_BYTES, _bundle_stray)


def check_target(
    target: Path, story_sha256: str, lora_sha256: "set[str] | frozenset[str]", *, force: bool
) -> bool:
    """Whether `target` holds a bundle this one may replace (False: nothing there yet).

    Refuses with one line: a link or file at the team or bundle folder, a folder the harness did
    not write, and, without `force`, the bundle of a different story or one whose LoRA would be
    lost. Reads only; nothing is written."""
    team_dir = target.parent
    if team_dir.is_symlink():
        raise HarnessError(f"{team_dir}: is a symlink; the harness does not write a bundle through it")
    owned = inspect(target, BUNDLE)
    if owned.state != "ours":
        return owned.state == "empty"
    marker = owned.marker or {}
    hashes = {f.get("path"): f.get("sha256") for f in marker.get("files", []) if isinstance(f, dict)}
    loras = (
        [p for p in marker.get("lora", []) if isinstance(p, str)]
        if isinstance(marker.get("lora"), list)
        else []
    )
    lost = [p for p in loras if hashes.get(p) not in lora_sha256]
    if force:
        return True
    if hashes.get(STORY) != story_sha256:
        raise HarnessError(
            f"{target}: holds the bundle of a different story with this team and name (story.yaml "
            "differs); pass --force to replace it and its LoRA, or give this story another name"
        )
    if lost:
        raise HarnessError(
            f"{target}: holds {lost[0]}, a LoRA this bundle would not keep; pass --force to replace "
            "it, or give this story another name"
        )
    return True
