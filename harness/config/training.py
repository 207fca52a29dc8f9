"""The training config: one strict pydantic model that mirrors the training YAML one to one.

Owns: the schema of `harness train CONFIG`, its value ranges, path resolution relative to the
config file (data.path, data.prepared and a `local:` base_model), and `load_training_config`.
A config the user names on the command line (`harness train CONFIG`, `harness data prepare
CONFIG`) is the user's own file: `~`, `..` and absolute paths are allowed (the prepared folder
is still replaced only when the harness made it, see `harness.ownership`). A config named by a
story's `lora.train` comes from whoever wrote the story: its paths, the default prepared folder
included, must stay inside the story's folder (`harness.config.common.confined`). Must not load
models, read images or write files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from harness.config.common import MAX_SEED, StrictModel, check_local_model, confined
from harness.config.refs import parse_ref
from harness.config.registry import DEFAULT_BASE_MODEL
from harness.config.text import optional_text, path_text, required_text
from harness.config.yamlio import Document, expect_kind, field_error, parse_model, read_yaml
from harness.errors import HarnessError

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
MAX_RANK = 1024


def _float_like(v):
    """A quoted number is text; say so instead of a bare type error."""
    if isinstance(v, str):
        try:
            float(v)
        except ValueError:
            return v
        raise ValueError(f"{v!r} is quoted, so it is text: write it without quotes, e.g. 1.0e-4")
    return v


class DataConfig(StrictModel):
    """Where the training images come from and which of them are kept."""

    source: Literal["folder", "modelscope", "demo"]  # demo: seeded images made in memory, no files
    path: str | None = None  # folder source: images plus metadata.csv or .txt sidecars
    dataset_id: str | None = None  # modelscope source, e.g. AI-ModelScope/lowres_anime
    subset: str = "default"
    split: str = "train"
    caption: str | None = None  # a fixed caption for every image (the baseline used 二次元)
    min_width: int = Field(0, ge=0, le=16384)
    min_height: int = Field(0, ge=0, le=16384)
    min_aspect: float | None = Field(None, gt=0.0)  # width / height; the baseline kept 0.5-2.0
    max_aspect: float | None = Field(None, gt=0.0)
    max_images: int | None = Field(None, ge=1)
    prepared: str | None = None  # output of `harness data prepare`; default prepared/<config name>

    _floats = field_validator("min_aspect", "max_aspect", mode="before")(
        classmethod(lambda c, v: _float_like(v))
    )

    @field_validator("path", "prepared")
    @classmethod
    def _one_line_path(cls, v: str | None) -> str | None:
        return v if v is None else path_text(v)

    @field_validator("caption")
    @classmethod
    def _caption(cls, v: str | None) -> str | None:
        return v if v is None else required_text(v)  # a blank caption would train on nothing

    @model_validator(mode="after")
    def _source_fields(self):
        if self.source == "folder" and not self.path:
            raise ValueError("source folder needs `path` (a folder of images)")
        if self.source == "modelscope" and not self.dataset_id:
            raise ValueError("source modelscope needs `dataset_id` (e.g. AI-ModelScope/lowres_anime)")
        if self.source == "demo" and (self.path or self.dataset_id):
            raise ValueError("source demo makes its own images: remove `path` and `dataset_id`")
        if self.min_aspect is not None and self.max_aspect is not None and self.min_aspect > self.max_aspect:
            raise ValueError(f"min_aspect {self.min_aspect} is larger than max_aspect {self.max_aspect}")
        return self


class LoraConfigSpec(StrictModel):
    """The adapter: rank, alpha (strength = alpha / rank), target modules, DoRA."""

    rank: int = Field(16, ge=1, le=MAX_RANK)
    alpha: float = Field(4.0, gt=0.0, le=4096.0)
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGETS), min_length=1)
    dora: bool = False

    _floats = field_validator("alpha", mode="before")(classmethod(lambda c, v: _float_like(v)))


class OptimizerConfig(StrictModel):
    name: Literal["adamw", "prodigy"] = "adamw"
    learning_rate: float = Field(1.0e-4, gt=0.0, le=10.0)
    weight_decay: float = Field(1.0e-2, ge=0.0, le=1.0)
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    epsilon: float = Field(1.0e-8, gt=0.0, le=1.0)
    max_grad_norm: float | None = Field(1.0, gt=0.0)

    _floats = field_validator(
        "learning_rate", "weight_decay", "beta1", "beta2", "epsilon", "max_grad_norm", mode="before"
    )(classmethod(lambda c, v: _float_like(v)))


class ScheduleConfig(StrictModel):
    name: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)


class ValidationConfig(StrictModel):
    """Images rendered with the LoRA while training, to watch it learn."""

    prompts: list[str] = Field(default_factory=list)
    negative_prompt: str = ""
    every: int = Field(0, ge=0)  # steps between validations; 0: only at the end
    steps: int = Field(25, ge=1, le=200)
    guidance: float = Field(4.0, ge=0.0, le=30.0)
    seed: int = Field(0, ge=0, le=MAX_SEED)

    _floats = field_validator("guidance", mode="before")(classmethod(lambda c, v: _float_like(v)))

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, v: list[str]) -> list[str]:
        for i, prompt in enumerate(v):
            try:
                required_text(prompt)
            except ValueError as e:
                raise ValueError(f"prompt {i + 1} {e}") from None
        return v

    @field_validator("negative_prompt")
    @classmethod
    def _negative(cls, v: str) -> str:
        return optional_text(v, empty='write "" for no negative prompt')


class TrainingConfig(StrictModel):
    """A LoRA training: base model, data, adapter, optimisation and bookkeeping."""

    base_model: str = DEFAULT_BASE_MODEL
    data: DataConfig
    resolution: int = Field(1024, ge=64, le=2048)
    crop: Literal["center", "random"] = "center"
    allow_upscale: bool = False  # images smaller than `resolution` are refused unless True
    lora: LoraConfigSpec = LoraConfigSpec()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    batch_size: int = Field(1, ge=1, le=256)
    gradient_accumulation: int = Field(1, ge=1, le=1024)
    max_steps: int | None = Field(None, ge=1)  # optimizer steps; overrides epochs when set
    epochs: int = Field(1, ge=1, le=10000)
    repeats: int = Field(1, ge=1, le=10000)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    seed: int = Field(0, ge=0, le=2**63 - 1)
    min_snr_gamma: float | None = Field(None, gt=0.0)
    noise_offset: float = Field(0.0, ge=0.0, le=1.0)
    checkpoint_every: int = Field(0, ge=0)  # optimizer steps between checkpoints; 0: none
    keep_checkpoints: int = Field(2, ge=1)
    validation: ValidationConfig = ValidationConfig()

    _floats = field_validator("min_snr_gamma", "noise_offset", mode="before")(
        classmethod(lambda c, v: _float_like(v))
    )

    @field_validator("base_model")
    @classmethod
    def _known_source(cls, v: str) -> str:
        path_text(v)
        parse_ref(v)
        return v

    @field_validator("resolution")
    @classmethod
    def _multiple_of_8(cls, v: int) -> int:
        if v % 8:
            raise ValueError("must be a multiple of 8 (the VAE downsamples by 8)")
        return v


class LoadedTrainingConfig:
    """A validated training config plus where it came from (for relative paths and error lines)."""

    def __init__(self, config: TrainingConfig, doc: Document):
        self.config = config
        self.doc = doc
        self.path = doc.path

    def resolve(self, p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else (self.path.parent / q)

    @property
    def data_path(self) -> Path | None:
        return self.resolve(self.config.data.path) if self.config.data.path else None

    @property
    def model_ref(self):
        """The base model reference, a relative `local:` path made relative to the config file."""
        from dataclasses import replace

        from harness.config.refs import parse_ref

        ref = parse_ref(self.config.base_model)
        if ref.source == "local":
            ref = replace(ref, location=str(self.resolve(ref.location)))
        return ref

    @property
    def prepared_dir(self) -> Path:
        if self.config.data.prepared:
            return self.resolve(self.config.data.prepared)
        return self.path.parent / "prepared" / self.path.stem


def _check_inside(loaded: LoadedTrainingConfig, root: Path) -> None:
    """Every path of a story-named config stays inside the story's folder `root`, or one line."""
    cfg, doc = loaded.config, loaded.doc
    here = Path(os.path.abspath(loaded.path)).parent
    root = Path(os.path.abspath(root))
    if here != root and root not in here.parents:
        raise HarnessError(f"{loaded.path}: lies outside the story's folder {root}")
    start = here.relative_to(root).parts
    what = "the story's folder (this config is named by a story's lora.train)"
    fields: list[tuple[tuple[str, ...], str]] = []
    if cfg.data.path:
        fields.append((("data", "path"), cfg.data.path))
    # the default prepared folder too: a link named `prepared` in the story's folder is refused
    prepared = cfg.data.prepared or f"prepared/{loaded.path.stem}"
    fields.append((("data", "prepared"), prepared))
    # a model folder is loaded and hashed whole: one the stranger ships beside the story could
    # hold links to anything (/dev/zero), so it must be in a folder the user allowed, as for a story
    check_local_model(doc, cfg.base_model)
    for loc, value in fields:
        try:
            confined(root, value, start=start, what=what, folder_ok=True)
        except ValueError as e:
            raise field_error(doc, loc, str(e)) from None


def load_training_config(
    path: str | Path, *, follow_links: bool = False, inside: str | Path | None = None
) -> LoadedTrainingConfig:
    """Read and validate a training config; any problem raises one HarnessError line.

    `follow_links` only for a path the user typed; a config named inside a story is read
    without following a link, with `inside` the story's folder: the config's data path,
    prepared folder and `local:` base model must then stay inside it (see module docstring)."""
    doc = read_yaml(path, follow_links=follow_links)
    expect_kind(doc, "training")
    cfg = parse_model(doc, TrainingConfig)
    loaded = LoadedTrainingConfig(cfg, doc)
    if inside is not None:
        _check_inside(loaded, Path(inside))
    if cfg.data.source == "folder":
        folder = loaded.data_path
        if folder is None or not folder.is_dir():
            raise field_error(doc, ("data", "path"), f"not a folder: {folder}")
    if cfg.validation.every and not cfg.validation.prompts:
        raise field_error(doc, ("validation", "prompts"), "validation.every is set but no prompts are given")
    if len(set(cfg.lora.target_modules)) != len(cfg.lora.target_modules):
        raise field_error(doc, ("lora", "target_modules"), "lists a module twice")
    return loaded
