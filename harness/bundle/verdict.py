"""A judge's verdict on one bundle: each check's status, the problems (bounded), the scores.

Owns: `Verdict` and `Check`, the status words, and the cap on how many problem lines a bundle
can put in its verdict. Writing verdict.json is `harness.bundle.batch.write_verdict`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from harness.errors import first_line

if TYPE_CHECKING:
    pass

OK, FAILED, SKIPPED, WARNING = "ok", "failed", "skipped", "warning"
MAX_PROBLEMS = 50  # lines kept in one verdict


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
