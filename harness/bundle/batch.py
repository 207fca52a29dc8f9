"""Judging many untrusted bundles: one bundle's guarded unit of work, the batch loop, the ledger.

Owns: `judge_one` (verify one bundle under a guard and a time limit, write its verdict without
following anything planted, and return the verdict as data), `verify_all` (the local loop over
a folder of bundles), the judges' ledger beside the bundles, and the summary table. A bundle that
raises, hangs past the time limit or cannot take its verdict file becomes a failed row with its
reason; the batch and the ledger always go on. What a verdict says is `verify.py`'s business.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from harness.bundle import manifest as mf
from harness.bundle.verify import Verdict, verify_bundle
from harness.errors import HarnessError, first_line

LEDGER = ".verify-ledger.json"  # judge-side record for --all, outside every bundle
LOCK = ".verify-ledger.lock"
DEFAULT_TIME_LIMIT = 1800.0  # seconds per bundle; a 50-step 1024 px re-render takes ~15 s on a GPU
MAX_LEDGER_BYTES = 256 << 20
LEDGER_PROBLEMS = 5  # problems kept per bundle in the ledger (the verdict file has them all)
LEDGER_EVERY_S = 20.0  # the ledger is rewritten at least this often during a batch, and at its end
LEDGER_COST_FACTOR = 50.0  # ... and sooner while a rewrite costs under 1/50 of the time since the last
_STALE_TMP = re.compile(r"\.verdict\.json\.[0-9a-f]{16}\.tmp")


class BundleTimeout(BaseException):
    """Raised in the judging thread when a bundle runs past its time limit. A BaseException, so
    that no `except Exception` on the way (library or ours) swallows it."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise BundleTimeout in this thread after `seconds` (SIGALRM; the main thread only: in
    other threads, or with no limit, the body runs unbounded)."""
    usable = (
        seconds
        and seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def _expire(signum, frame):
        raise BundleTimeout()

    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def clear_stale_temps(bundle: Path) -> None:
    """Remove verdict temp files a killed verify left in `bundle` (only the harness's own names;
    unlinking a name never follows it), so a rerun does not count them as extra files."""
    try:
        with os.scandir(bundle) as it:  # bounded: a bundle folder may hold any number of names
            names = [e.name for e in itertools.islice(it, MAX_ENTRIES) if _STALE_TMP.fullmatch(e.name)]
    except OSError:
        return
    for name in names:
        with contextlib.suppress(OSError):
            os.unlink(bundle / name)


def write_verdict(bundle: Path, verdict: Verdict) -> Path:
    """verdict.json in `bundle` through `safeio.write_atomic`: a planted link at the name (or at any
    temp name) is never written through; a planted folder there is refused with one line."""
    from harness.safeio import write_json

    return write_json(Path(bundle) / mf.VERDICT, verdict.to_json())


MAX_ENTRIES = 10_000  # entries read from one folder of the root (a team has a few bundles)


def find_bundles(root: Path, problems: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Folders under `root` (at most two levels: <team>/<name>) that hold a manifest.json.

    Dot folders and symlinked folders are skipped. At most MAX_ENTRIES entries are read from any
    one folder, so a team folder of millions of entries costs a bounded time; a folder that
    could not be listed, or not wholly, is added to `problems` as (folder, why) and the listing
    goes on. `verify --all` warns about them; the leaderboard shows them as rows."""

    def note(folder: Path, why: str) -> None:
        if problems is not None:
            problems.append((folder, why))

    def folders(parent: Path) -> list[Path]:
        found: list[Path] = []
        try:
            with os.scandir(parent) as it:
                for n, entry in enumerate(it):
                    if n >= MAX_ENTRIES:
                        note(parent, f"more than {MAX_ENTRIES} entries; the rest were not read")
                        break
                    if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                        found.append(Path(entry.path))
        except OSError as e:
            note(parent, f"folder cannot be listed ({e.strerror or first_line(e)})")
        return sorted(found)

    found = []
    for team in folders(root):
        if (team / mf.MANIFEST).is_file():
            found.append(team)
            continue
        for b in folders(team):
            if os.path.lexists(b / mf.MANIFEST):
                found.append(b)
    return found


def current_digest(bundle: Path) -> str | None:
    """The bundle digest as the files are now (None when the manifest is unreadable)."""
    try:
        manifest, raw = mf.read(bundle)
    except HarnessError:
        return None
    _, actual, _ = mf.check_files(bundle, manifest)
    return mf.bundle_digest(raw, actual)


def read_ledger(root: Path) -> dict[str, Any]:
    """The judges' record of what `verify --all` checked: {bundle key: {digest, verdict_sha256,
    verdict, written}}. Empty when absent, unreadable, a link or not a mapping (the next run
    rebuilds it)."""
    from harness.safeio import read_json

    try:
        data = read_json(Path(root) / LEDGER, max_bytes=MAX_LEDGER_BYTES, max_depth=64)
    except HarnessError:
        return {}
    return data if isinstance(data, dict) else {}


def write_ledger(root: Path, ledger: dict[str, Any]) -> None:
    import json

    from harness.safeio import write_atomic

    # ASCII: a folder name that is not UTF-8 (a lone surrogate) is written as an escape
    write_atomic(Path(root) / LEDGER, json.dumps(ledger, ensure_ascii=True, separators=(",", ":")))


@contextlib.contextmanager
def ledger_lock(root: Path) -> Iterator[None]:
    """One `verify --all` per root at a time: a second one refuses with one line instead of
    racing on the ledger. flock is released when the process dies, so kill -9 never leaves a
    stale lock."""
    import fcntl

    path = Path(root) / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise HarnessError(f"{path}: cannot take the judges' lock ({e.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                busy = f"{root}: another `harness verify --all` is running on this folder"
                raise HarnessError(busy) from None
            raise
        yield
    finally:
        os.close(fd)


@dataclass
class Row:
    """One bundle of a batch: its verdict (as written, or as the ledger recorded it when skipped),
    which worker judged it, the seconds that took, and how many tries (a worker that died)."""

    bundle: Path
    verdict: dict[str, Any]
    skipped: bool
    worker: str = "local"
    seconds: float = 0.0
    attempts: int = 1


def assess(bundle: Path, *, rerun: bool, scoring, time_limit_s: float | None, expected=None) -> Verdict:
    """THE unit of work of every backend: verify_bundle under the time limit, writing nothing.

    Whatever goes wrong becomes the verdict's reason. The local loop (through `judge_one`) and
    the Ray workers (harness.bundle.ray_backend) call this, so the two cannot judge differently;
    the verdict file and the ledger are written by the caller that owns the batch."""
    try:
        with time_limit(time_limit_s):
            return verify_bundle(bundle, rerun=rerun, scoring=scoring, expected=expected)
    except BundleTimeout:
        from harness.render.pipelines import release_pipeline
        from harness.score.models import release_scoring_models

        # a render or a device move cut short may leave the kept models half-swapped
        release_pipeline()
        release_scoring_models()
        v = Verdict(str(bundle))
        v.add("bundle", [f"stopped: verifying took longer than the limit of {time_limit_s:g} s"])
        return v
    except HarnessError as e:
        v = Verdict(str(bundle))
        v.add("bundle", [str(e)])
        return v
    except RecursionError:
        v = Verdict(str(bundle))
        v.add("bundle", ["refused: nested too deeply to check"])
        return v
    except MemoryError:
        v = Verdict(str(bundle))
        v.add("bundle", ["refused: checking it ran out of memory"])
        return v
    except Exception as e:  # a bug must not stop the judges' batch; it is reported in the row
        v = Verdict(str(bundle))
        v.add("bundle", [f"internal error while verifying: {type(e).__name__}: {first_line(e)}"])
        return v


def judge_one(
    bundle: Path,
    *,
    rerun: bool = True,
    scoring=None,
    time_limit_s: float | None = DEFAULT_TIME_LIMIT,
    expected: tuple[str, str | None] | None = None,
) -> tuple[Verdict, Path | None]:
    """Judge one bundle: clear stale temps, `assess` it, write verdict.json safely.

    Returns (verdict, path written or None). When the verdict cannot be written safely (a folder
    or special file planted at verdict.json, a read-only bundle) the verdict fails with that
    reason and is still returned, so the caller can record it in the ledger.
    """
    clear_stale_temps(bundle)
    v = assess(bundle, rerun=rerun, scoring=scoring, time_limit_s=time_limit_s, expected=expected)
    return v, save_verdict(bundle, v)


def save_verdict(bundle: Path, v: Verdict) -> Path | None:
    """Write `v` as the bundle's verdict.json (`write_verdict`); the path, or None when it cannot
    be written, and then the verdict fails with that reason (the batch goes on with it in hand)."""
    try:
        return write_verdict(bundle, v)
    except HarnessError as e:
        v.add("verdict file", [f"not written: {e}"])
        return None
    except Exception as e:
        v.add("verdict file", [f"not written: {type(e).__name__}: {first_line(e)}"])
        return None


def judge_settings(*, rerun: bool, scoring) -> str:
    """What a verdict depends on besides the bundle: re-render or not, the scoring config (models,
    pins, threshold, tolerances) and the harness version. A verdict is reused only under the same
    settings, so a quick `--no-rerun` pass never stands in for a full one."""
    import json

    from harness import __version__
    from harness.hashing import sha256_bytes

    config = scoring.model_dump(mode="json") if scoring is not None else None
    settings = {"rerun": rerun, "scoring": config, "harness": __version__}
    return sha256_bytes(json.dumps(settings, sort_keys=True, default=str).encode())


def _skip_unchanged(bundle: Path, entry: dict[str, Any], settings: str) -> dict[str, Any] | None:
    """The recorded verdict when the ledger vouches for it (same digest, same judge settings,
    same verdict bytes)."""
    from harness.hashing import sha256_bytes
    from harness.safeio import loads_json, read_bytes

    if not entry or entry.get("settings") != settings:
        return None
    if entry.get("digest") is None or entry.get("digest") != current_digest(bundle):
        return None
    if not entry.get("written", True):
        recorded = entry.get("verdict")
        return recorded if isinstance(recorded, dict) else None
    try:
        raw = read_bytes(bundle / mf.VERDICT, max_bytes=mf.CAPS["text"])
        if sha256_bytes(raw) != entry.get("verdict_sha256"):
            return None
        data = loads_json(raw.decode("utf-8"), source=mf.VERDICT, max_depth=16)
    except (HarnessError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def expected_for(root: Path, bundle: Path) -> tuple[str, str | None]:
    """(team, name) the folder layout gives a bundle: `<team>/<name>/`, or (team, None) for
    `<team>/`; the manifest must claim the same."""
    parts = bundle.relative_to(root).as_posix().split("/")
    return parts[0], parts[1] if len(parts) == 2 else None


def recorded_row(root: Path, bundle: Path, ledger: dict, *, settings: str, time_limit_s) -> Row | None:
    """The bundle's row from the ledger when it is unchanged since its recorded verdict (same
    digest, same judge settings, same verdict bytes); None when it must be judged."""
    key = bundle.relative_to(root).as_posix()
    try:  # hashing an unchanged bundle is bounded by the same limit as judging it
        with time_limit(time_limit_s):
            recorded = _skip_unchanged(bundle, ledger.get(key) or {}, settings)
    except (Exception, BundleTimeout):  # an unreadable bundle is simply verified again
        recorded = None
    return Row(bundle, recorded, True, worker="ledger") if recorded is not None else None


def record(root: Path, bundle: Path, ledger: dict, v: Verdict, path: Path | None, *, settings: str) -> dict:
    """Enter a fresh verdict in the ledger (in memory; `LedgerSaver` writes it) and return the
    verdict as data. `path`: the verdict.json written, or None when it could not be."""
    from harness.hashing import sha256_file

    data = v.to_json()
    digest = None
    if path is not None:
        try:
            digest = sha256_file(path, untrusted=True)
        except OSError:
            path = None
    ledger[bundle.relative_to(root).as_posix()] = {
        "settings": settings,
        "digest": v.digest,
        "verdict_sha256": digest,
        "written": path is not None,
        "verdict": _ledger_copy(data),
    }
    return data


def _verify_one(
    root: Path, bundle: Path, ledger: dict, *, force: bool, rerun: bool, scoring, time_limit_s, settings: str
) -> Row:
    """One bundle of a batch: its ledger-recorded verdict when nothing changed, else a fresh one."""
    if not force:
        row = recorded_row(root, bundle, ledger, settings=settings, time_limit_s=time_limit_s)
        if row is not None:
            return row
    start = time.monotonic()
    expected = expected_for(root, bundle)
    v, path = judge_one(bundle, rerun=rerun, scoring=scoring, time_limit_s=time_limit_s, expected=expected)
    data = record(root, bundle, ledger, v, path, settings=settings)
    return Row(bundle, data, False, seconds=time.monotonic() - start)


class LedgerSaver:
    """When to rewrite the ledger during a batch: at most every LEDGER_EVERY_S seconds, and sooner
    while rewriting it is cheap (waiting at least LEDGER_COST_FACTOR times the last rewrite), so
    that a batch killed with kill -9 loses little work while rewriting it never costs more than a
    few percent of the batch (rewriting it per bundle was quadratic)."""

    def __init__(self, root: Path, ledger: dict):
        self.root, self.ledger = root, ledger
        self.saved, self.cost = time.monotonic(), 0.0

    def maybe(self) -> None:
        if time.monotonic() - self.saved >= min(LEDGER_EVERY_S, LEDGER_COST_FACTOR * self.cost):
            self.now()

    def now(self) -> None:
        start = time.monotonic()
        write_ledger(self.root, self.ledger)
        self.saved = time.monotonic()
        self.cost = self.saved - start


def start_batch(root: Path) -> list[Path]:
    """The bundles under `root` for a batch, warning on stderr about folders not (wholly) listed."""
    unlisted: list[tuple[Path, str]] = []
    bundles = find_bundles(root, unlisted)
    for folder, why in unlisted:
        where = folder.relative_to(root).as_posix() if folder != root else "."
        print(f"harness: warning: {_shown(where)}: {why} (not judged)", file=sys.stderr)
    return bundles


def check_root(root: str | Path) -> Path:
    root = Path(root)
    if root.is_symlink() or not root.is_dir():
        raise HarnessError(f"{root}: no such folder")
    return root


def _ledger_copy(verdict: dict[str, Any]) -> dict[str, Any]:
    """What the ledger keeps of a verdict: the summary and the first problems, so that the ledger
    of thousands of bundles stays small whatever one bundle's verdict holds."""
    kept = {k: v for k, v in verdict.items() if k not in ("checks", "notes", "problems")}
    kept["problems"] = list(verdict.get("problems") or [])[:LEDGER_PROBLEMS]
    return kept


def verify_all(
    root: str | Path,
    *,
    force: bool = False,
    rerun: bool = True,
    scoring=None,
    progress: bool = False,
    time_limit_s: float | None = DEFAULT_TIME_LIMIT,
) -> list[Row]:
    """Verify every bundle under `root`, writing each verdict.json; no bundle stops the batch.

    A bundle is skipped when the judges' ledger (`root/.verify-ledger.json`, outside every
    bundle) records the same digest and the verdict.json it wrote is unchanged, unless `force`.
    The ledger is written at least every LEDGER_EVERY_S seconds and at the end, so a batch killed
    midway resumes close to where it stopped (rewriting it per bundle was quadratic).
    `progress`: a bar on stderr naming the bundle being verified and counting the failures.
    `time_limit_s`: per bundle; past it the bundle is a failed row (None or 0: no limit).
    """
    from tqdm.auto import tqdm

    from harness.render.pipelines import release_pipeline
    from harness.score.models import release_scoring_models

    root = check_root(root)
    rows: list[Row] = []
    with ledger_lock(root):
        ledger = read_ledger(root)
        bundles = start_batch(root)
        bar = tqdm(bundles, desc="verifying", unit="bundle", disable=not progress or not bundles)
        saver, failed = LedgerSaver(root, ledger), 0
        settings = judge_settings(rerun=rerun, scoring=scoring)
        try:  # one Kolors for all re-renders (each bundle's LoRA swapped in), one set of scorers
            for b in bar:
                bar.set_postfix_str(_shown(b.relative_to(root).as_posix()), refresh=True)
                rows.append(
                    _verify_one(
                        root,
                        b,
                        ledger,
                        force=force,
                        rerun=rerun,
                        scoring=scoring,
                        time_limit_s=time_limit_s,
                        settings=settings,
                    )
                )
                saver.maybe()
                if _failed(rows[-1]):
                    failed += 1
                bar.set_description(f"verifying ({failed} failed)" if failed else "verifying", refresh=False)
        finally:
            bar.close()
            release_pipeline()
            release_scoring_models()
            saver.now()
    return rows


def _failed(row: Row) -> bool:
    return row.verdict.get("verdict") != "pass"


def _shown(text: str, limit: int = 60) -> str:
    """A folder name or verdict field as one printable line (a team picks them)."""
    from harness.errors import one_line

    return one_line(text, limit)


def summary_table(rows: list[Row]) -> str:
    """team, name, files ok, gate, reproducibility, verdict, folder: one line per bundle. The
    folder is shown too: team and name are what the manifest claims, and look-alike folders
    (`demo` and a Cyrillic `dеmo`) would otherwise print the same row."""
    header = ("team", "name", "files ok", "gate", "reproducibility", "verdict", "folder")
    lines = [header]
    for r in rows:
        d = r.verdict
        lines.append(
            (
                _shown(str(d.get("team") or "?")),
                _shown(str(d.get("name") or r.bundle.name)),
                f"{d.get('files_ok', 0)}/{d.get('files_total', 0)}",
                _shown(str(d.get("gate"))),
                _shown(str(d.get("reproducibility"))),
                _shown(str(d.get("verdict"))) + (" (unchanged, skipped)" if r.skipped else ""),
                _shown(f"{r.bundle.parent.name}/{r.bundle.name}"),
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines]
    return "\n".join(out)
