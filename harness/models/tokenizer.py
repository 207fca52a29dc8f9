"""The Kolors (ChatGLM3) tokenizer as the pipeline loads it, for tokenizing.

Counting prompt tokens needs no torch and lives in `harness.config.tokens`; this module loads
diffusers' `ChatGLMTokenizer` on the same files, for the caption cache and for the tests that
check the counter against it.
"""

from __future__ import annotations

from functools import lru_cache

from harness.config.tokens import MAX_TOKENS, PREFIX_TOKENS, count_tokens, kolors_tokenizer_dir

__all__ = ["MAX_TOKENS", "PREFIX_TOKENS", "count_tokens", "kolors_tokenizer", "kolors_tokenizer_dir"]


@lru_cache(maxsize=1)
def kolors_tokenizer():
    """The ChatGLM3 tokenizer Kolors uses, loaded offline from the diffsynth package.

    Imports diffusers, transformers and torch: for tokenizing. To count, use `count_tokens`.
    """
    from diffusers.pipelines.kolors import ChatGLMTokenizer

    return ChatGLMTokenizer.from_pretrained(str(kolors_tokenizer_dir()))
