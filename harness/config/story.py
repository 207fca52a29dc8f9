"""The story file: one strict pydantic model that mirrors the YAML one to one.

Owns: the story schema, its value ranges, and `load_story`, which reads a file and returns a
validated `Story` or raises one `HarnessError` line naming the file, line and field. Checks
that need the real tokenizer (prompt length) live in `harness.models.tokenizer` and are run by
`load_story` on request. Must not load models or touch output folders.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from harness.bundle.naming import _PART, _check_part, model_id
from harness.config.text import optional_text, path_text, required_text
from harness.config.yamlio import Document, expect_kind, field_error, parse_model
from harness.errors import HarnessError
from harness.models.refs import parse_ref
from harness.models.registry import DEFAULT_BASE_MODEL
from harness.models.schedulers import SCHEDULERS

MAX_SEED = 2**64 - 1
MIN_SIZE, MAX_SIZE = 64, 2048
MAX_PROMPT_CHARS = 4096  # far above 256 Kolors tokens; bounds the tokenizer's work
MAX_TITLE_CHARS = 200
MAX_PATH_CHARS = 4096
# Device names Windows reserves in every folder, with or without an extension: a team or name
# is a folder of the bundle (submissions/<team>/<name>) that judges copy to any system.
_RESERVED = re.compile(r"(?:con|prn|aux|nul|com[0-9]|lpt[0-9])(?:\..*)?", re.IGNORECASE)


def check_name_part(what: str, value: str) -> str:
    """`team` or `name` under the bundle's naming rule (harness.bundle.naming), as a ValueError."""
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


def confined(
    root: str | Path,
    value: str,
    *,
    start: tuple[str, ...] = (),
    what: str = "the story's folder",
    folder_ok: bool = False,
) -> Path:
    """`root / start / value` for a path written in a story (or in a config a story names), or a
    ValueError saying why not.

    A story comes from a stranger, so what it names stays inside its folder: `value` is
    relative (no `/...`, no `~`, no backslash, no control character), every `..` stays inside
    `root` (`a/../b` is fine, `../x` is not), and no component on the way is a symbolic link
    (checked with lstat, so the path the file system follows is the one checked). `start` is the
    folder, relative to `root`, that `value` is relative to (a training config's own folder).
    `folder_ok`: `value` may name `root` itself (a dataset folder beside the story).
    """
    if not isinstance(value, str) or not value:
        raise ValueError("must be a relative path")
    why = bad_character_in_path(value)
    if why:
        raise ValueError(why)
    if value.startswith("~"):
        raise ValueError(f"starts with '~': write a path relative to {what} (home folders are not read)")
    if os.path.isabs(value):
        raise ValueError(f"is an absolute path: write a path relative to {what}, inside it")
    if "\\" in value:
        raise ValueError("holds a backslash: separate folders with '/'")
    root = Path(os.path.abspath(root))
    stack = list(start)
    for part in value.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                raise ValueError(f"'..' leads out of {what} ({root}); files it names must be inside it")
            stack.pop()
            continue
        stack.append(part)
        here = root.joinpath(*stack)
        try:
            mode = os.lstat(here).st_mode
        except FileNotFoundError:
            continue  # a missing file is reported by the caller; '..' after it fails to resolve
        except OSError as e:
            raise ValueError(f"{here}: {e.strerror}") from None
        if stat.S_ISLNK(mode):
            raise ValueError(f"{here} is a symlink; paths in a story never pass through links")
    if not stack and not folder_ok:
        raise ValueError(f"names {what} itself, not a file inside it")
    return root.joinpath(*stack)


def bad_character_in_path(value: str) -> str | None:
    """Why `value` cannot be a path (a control character, NUL included), or None."""
    try:
        path_text(value)
    except ValueError as e:
        return str(e)
    return None


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


MODEL_ROOTS_ENV = "HARNESS_MODEL_ROOTS"


def model_roots() -> list[Path]:
    """Folders a story may name a `local:` model in: the harness cache, and the folders the user
    lists in $HARNESS_MODEL_ROOTS (separated by os.pathsep). The environment is the user's."""
    from harness.paths import cache_dir

    listed = [p for p in os.environ.get(MODEL_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    return [Path(os.path.abspath(cache_dir()))] + [
        Path(os.path.abspath(os.path.expanduser(p))) for p in listed
    ]


def check_local_model(doc: Document, base_model: str) -> None:
    """A story comes from anyone: its `local:` model must be a folder the user allowed, so that a
    stranger's story cannot make the harness load and hash a folder of its choosing."""
    ref = parse_ref(base_model)
    if ref.source != "local":
        return
    where = Path(os.path.expanduser(ref.location))
    if not where.is_absolute():
        why = f"local: needs an absolute path under ${MODEL_ROOTS_ENV} (got {ref.location!r})"
        raise field_error(doc, ("base_model",), why)
    real = Path(os.path.realpath(where))  # where it really is, links resolved, must be allowed
    if not any(real == r or r in real.parents for r in (Path(os.path.realpath(x)) for x in model_roots())):
        raise field_error(
            doc,
            ("base_model",),
            f"{where} is not in a folder you allowed for models: add its folder to ${MODEL_ROOTS_ENV} "
            "(a story may come from anyone, so it cannot pick a folder for you)",
        )


def load_story(path: str | Path, *, check_tokens: bool = True) -> LoadedStory:
    """Read and validate a story file; any problem raises one HarnessError line.

    The path is one the user typed, so a link to the story is followed; everything the story
    names is checked before any caller builds a path from it (team and name follow the bundle's
    naming rule; lora.path and lora.train stay inside the story's folder, and so do the paths of
    the training config lora.train names). With `check_tokens`, every prompt and negative
    prompt is counted with the real Kolors tokenizer and refused above Kolors' 256-token limit
    (the pipeline would silently truncate).
    """
    from harness.config.yamlio import MAX_CONFIG_BYTES, loads_yaml
    from harness.safeio import read_bytes

    path = Path(path)
    source = read_bytes(path, max_bytes=MAX_CONFIG_BYTES, what=str(path), follow_links=True)
    try:
        text = source.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise HarnessError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    doc = loads_yaml(text, path)
    expect_kind(doc, "story")
    story = parse_model(doc, Story)
    loaded = LoadedStory(story, doc, source)
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
    if check_tokens:
        from harness.models.tokenizer import check_prompt_lengths

        check_prompt_lengths(loaded)
    return loaded
