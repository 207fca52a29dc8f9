"""The story file: one strict pydantic model that mirrors the YAML one to one.

Owns: the story schema, its value ranges, and `load_story`, which reads a file and returns a
validated `Story` or raises one `HarnessError` line naming the file, line and field. Checks
that need the real tokenizer (prompt length) live in `harness.models.tokenizer` and are run by
`load_story` on request. Must not load models or touch output folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from harness.config.yamlio import Document, expect_kind, field_error, parse_model, read_yaml
from harness.models.refs import parse_ref
from harness.models.registry import DEFAULT_BASE_MODEL
from harness.models.schedulers import SCHEDULERS

MAX_SEED = 2**64 - 1
MIN_SIZE, MAX_SIZE = 64, 2048


class StrictModel(BaseModel):
    """Unknown fields are errors, and values are not coerced ("3" is not a number)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Sampling(StrictModel):
    """How every panel is denoised. Defaults are the competition baseline's."""

    steps: int = Field(50, ge=1, le=200)
    guidance: float = Field(4.0, ge=0.0, le=30.0)
    width: int = 1024
    height: int = 1024
    scheduler: Literal[tuple(SCHEDULERS)] = "euler"  # type: ignore[valid-type]

    @field_validator("width", "height")
    @classmethod
    def _renderable(cls, v: int) -> int:
        if v % 8:
            raise ValueError("must be a multiple of 8 (the VAE downsamples by 8)")
        if not MIN_SIZE <= v <= MAX_SIZE:
            raise ValueError(f"must be between {MIN_SIZE} and {MAX_SIZE} pixels")
        return v


class LoraSpec(StrictModel):
    """The LoRA to render with: a trained .safetensors file, or a training config to train first.

    Paths are relative to the story file. Exactly one of `path` and `train` is given.
    """

    path: str | None = Field(None, min_length=1)
    train: str | None = Field(None, min_length=1)
    scale: float = Field(1.0, ge=-2.0, le=2.0)

    @model_validator(mode="after")
    def _one_source(self) -> "LoraSpec":
        if (self.path is None) == (self.train is None):
            raise ValueError("give exactly one of path (a trained LoRA) or train (a training config)")
        return self


class Panel(StrictModel):
    prompt: str = Field(min_length=1)
    negative_prompt: str | None = None  # None: use the story's negative_prompt
    seed: int = Field(ge=0, le=MAX_SEED)

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_range(cls, v):
        if isinstance(v, int) and not isinstance(v, bool):
            if v < 0:
                raise ValueError("must be >= 0")
            if v > MAX_SEED:
                raise ValueError("does not fit in 64 bits (max 18446744073709551615)")
        return v


class Story(StrictModel):
    """A story file: who submits it, which model renders it, and its panels."""

    team: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=64)
    title: str = ""
    base_model: str = DEFAULT_BASE_MODEL
    lora: LoraSpec | None = None
    sampling: Sampling = Sampling()
    negative_prompt: str = ""
    panel_count: int = Field(8, ge=1, le=64)
    panels: list[Panel]

    @field_validator("base_model")
    @classmethod
    def _known_source(cls, v: str) -> str:
        parse_ref(v)  # raises ValueError naming what is wrong
        return v

    @field_validator("panels")
    @classmethod
    def _panel_count(cls, v: list[Panel], info: ValidationInfo) -> list[Panel]:
        expected = info.data.get("panel_count")
        if expected is not None and len(v) != expected:
            raise ValueError(f"expected {expected} panels (panel_count), got {len(v)}")
        return v

    def negative_for(self, index: int) -> str:
        """The negative prompt panel `index` (0-based) is rendered with."""
        own = self.panels[index].negative_prompt
        return self.negative_prompt if own is None else own


class LoadedStory:
    """A validated story plus where it came from (for relative paths and error lines)."""

    def __init__(self, story: Story, doc: Document):
        self.story = story
        self.doc = doc
        self.path = doc.path

    def _relative(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.path.parent / p)

    @property
    def lora_path(self) -> Path | None:
        """The LoRA file the story names directly (None if none, or if it is to be trained)."""
        lora = self.story.lora
        return self._relative(lora.path) if lora is not None and lora.path else None

    @property
    def lora_train_config(self) -> Path | None:
        """The training config the story declares under lora.train, if any."""
        lora = self.story.lora
        return self._relative(lora.train) if lora is not None and lora.train else None


def load_story(path: str | Path, *, check_tokens: bool = True) -> LoadedStory:
    """Read and validate a story file; any problem raises one HarnessError line.

    With `check_tokens`, every prompt and negative prompt is counted with the real Kolors
    tokenizer and refused above Kolors' 256-token limit (the pipeline would silently truncate).
    """
    doc = read_yaml(path)
    expect_kind(doc, "story")
    story = parse_model(doc, Story)
    loaded = LoadedStory(story, doc)
    lora = loaded.lora_path
    if lora is not None:
        if not lora.is_file():
            raise field_error(doc, ("lora", "path"), f"LoRA file not found: {lora}")
        if lora.suffix != ".safetensors":
            raise field_error(
                doc, ("lora", "path"), "only .safetensors LoRA files are rendered (pickles never are)"
            )
    train = loaded.lora_train_config
    if train is not None and not train.is_file():
        raise field_error(doc, ("lora", "train"), f"training config not found: {train}")
    if check_tokens:
        from harness.models.tokenizer import check_prompt_lengths

        check_prompt_lengths(loaded)
    return loaded
