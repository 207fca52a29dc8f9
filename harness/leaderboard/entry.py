"""What one bundle contributes to the leaderboard: an `Entry`, read without trusting the bundle.

Owns: the rules that turn a bundle folder into a row. The bundle is untrusted: the manifest is
checked against the files (the same checks `harness verify` starts with), only intact listed
files are read, JSON and YAML with size caps and safe parsers. Numbers come from the judges'
verdict when `harness verify` wrote one that is still current (its record in the judges' ledger
names this bundle's digest and the verdict's sha256), otherwise from the participant's own
scores.json, and the row says which ("judges" or "claimed").

status is one of:
- valid: scored, aesthetic mean at or above the gate, all 8 panels, no failed check;
- invalid: a failed check (files altered, a failed verification, the gate missed); `reason` says
  which, in one line;
- unscored: no usable scores (no scores.json, or one that is corrupt); `reason` says why.
A broken bundle is always a row, never a crash and never dropped.

Every string a team wrote leaves `read_entry` through `plain`: capped in length, with control,
format (bidi, zero-width) and surrogate characters written as escapes, so the index holds
printable text the views can show as it is. A folder whose manifest names another team is shown
under its folder's team and name (the reason says what the manifest claims).
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import safeio
from harness.bundle import manifest as mf
from harness.bundle.batch import read_ledger
from harness.bundle.claims import number, read_claimed
from harness.errors import HarnessError
from harness.hashing import DigestCache, sha256_bytes
from harness.layout import IMAGES as IMAGES_DIR
from harness.layout import PROMPTS, STORY

# Bump when the rules that turn a bundle into a row change: an index built under other rules
# is re-read whole (a rebuild otherwise re-reads only bundles whose files changed).
RULES = 1
VALID, INVALID, UNSCORED = "valid", "invalid", "unscored"
JUDGES, CLAIMED = "judges", "claimed"
REQUIRED_PANELS = 8
NOT_CHECKED = "not checked"
MAX_PANELS = 64
# characters of each piece of team text kept in the index
CAPS = {
    "team": 100,
    "name": 100,
    "title": 200,
    "model_id": 200,
    "created": 64,
    "reason": 400,
    "reproducibility": 64,
    "prompt": 2000,
}
_ESCAPED = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}


def plain(text: Any, limit: int) -> str:
    """Untrusted text as printable text: control, format and surrogate characters escaped
    (``\\x1b``, ``\\u202e``, ``\\ud800``), cut to `limit` characters with an ellipsis."""
    if not isinstance(text, str):
        return ""
    out = text[: limit * 2]
    if not out.isprintable():  # printable text has no character of the escaped categories
        out = "".join(ascii(ch)[1:-1] if unicodedata.category(ch) in _ESCAPED else ch for ch in out)
    return out if len(out) <= limit and len(text) <= limit * 2 else out[: limit - 1] + "…"


def folder_key(root: Path, bundle: Path) -> str:
    """The bundle's folder relative to `root` (posix): as it is when it is a safe bundle path,
    else its printable escape (folder names with odd bytes still get a stable, storable key)."""
    key = bundle.relative_to(root).as_posix()
    if mf.unsafe_path_reason(key) is None:
        return key
    return ascii(key)[1:-1]


@dataclass
class Panel:
    index: int
    image: str | None  # bundle-relative path of an intact listed image, else None
    prompt: str = ""
    aesthetic: float | None = None
    consistency: float | None = None
    clip_t: float | None = None


@dataclass
class Entry:
    path: str  # bundle folder relative to the submissions root, posix
    digest: str  # the bundle digest (manifest bytes + hashes of the files as found)
    team: str
    name: str
    status: str
    reason: str = ""
    title: str = ""
    model_id: str = ""
    created: str = ""
    aesthetic: float | None = None
    consistency: float | None = None
    alignment: float | None = None
    reproducibility: str = NOT_CHECKED
    source: str = CLAIMED  # where the numbers come from: "judges" or "claimed"
    verdict: str | None = None  # the judges' pass/fail when a current verdict exists
    verdict_sha256: str | None = None
    panels: list[Panel] = field(default_factory=list)

    @property
    def search_text(self) -> str:
        words = [self.path, self.team, self.name, self.title, self.model_id, *(p.prompt for p in self.panels)]
        return "\n".join(words).casefold()

    def to_json(self) -> dict[str, Any]:
        # asdict's deep copy was a tenth of a first build; every field is a plain value
        return {**vars(self), "panels": [dict(vars(p)) for p in self.panels]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        panels = [Panel(**p) for p in data.get("panels", [])]
        return cls(**{**data, "panels": panels})


def ledger_token(record: Any) -> str:
    """What of the judges' ledger record for a bundle its row depends on (the fields
    `_trusted_verdict` reads), as a short hash: a rebuild re-reads the bundle when it changes."""
    if not isinstance(record, dict):
        return ""
    vouched = [record.get("digest"), record.get("verdict_sha256")]
    return sha256_bytes(json.dumps(vouched, ensure_ascii=True, default=repr).encode())[:32]


def _trusted_verdict(
    bundle: Path, key: str, digest: str, ledger: dict[str, Any]
) -> tuple[dict | None, str | None]:
    """(verdict, its sha256) when the judges' ledger vouches for verdict.json as it is now."""
    record = ledger.get(key)
    if not isinstance(record, dict):
        return None, None
    try:  # one bounded read (no link, no FIFO): the bytes hashed are the bytes parsed
        raw = safeio.read_bytes(bundle / mf.VERDICT, max_bytes=mf.CAPS["text"], what=mf.VERDICT)
        sha = sha256_bytes(raw)
        if record.get("digest") != digest or record.get("verdict_sha256") != sha:
            return None, None
        data = safeio.loads_json(raw.decode("utf-8"), source=mf.VERDICT)
    except (HarnessError, UnicodeDecodeError):
        return None, None
    return (data, sha) if isinstance(data, dict) else (None, None)


def _panels(bundle: Path, intact: set[str], scores: dict | None) -> list[Panel]:
    """Panels from scores.json (with per-panel numbers) or prompts.json, images only if intact."""
    rows: list[Any] = []
    if scores is not None and isinstance(scores.get("panels"), list):
        rows = scores["panels"]
    elif PROMPTS in intact:
        try:
            data = safeio.read_json(bundle / PROMPTS, max_bytes=mf.CAPS["text"], what=PROMPTS)
            rows = data if isinstance(data, list) else []
        except HarnessError:
            rows = []
    panels: list[Panel] = []
    for i, row in enumerate(rows[:MAX_PANELS]):
        if not isinstance(row, dict):
            continue
        index = row.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= MAX_PANELS:
            index = i + 1
        file = row.get("file")
        if isinstance(file, str) and "/" not in file:
            file = f"{IMAGES_DIR}/{file}"
        prompt = row.get("prompt")
        panels.append(
            Panel(
                index=index,
                image=file if file in intact and mf.kind_of(file) == "image" else None,
                prompt=plain(prompt, CAPS["prompt"]),
                aesthetic=number(row.get("aesthetic")),
                consistency=number(row.get("consistency")),
                clip_t=number(row.get("clip_t")),
            )
        )
    if not panels:  # nothing describes the panels: show the images the manifest vouches for
        images = sorted(p for p in intact if p.startswith(f"{IMAGES_DIR}/") and mf.kind_of(p) == "image")
        panels = [Panel(index=i + 1, image=p) for i, p in enumerate(images)]
    return panels


def _title(bundle: Path, intact: set[str]) -> str:
    """The story's title, or "" when story.yaml is absent, altered or not a readable story.

    An intact story.yaml was found to be a regular file by the manifest check; `story_title`
    reads it with the bounded YAML reader's limits (size, depth, aliases). The title is
    cosmetic, so any failure reads as no title (a hang is cut by the build's per-bundle time
    limit).
    """
    if STORY not in intact:
        return ""
    try:
        from harness.leaderboard.title import story_title

        title = story_title(bundle / STORY)
    except Exception:  # noqa: BLE001 - cosmetic field; the row must not depend on it
        return ""
    return plain(title, CAPS["title"])


def _cleaned(entry: Entry) -> Entry:
    """`entry` with every team-written string passed through `plain`."""
    for name in ("team", "name", "title", "model_id", "created", "reason", "reproducibility"):
        setattr(entry, name, plain(getattr(entry, name), CAPS[name]))
    return entry


def failed_entry(root: Path, bundle: Path, reason: str) -> Entry:
    """The row of a bundle the board could not read at all (`reason`: one line)."""
    key = folder_key(root, bundle)
    parts = key.split("/")
    team, name = (parts[0], parts[-1]) if len(parts) > 1 else ("?", parts[0])
    digest = sha256_bytes(b"failed\0" + key.encode())
    return _cleaned(Entry(key, digest, team, name, INVALID, reason=" ".join(reason.split())))


def read_entry(
    root: Path,
    bundle: Path,
    *,
    threshold: float,
    ledger: dict[str, Any] | None = None,
    digests: DigestCache | None = None,
) -> Entry:
    """The leaderboard row of `bundle` (a folder under `root`); never raises for bad content.

    `digests`: file hashes kept from the last build (see `harness.hashing.DigestCache`).
    """
    root = Path(root)
    key = folder_key(root, bundle)
    reason = mf.unsafe_path_reason(bundle.relative_to(root).as_posix())
    if reason is not None:
        return failed_entry(root, bundle, f"folder name '{key}' not allowed ({reason})")
    parts = key.split("/")
    team, name = (parts[0], parts[-1]) if len(parts) > 1 else ("?", parts[0])
    ledger = read_ledger(root) if ledger is None else ledger
    try:
        manifest, raw = mf.read(bundle)
    except HarnessError as e:
        try:
            raw = safeio.read_bytes(bundle / mf.MANIFEST, max_bytes=mf.MAX_MANIFEST_BYTES)
        except HarnessError:
            raw = b""
        # unique per folder: two broken bundles with the same bytes are still two rows
        digest = sha256_bytes(b"unreadable\0" + key.encode() + b"\0" + raw)
        return _cleaned(Entry(key, digest, team, name, UNSCORED, reason=str(e)))

    problems, actual, _ = mf.check_files(bundle, manifest, digests)
    digest = mf.bundle_digest(raw, actual)
    intact = {e.path for e in manifest.files if actual.get(e.path) == e.sha256}
    entry = Entry(
        key,
        digest,
        manifest.team,
        manifest.name,
        VALID,
        title=_title(bundle, intact),
        model_id=manifest.model_id,
        created=manifest.created,
    )
    # The folder layout names the team (`<team>/<name>/` or `<team>/`): a manifest claiming
    # another team or name is shown under the folder's name, so no one ranks as another team.
    if len(parts) == 2 and (manifest.team, manifest.name) != (parts[0], parts[1]):
        claimed = plain(manifest.team, CAPS["team"]) + "/" + plain(manifest.name, CAPS["name"])
        problems.insert(0, f"folder {key} holds the bundle of {claimed}")
        entry.team, entry.name = parts
    elif len(parts) == 1 and manifest.team != parts[0]:
        claimed = plain(manifest.team, CAPS["team"])
        problems.insert(0, f"folder {key} holds the bundle of team {claimed}")
        entry.team = parts[0]

    scores, unscored_reason = read_claimed(bundle, intact)
    entry.panels = _panels(bundle, intact, scores)
    summary: dict[str, Any] = scores["summary"] if scores else {}
    if scores is not None and isinstance(scores.get("reproducibility"), dict):
        repro = scores["reproducibility"].get("verdict")
        entry.reproducibility = repro if isinstance(repro, str) and repro else NOT_CHECKED

    verdict, entry.verdict_sha256 = _trusted_verdict(bundle, key, digest, ledger)
    gate = None
    if verdict is not None:
        entry.source = JUDGES
        entry.verdict = verdict.get("verdict") if verdict.get("verdict") in ("pass", "fail") else None
        judged = verdict.get("scores")
        if isinstance(judged, dict) and number(judged.get("aesthetic_mean")) is not None:
            summary, unscored_reason = judged, ""
        else:  # the judges only checked files: the numbers are still the participant's
            entry.source = CLAIMED if scores is not None else JUDGES
        if verdict.get("reproducibility") not in (None, "skipped"):
            entry.reproducibility = str(verdict["reproducibility"])
        if verdict.get("gate") in ("pass", "fail"):
            gate = verdict["gate"]
        if entry.verdict == "fail":
            failed = [p for p in verdict.get("problems") or [] if isinstance(p, str)]
            problems += failed[:1] or ["the judges' verification failed"]

    entry.aesthetic = number(summary.get("aesthetic_mean"))
    entry.consistency = number(summary.get("clip_i"))
    entry.alignment = number(summary.get("clip_t_mean"))
    panels_scored = summary.get("panels")

    if problems:
        entry.status, entry.reason = INVALID, problems[0]
    elif entry.aesthetic is None:
        entry.status, entry.reason = UNSCORED, unscored_reason or "no aesthetic score"
    elif gate == "fail" or (gate is None and entry.aesthetic < threshold):
        entry.status = INVALID
        entry.reason = f"aesthetic mean {entry.aesthetic:.4f} is below the gate {threshold:g}"
    elif isinstance(panels_scored, int) and panels_scored < REQUIRED_PANELS:
        entry.status = INVALID
        entry.reason = f"{panels_scored} panels scored; the competition needs {REQUIRED_PANELS}"
    return _cleaned(entry)
