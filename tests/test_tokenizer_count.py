"""The fast Kolors token count (sentencepiece, no torch) equals the real ChatGLMTokenizer's.

`harness validate` refuses a prompt over Kolors' 256 tokens. It counts with sentencepiece on the
same tokenizer.model so that it never imports torch, transformers or diffusers; these tests hold
that count to the pipeline's own tokenizer (`ChatGLMTokenizer`, as KolorsPipeline calls it) on a
corpus and on random text, hold the 256 limit exactly, and check the no-torch promise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.cli import main
from harness.models.tokenizer import MAX_TOKENS, count_tokens, kolors_tokenizer
from tests.conftest import ROOT, small_story

SPECIAL_LOOKALIKES = [
    "<|user|>", "<|system|>", "<|assistant|>", "<|observation|>",
    "[MASK]", "[gMASK]", "[sMASK]", "sop", "eop", "<sop>", "<eop>",
    "<s>", "</s>", "<unk>", "<pad>", "<bos>", "<eos>", "<0x0A>", "<0xE4>", "▁", "▁▁",
]  # fmt: skip

CORPUS = [
    # Chinese, English, mixed
    "小猫咪",
    "卡通，一个可爱的灰色小猫咪，在一个圆形睡垫睡着，头埋在胸前，很悠闲，全身，处在一个房间内，毛发柔顺",
    "a cartoon grey kitten asleep on a round cushion, soft fur",
    "二次元 anime style，一个 girl 站在 Tokyo 街头, 4K, masterpiece",
    "Kolors v1.0 & SDXL-LoRA (rank=16) @ 1024x1024 #tag $5 100%",
    # emoji, incl. ZWJ sequences, flags, skin tones, variation selectors
    "😀",
    "猫🐱和狗🐶 👨‍👩‍👧‍👦 🇨🇳🇺🇸 👍🏽 ❤️ ☕︎",
    # full-width punctuation and letters (no NFKC in this model: kept as typed)
    "，。！？；：“”‘’（）【】《》、…—～",
    "ＡＢＣ１２３　ｋｉｔｔｅｎ！",
    # whitespace runs: spaces, tabs, newlines, CR, U+3000, other Unicode spaces
    " ",
    "  ",
    "      many      spaces      ",
    "\t",
    "a\tb\t\tc",
    "\n",
    "line one\nline two\n\n\nline five\n",
    "crlf\r\nline\r\n",
    "\u3000",
    "\u3000\u3000全角空格\u3000\u3000",
    "nbsp\u00a0thin\u2009hair\u200aideo\u3000zwsp\u200bend",
    " \t\n\u3000 \t\n\u3000 ",
    # empty-ish
    "",
    "\u200b",
    "\ufeff",
    "\x00",
    "a\x00b",
    ".",
    # text that looks like special tokens, alone, glued and spaced
    *SPECIAL_LOOKALIKES,
    "".join(SPECIAL_LOOKALIKES),
    " ".join(SPECIAL_LOOKALIKES),
    "<|user|>画一只猫<|assistant|>",
    "[gMASK]<sop>一只猫</s>",
    "[gMASK]sop 一只猫",
    # rare characters (byte fallback), combining marks, RTL, math
    "𠀀𪚥𰻞 biáng",
    "e\u0301 a\u0308 ñ",
    "مرحبا שלום Привет Γειά",
    "∑∫√∞ ≠ ≤ ≥ ½ ² ℃",
]


def reference_count(text: str) -> int:
    """What the pipeline's ChatGLMTokenizer gives, untruncated (the count the limit is about)."""
    return len(kolors_tokenizer()(text)["input_ids"])


def pipeline_kept(text: str) -> int:
    """Tokens KolorsPipeline feeds the text encoder: its exact tokenizer call, then the mask."""
    enc = kolors_tokenizer()(
        [text], padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt"
    )
    assert enc["input_ids"].shape == (1, MAX_TOKENS)
    return int(enc["attention_mask"].sum())


@pytest.mark.parametrize("text", CORPUS, ids=[ascii(t)[:40] for t in CORPUS])
def test_fast_count_equals_the_chatglm_tokenizer(text):
    n = count_tokens(text)
    assert n == reference_count(text)
    assert pipeline_kept(text) == min(n, MAX_TOKENS)


def test_prefix_tokens_are_counted():
    tok = kolors_tokenizer()
    ids = tok("小猫咪")["input_ids"]
    assert ids[:2] == [tok.convert_tokens_to_ids("[gMASK]"), tok.convert_tokens_to_ids("sop")]
    assert count_tokens("") == 2 == reference_count("")
    # A typed "[gMASK]" is plain text, not the special id: more than one token.
    assert count_tokens("[gMASK]") == reference_count("[gMASK]") > 3


def exactly(n: int, base: str) -> str:
    """The shortest prefix of `base` repeated that is exactly `n` Kolors tokens."""
    text = base * (4 * n // max(1, count_tokens(base) - 2) + 4)
    for k in range(len(text) + 1):
        if count_tokens(text[:k]) == n:
            return text[:k]
    raise AssertionError(f"no prefix of {base!r} is exactly {n} tokens")


BASES = {
    "chinese": "卡通，一个穿着休闲白衬衫和牛仔裤的青年坐在沙发上，抚摸怀中的灰色小猫咪。",
    "english": "a cartoon grey kitten sleeping on a round cushion, soft fur, cozy room, warm light. ",
    "mixed": "二次元 anime，一个 girl 在 Tokyo 街头😀，\u3000masterpiece, 4K；",
}


@pytest.mark.parametrize("kind", BASES)
@pytest.mark.parametrize("n", [MAX_TOKENS - 1, MAX_TOKENS, MAX_TOKENS + 1])
def test_prompts_at_the_limit_count_exactly(kind, n):
    text = exactly(n, BASES[kind])
    assert reference_count(text) == n
    assert pipeline_kept(text) == min(n, MAX_TOKENS)  # 257: the pipeline would cut one token


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kind", BASES)
@pytest.mark.parametrize("field", ["prompt", "negative_prompt", "story_negative"])
def test_validate_accepts_256_and_refuses_257(capsys, tmp_path, write_story, kind, field):
    from harness.config.story import load_story

    for n in (MAX_TOKENS - 1, MAX_TOKENS, MAX_TOKENS + 1):
        text = exactly(n, BASES[kind])
        data = small_story()
        if field == "story_negative":
            data["negative_prompt"] = text
            where = "negative_prompt"
        else:
            data["panels"][3][field] = text
            where = f"panels[3].{field}"
        path = write_story(data, name=f"story-{n}.yaml")
        loaded = load_story(path, check_tokens=False)
        got = (
            loaded.story.negative_prompt
            if field == "story_negative"
            else getattr(loaded.story.panels[3], field)
        )
        assert got == text and reference_count(got) == n  # the story carries the prompt as built
        before = snapshot(tmp_path)
        code = main(["validate", str(path)])
        out, err = capsys.readouterr()
        if n <= MAX_TOKENS:
            assert code == 0, err
            assert out.startswith(f"{path}: ok:") and err == ""
        else:
            assert code == 2, err
            lines = err.splitlines()
            assert len(lines) == 1 and out == "", err
            assert str(path) in lines[0] and where in lines[0], lines[0]
            assert f"{n} Kolors tokens, over the limit of {MAX_TOKENS}" in lines[0], lines[0]
        assert snapshot(tmp_path) == before


# Random text, weighted toward what matters: the lookalikes, whitespace runs, CJK, emoji, bytes.
FRAGMENTS = st.one_of(
    st.sampled_from(SPECIAL_LOOKALIKES),
    st.text(alphabet=" \t\n\r\u3000\u00a0\u200b", min_size=1, max_size=6),
    st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), max_size=8),
    st.text(alphabet=st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF), max_size=3),
    st.text(alphabet="，。！？、；：“”（）【】《》ＡＢＣ１２３", max_size=4),
    st.text(alphabet=st.characters(codec="ascii"), max_size=10),
    st.text(max_size=10),  # any code point but surrogates (a UTF-8 story cannot hold those)
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=60), st.lists(FRAGMENTS, max_size=30).map("".join)))
def test_fast_count_equals_the_chatglm_tokenizer_on_random_text(text):
    assert count_tokens(text) == reference_count(text)


NO_TORCH = """
import json, sys
from harness.cli import main
codes = [main(["validate", p]) for p in sys.argv[1:]]
heavy = sorted(m for m in ("torch", "transformers", "diffusers") if m in sys.modules)
print(json.dumps({"codes": codes, "heavy": heavy}))
"""


def test_validate_imports_no_torch_transformers_or_diffusers(tmp_path, write_story):
    """Both ways out of the count (accepted and refused) stay off the heavy imports."""
    data = small_story()
    data["panels"][0]["prompt"] = exactly(MAX_TOKENS + 1, BASES["mixed"])
    too_long = write_story(data)
    result = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(ROOT / "stories" / "cat-and-youth.yaml"), str(too_long)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report == {"codes": [0, 2], "heavy": []}, result.stderr
    assert "257 Kolors tokens" in result.stderr
