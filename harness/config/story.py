"""The story file: one strict pydantic model that mirrors the YAML one to one.

Owns: the story schema, its value ranges, and `load_story`, which reads a file and returns a
validated `Story` or raises one `HarnessError` line naming the file, line and field. The
prompt-length check counts with the real tokenizer (`harness.config.tokens`, torch-free) and
runs in `load_story` on request. Must not load models or touch output folders.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from harness.config.common import MAX_SEED, StrictModel, check_local_model, confined
from harness.config.naming import _PART, _check_part, model_id
from harness.config.refs import parse_ref
from harness.config.registry import DEFAULT_BASE_MODEL
from harness.config.schedulers import SCHEDULERS
from harness.config.text import optional_text, path_text, required_text
from harness.config.tokens import MAX_TOKENS, count_tokens
from harness.config.yamlio import Document, expect_kind, field_error, parse_model
from harness.errors import HarnessError

MIN_SIZE, MAX_SIZE = 64, 2048
MAX_PROMPT_CHARS = 4096  # far above 256 Kolors tokens; bounds the tokenizer's work
MAX_TITLE_CHARS = 200
MAX_PATH_CHARS = 4096
# Device names Windows reserves in every folder, with or without an extension: a team or name
# is a folder of the bundle (submissions/<team>/<name>) that judges copy to any system.
_RESERVED = re.compile(r"(?:con|prn|aux|nul|com[0-9]|lpt[0-9])(?:\..*)?", re.IGNORECASE)


def check_name_part(what: str, value: str) -> str:
    """`team` or `name` under the bundle's naming rule (harness.config.naming), as a ValueError."""
    try:
        _check_part(what, value, _PART)
    except HarnessError:
        raise ValueError(
            "must be 1-64 ASCII letters, digits, '-', '_' or '.', starting and ending with a letter "
            "or digit, no '..' (it names folders and the ModelScope id)"
        ) from None
    if _RESERVED.fullmatch(value):
        raise ValueError("is a device name Windows reserves (CON, PRN, AUX, NUL, COM1, LPT1, ...)")
    return value


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

    Paths are relative to the story file and stay inside its folder (`confined`): a story copied
    from a stranger never reads a file elsewhere on the disk. Exactly one of `path` and `train`
    is given.
    """

    path: str | None = Field(None, min_length=1, max_length=MAX_PATH_CHARS)
    train: str | None = Field(None, min_length=1, max_length=MAX_PATH_CHARS)
    scale: float = Field(1.0, ge=-2.0, le=2.0)

    @field_validator("path", "train")
    @classmethod
    def _one_line(cls, v: str | None) -> str | None:
        return v if v is None else path_text(v)

    @model_validator(mode="after")
    def _one_source(self) -> "LoraSpec":
        if (self.path is None) == (self.train is None):
            raise ValueError("give exactly one of path (a trained LoRA) or train (a training config)")
        return self


class Panel(StrictModel):
    prompt: str = Field(max_length=MAX_PROMPT_CHARS)
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)  # None: the story's
    seed: int = Field(ge=0, le=MAX_SEED)

    @field_validator("prompt")
    @classmethod
    def _says_something(cls, v: str) -> str:
        return required_text(v)

    @field_validator("negative_prompt")
    @classmethod
    def _own_negative(cls, v: str | None) -> str | None:
        if v is None:
            return v
        return optional_text(v, empty='leave it out for the story\'s negative_prompt, or write "" for none')

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

    team: str
    name: str
    title: str = Field("", max_length=MAX_TITLE_CHARS)
    base_model: str = Field(DEFAULT_BASE_MODEL, max_length=MAX_PATH_CHARS)
    lora: LoraSpec | None = None
    sampling: Sampling = Sampling()
    negative_prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    panel_count: int = Field(8, ge=1, le=64)
    panels: list[Panel]

    @field_validator("team")
    @classmethod
    def _team(cls, v: str) -> str:
        return check_name_part("team", v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str, info: ValidationInfo) -> str:
        check_name_part("name", v)
        team = info.data.get("team")
        if team is not None:
            try:  # the repository-name length limit, with the namespace the bundle defaults to
                model_id(team, team, v)
            except HarnessError as e:
                raise ValueError(str(e)) from None
        return v

    @field_validator("title")
    @classmethod
    def _title(cls, v: str) -> str:
        return optional_text(v, multiline=False, empty='leave it out, or write "" for none')

    @field_validator("negative_prompt")
    @classmethod
    def _negative(cls, v: str) -> str:
        return optional_text(v, empty='write "" for no negative prompt')

    @field_validator("base_model")
    @classmethod
    def _known_source(cls, v: str) -> str:
        path_text(v)
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
    """A validated story plus where it came from (for relative paths and error lines).

    `source` is the exact bytes that were validated: the run folder keeps these, not whatever
    the file holds by the time the render ends.
    """

    def __init__(self, story: Story, doc: Document, source: bytes | None = None):
        self.story = story
        self.doc = doc
        self.path = doc.path
        self.source = source

    @property
    def folder(self) -> Path:
        """The story's folder: every file the story names lies inside it (see `confined`)."""
        return Path(os.path.abspath(self.path.parent))

    def _inside(self, loc: tuple[str, ...], value: str) -> Path:
        try:
            return confined(self.folder, value)
        except ValueError as e:
            raise field_error(self.doc, loc, str(e)) from None

    @property
    def lora_path(self) -> Path | None:
        """The LoRA file the story names directly (None if none, or if it is to be trained)."""
        lora = self.story.lora
        return self._inside(("lora", "path"), lora.path) if lora is not None and lora.path else None

    @property
    def lora_train_config(self) -> Path | None:
        """The training config the story declares under lora.train, if any."""
        lora = self.story.lora
        return self._inside(("lora", "train"), lora.train) if lora is not None and lora.train else None


def _is_file(doc: Document, loc: tuple[str, ...], path: Path) -> bool:
    try:
        return path.is_file()
    except OSError as e:  # a name too long for the file system, a permission refused
        raise field_error(doc, loc, f"{path}: {e.strerror}") from None


def check_prompt_lengths(loaded: LoadedStory) -> None:
    """Raise a HarnessError for the first prompt over the limit, pointing at its field."""
    story = loaded.story
    fields: list[tuple[tuple, str]] = [(("negative_prompt",), story.negative_prompt)]
    for i, panel in enumerate(story.panels):
        fields.append((("panels", i, "prompt"), panel.prompt))
        if panel.negative_prompt is not None:
            fields.append((("panels", i, "negative_prompt"), panel.negative_prompt))
    for loc, text in fields:
        n = count_tokens(text)
        if n > MAX_TOKENS:
            raise field_error(
                loaded.doc, loc, f"{n} Kolors tokens, over the limit of {MAX_TOKENS} (shorten it)"
            )


def load_story(
    path: str | Path, *, check_files: bool = True, check_tokens: bool = True, follow_links: bool = True
) -> LoadedStory:
    """Read and validate a story file; any problem raises one HarnessError line.

    The schema is always checked (team and name follow the bundle's naming rule). With
    `check_files` (a story about to be rendered), everything the story names is checked before
    any caller builds a path from it: a `local:` model must be in a folder the user allowed,
    lora.path and lora.train stay inside the story's folder and exist, and so do the paths of the
    training config lora.train names. Without it (a story read for its prompts, seeds and
    settings only: a run's copy, a bundle's story.yaml) no file the story names is looked at.
    With `check_tokens`, every prompt and negative prompt is counted with the real Kolors
    tokenizer and refused above Kolors' 256-token limit (the pipeline would silently truncate).
    `follow_links`: the path is one the user typed, so a link to the story is followed; False
    for a file in a folder someone else made.
    """
    from harness.config.yamlio import MAX_CONFIG_BYTES, loads_yaml
    from harness.safeio import read_bytes

    path = Path(path)
    source = read_bytes(path, max_bytes=MAX_CONFIG_BYTES, what=str(path), follow_links=follow_links)
    try:
        text = source.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise HarnessError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    doc = loads_yaml(text, path)
    expect_kind(doc, "story")
    story = parse_model(doc, Story)
    loaded = LoadedStory(story, doc, source)
    if check_files:
        _check_files(loaded)
    if check_tokens:
        check_prompt_lengths(loaded)
    return loaded


def _check_files(loaded: LoadedStory) -> None:
    """What a story to be rendered names: allowed, inside its folder, present (`load_story`)."""
    doc, story = loaded.doc, loaded.story
    check_local_model(doc, story.base_model)
    lora = loaded.lora_path
    if lora is not None:
        if not _is_file(doc, ("lora", "path"), lora):
            raise field_error(doc, ("lora", "path"), f"LoRA file not found: {lora}")
        if lora.suffix != ".safetensors":
            raise field_error(
                doc, ("lora", "path"), "only .safetensors LoRA files are rendered (pickles never are)"
            )
    train = loaded.lora_train_config
    if train is not None:
        if not _is_file(doc, ("lora", "train"), train):
            raise field_error(doc, ("lora", "train"), f"training config not found: {train}")
        from harness.config.training import load_training_config

        # The config comes from the same stranger: its own paths must stay in the story's folder.
        load_training_config(train, inside=loaded.folder)
