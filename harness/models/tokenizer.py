"""Count prompt tokens with the real Kolors (ChatGLM3) tokenizer.

Kolors' pipeline pads or truncates every prompt to 256 tokens: a longer prompt would be cut
silently, so the harness refuses it up front, naming the panel and the count.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from harness.config.yamlio import field_error

if TYPE_CHECKING:
    from harness.config.story import LoadedStory

MAX_TOKENS = 256  # KolorsPipeline's max_sequence_length, special tokens included


@lru_cache(maxsize=1)
def kolors_tokenizer():
    """The ChatGLM3 tokenizer Kolors uses, loaded offline from the diffsynth package."""
    from diffusers.pipelines.kolors import ChatGLMTokenizer

    from harness.models.tiny import kolors_tokenizer_dir

    return ChatGLMTokenizer.from_pretrained(str(kolors_tokenizer_dir()))


def count_tokens(text: str) -> int:
    """Tokens Kolors feeds the text encoder for `text`, special prefix tokens included."""
    return len(kolors_tokenizer()(text)["input_ids"])


def check_prompt_lengths(loaded: "LoadedStory") -> None:
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
