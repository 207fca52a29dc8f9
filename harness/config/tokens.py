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

import importlib.util
from functools import lru_cache
from pathlib import Path

from harness.errors import HarnessError

MAX_TOKENS = 256  # KolorsPipeline's max_sequence_length, special tokens included
PREFIX_TOKENS = 2  # ChatGLMTokenizer.get_prefix_tokens(): [gMASK], sop


def kolors_tokenizer_dir() -> Path:
    """The real Kolors tokenizer files shipped by diffsynth 1.1.9 (located without importing it)."""
    spec = importlib.util.find_spec("diffsynth")
    if spec is None or not spec.submodule_search_locations:
        raise HarnessError("the diffsynth package is not installed; it ships the Kolors tokenizer")
    root = Path(list(spec.submodule_search_locations)[0])
    folder = root / "tokenizer_configs" / "kolors" / "tokenizer"
    if not (folder / "tokenizer.model").is_file():
        raise HarnessError(f"Kolors tokenizer files missing under {folder} (diffsynth==1.1.9 has them)")
    return folder


@lru_cache(maxsize=1)
def _sentencepiece():
    """The sentencepiece model inside the pipeline's ChatGLMTokenizer, loaded from the same file."""
    from sentencepiece import SentencePieceProcessor

    return SentencePieceProcessor(model_file=str(kolors_tokenizer_dir() / "tokenizer.model"))


def count_tokens(text: str) -> int:
    """Tokens Kolors feeds the text encoder for `text`, special prefix tokens included.

    Equal to the pipeline tokenizer's `len(tokenizer(text)["input_ids"])` (untruncated), without torch.
    """
    if not text:
        return PREFIX_TOKENS
    return PREFIX_TOKENS + len(_sentencepiece().encode(text))
