"""The reproducibility contract: what a render records, as strict pydantic models.

Owns: the run manifest (`RunManifest`, a run folder's manifest.json and a bundle's run.json),
each panel's entry in it (`PanelRecord`) and the parameters embedded in every panel PNG
(`PanelParams`), which the judges' re-render replays. Writers build these models; readers parse
them (`parse`), so a renamed or missing key is one clear line naming the field, never a silent
`.get()` miss. Unknown fields are refused. The layout of the JSON is that of harness 0.1.0
(tests/fixtures/records_v1), so older runs and bundles still read.
Must not read files or import torch.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from harness.errors import HarnessError

RENDER_KIND = "harness.render"  # the run manifest's "kind": the harness made this run folder
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class Record(BaseModel):
    """Unknown fields are errors, values are not coerced ("3" is not a number), and a record
    once built is not changed in place."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def to_json(self) -> dict[str, Any]:
        """The record as the JSON the harness writes."""
        return self.model_dump(mode="json")


R = TypeVar("R", bound=BaseModel)


class RecordError(HarnessError):
    """A record that does not parse; `field` is the dotted path of the first bad field."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def parse(model: type[R], data: Any, label: str) -> R:
    """`data` (parsed JSON) as `model`, or a RecordError: one line `label: field: problem`."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        more = f" (and {e.error_count() - 1} more problems)" if e.error_count() > 1 else ""
        raise RecordError(f"{label}: {loc}: {err['msg']}{more}", loc) from None


class ModelRecord(Record):
    """The base model: the reference the story gave and the content hash of what was loaded."""

    ref: str
    sha256: Sha256


class LoraRecord(Record):
    """The LoRA rendered with: its file name (a bare name, never a path to open), content hash
    and strength."""

    file: str
    sha256: Sha256
    scale: float


class SamplingRecord(Record):
    """The story's sampling settings as rendered (harness.config.story.Sampling checks ranges)."""

    steps: int
    guidance: float
    width: int
    height: int
    scheduler: str


# The settings a panel embeds that its story decides (the judges hold each to the story).
SAMPLING_KEYS = tuple(SamplingRecord.model_fields)


class PanelParams(Record):
    """The parameters embedded in a panel PNG (its `harness` text chunk): everything needed to
    render the panel again, alone."""

    harness_version: str
    team: str
    name: str
    panel: int = Field(ge=1)
    prompt: str
    negative_prompt: str
    seed: int = Field(ge=0)
    steps: int
    guidance: float
    width: int
    height: int
    scheduler: str
    model: ModelRecord
    lora: LoraRecord | None
    device: str
    dtype: str
    batch_size: int = Field(ge=1)

    @classmethod
    def for_job(
        cls,
        story: Any,
        job: Any,
        sampling: Any,
        model: ModelRecord,
        lora: "LoraRecord | None",
        placement: Any,
        batch_size: int,
    ) -> "PanelParams":
        """What a render embeds for `job` (a `PanelJob`) of `story`, drawn with `sampling` (a
        model with the sampling fields) on `placement`: the one way render and sweep fill it."""
        from harness import __version__

        return cls(
            harness_version=__version__,
            team=story.team,
            name=story.name,
            panel=job.index,
            prompt=job.prompt,
            negative_prompt=job.negative_prompt,
            seed=job.seed,
            **sampling.model_dump(mode="json"),
            model=model,
            lora=lora,
            device=placement.device,
            dtype=placement.dtype_name,
            batch_size=batch_size,
        )

    @property
    def sampling(self) -> SamplingRecord:
        return SamplingRecord(**{k: getattr(self, k) for k in SAMPLING_KEYS})

    def render_key(self) -> tuple:
        """Panels with equal keys were rendered by one pipeline in one batch sequence."""
        lora = (self.lora.sha256, self.lora.scale) if self.lora else None
        return (
            self.model.ref,
            self.model.sha256,
            lora,
            self.device,
            self.dtype,
            self.batch_size,
            *(getattr(self, k) for k in SAMPLING_KEYS),
        )


class PanelRecord(Record):
    """One rendered panel in the run manifest."""

    index: int = Field(ge=1)
    file: str
    sha256: Sha256
    seed: int = Field(ge=0)
    prompt: str
    negative_prompt: str


class RunIdentity(Record):
    """Everything that decides the pixels: a run folder is only ever continued by the same."""

    story_sha256: Sha256
    model_sha256: Sha256
    lora_sha256: Sha256 | None
    lora_scale: float | None
    device: str
    dtype: str
    batch_size: int = Field(ge=1)


class StoryRecord(Record):
    file: str  # the story copy in the run folder (layout.STORY_COPY)
    source: str  # where the story was read from (a trusted run only: never opened for a bundle)
    team: str
    name: str
    title: str | None
    panel_count: int = Field(ge=1)


class PlacementRecord(Record):
    device: str
    dtype: str


class RunManifest(Record):
    """A run folder's manifest.json (a bundle's run.json). Rendering replaces it as panels land
    (`model_copy(update=...)`): `status` is rendering, then partial or complete."""

    kind: Literal["harness.render"]
    harness_version: str
    created: str
    identity: RunIdentity
    story: StoryRecord
    model: ModelRecord
    lora: LoraRecord | None
    sampling: SamplingRecord
    placement: PlacementRecord
    batch_size: int = Field(ge=1)
    libraries: dict[str, str]
    panels: list[PanelRecord]
    contact_sheet: str | None
    status: Literal["rendering", "partial", "complete"]
    timings_s: dict[str, float] | None = None  # set when the render finishes

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        if data["timings_s"] is None:  # not yet rendered: the key is absent, as 0.1.0 wrote it
            del data["timings_s"]
        return data
