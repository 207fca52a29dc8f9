"""The scorer interface and the registry of scorers by name.

Owns: `Scorer` (load models once with `load`, then `score` a whole story in batches),
`MetricResult` (what every scorer returns), `ScoreContext` (what every scorer gets), and the
name -> scorer table. Built-in scorers are listed as import paths so that naming a scorer in a
config imports no torch; new metrics (HPSv2, ImageReward, PickScore) register with `register`
and nothing else changes. Names never collide silently, and an unknown name gets a suggestion.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from harness.config import scorers as scorer_names
from harness.config.scoring import reproduce_model

if TYPE_CHECKING:
    from harness.config.scoring import ScoringConfig
    from harness.models.scoring_registry import ScoringKind
    from harness.score.images import Panel
    from harness.score.models import ModelCache


@dataclass
class ScoreContext:
    """Inputs shared by every scorer: the panels, their prompts, the config, loaded models."""

    panels: list["Panel"]
    prompts: list[str | None]  # one per panel; None where no prompt is known
    config: "ScoringConfig"
    models: "ModelCache"
    required_panels: int  # from the story, else config.min_panels


@dataclass
class MetricResult:
    """One scorer's output: per-panel values (aligned with the panels) and a story summary.

    `passed` is True/False for scores that gate a submission, None for informative ones.
    """

    name: str
    models: list[dict[str, Any]]
    per_panel: list[dict[str, Any]]
    summary: dict[str, Any]
    passed: bool | None = None
    notes: list[str] = field(default_factory=list)


class Scorer(ABC):
    """A metric over a story. Subclasses set `name` and implement `load` and `score`."""

    name: str = ""

    def __init__(self, config: "ScoringConfig", models: "ModelCache"):
        self.config = config
        self.models = models

    @classmethod
    def models_needed(cls, config: "ScoringConfig") -> list[tuple["ScoringKind", str]]:
        """(kind, registry name) of every scoring model this scorer loads under `config`."""
        return []

    def load_models(self) -> list[Any]:
        """The models `models_needed` names, from the shared cache (each loads once)."""
        return [self.models.get(kind, name) for kind, name in self.models_needed(self.config)]

    @abstractmethod
    def load(self) -> None:
        """Resolve and load the weights (once); called before `score`."""

    @abstractmethod
    def score(self, ctx: ScoreContext) -> MetricResult:
        """Score all panels of `ctx` (batched)."""


_REGISTERED: dict[str, type[Scorer]] = {}


def register(name: str) -> Callable[[type[Scorer]], type[Scorer]]:
    """Class decorator adding a scorer under `name`; a taken name is an error."""

    def add(cls: type[Scorer]) -> type[Scorer]:
        target = f"{cls.__module__}:{cls.__name__}"
        if name in _REGISTERED:
            raise ValueError(f"a scorer named {name!r} is already registered")
        scorer_names.add(name, target)  # the config's name table: a name taken by another class raises
        cls.name = name
        _REGISTERED[name] = cls
        return cls

    return add


names = scorer_names.names
check_names = scorer_names.check_names


def models_used(config: "ScoringConfig") -> list[tuple["ScoringKind", str]]:
    """(kind, name) of every scoring model a run with `config` loads, in a stable order."""
    used = [m for name in config.scorers for m in get(name).models_needed(config)]
    if config.reproduce:
        used.append(reproduce_model(config))
    return list(dict.fromkeys(used))


def get(name: str) -> type[Scorer]:
    """The scorer class for `name` (importing a built-in on first use)."""
    check_names([name])
    if name not in _REGISTERED:
        module, _, cls = scorer_names.BUILTIN[name].partition(":")
        importlib.import_module(module)  # its @register adds it
        if name not in _REGISTERED:  # pragma: no cover - a built-in that forgot to register
            _REGISTERED[name] = getattr(importlib.import_module(module), cls)
    return _REGISTERED[name]
