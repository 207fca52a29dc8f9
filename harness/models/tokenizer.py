"""Count prompt tokens with the real Kolors (ChatGLM3) tokenizer.

Kolors' pipeline pads or truncates every prompt to 256 tokens: a longer prompt would be cut
silently, so the harness refuses it up front, naming the panel and the count.

Counting reads the same `tokenizer.model` the pipeline's `ChatGLMTokenizer` wraps, with
`sentencepiece` directly: `harness validate` then needs no torch, transformers or diffusers
(3.7 s of imports on a 2-core CPU). What `ChatGLMTokenizer(text)["input_ids"]` gives is
exactly the `[gMASK]` and `sop` prefix plus sentencepiece's pieces for the whole text:
- it registers no added tokens (its tokens trie is empty) and `encode_special_tokens` is off,
  so text that looks like a special token (`<|user|>`, `[gMASK]`, `<sop>`, `</s>`) is plain
  text for sentencepiece, never split out or mapped to a special id;
- it has no `do_lower_case` and the default `prepare_for_tokenization`, so the text reaches
  sentencepiece unchanged (whitespace runs, tabs, newlines, U+3000 included);
- an empty text is skipped, leaving only the prefix.
tests/test_tokenizer_count.py checks the count against the real `ChatGLMTokenizer`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from harness.config.yamlio import field_error

if TYPE_CHECKING:
    from harness.config.story import LoadedStory

MAX_TOKENS = 256  # KolorsPipeline's max_sequence_length, special tokens included
PREFIX_TOKENS = 2  # ChatGLMTokenizer.get_prefix_tokens(): [gMASK], sop


@lru_cache(maxsize=1)
def kolors_tokenizer():
    """The ChatGLM3 tokenizer Kolors uses, loaded offline from the diffsynth package.

    Imports diffusers, transformers and torch: for tokenizing. To count, use `count_tokens`.
    """
    from diffusers.pipelines.kolors import ChatGLMTokenizer

    from harness.models.tiny import kolors_tokenizer_dir

    return ChatGLMTokenizer.from_pretrained(str(kolors_tokenizer_dir()))


@lru_cache(maxsize=1)
def _sentencepiece():
    """The sentencepiece model inside `kolors_tokenizer()`, loaded from the same file."""
    from sentencepiece import SentencePieceProcessor

    from harness.models.tiny import kolors_tokenizer_dir

    return SentencePieceProcessor(model_file=str(kolors_tokenizer_dir() / "tokenizer.model"))


def count_tokens(text: str) -> int:
    """Tokens Kolors feeds the text encoder for `text`, special prefix tokens included.

    Equal to `len(kolors_tokenizer()(text)["input_ids"])` (untruncated), without importing torch.
    """
    if not text:
        return PREFIX_TOKENS
    return PREFIX_TOKENS + len(_sentencepiece().encode(text))


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
