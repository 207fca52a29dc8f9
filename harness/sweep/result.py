"""What a sweep is and what it found, as typed objects: the checked request (`SweepSetup`) and
the result the writers and the pick page read (`SweepResult`). No logic beyond the gate."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.sweep.plan import SweepOptions, SweepPlan

if TYPE_CHECKING:
    from harness.config.scoring import ScoringConfig
    from harness.config.story import LoadedStory
    from harness.sweep.select import Selection


@dataclass
class SweepSetup:
    """Everything checked about one sweep request; `execute_sweep` carries it out."""

    loaded: "LoadedStory"
    out: Path
    opts: SweepOptions
    plan: SweepPlan
    config: "ScoringConfig"
    model: Any  # harness.models.resolve.ResolvedModel
    placement: Any  # harness.device.Placement
    lora_path: Path | None
    lora_sha256: str | None
    identity: dict[str, Any]


@dataclass
class SweepResult:
    out: Path
    setup: SweepSetup
    rows: dict[str, dict[str, Any]]  # candidate id -> score row, every candidate of this request
    rendered: list[str]  # candidate ids rendered by this call (not found finished)
    selection: "Selection"
    preview_correlation: float | None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        return self.setup.config.threshold

    @property
    def passed(self) -> bool:
        return self.selection.aesthetic_mean >= self.threshold

    @property
    def exit_code(self) -> int:
        """0 when the chosen story clears the aesthetic gate, 1 when it does not."""
        return 0 if self.passed else 1
