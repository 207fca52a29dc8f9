"""The LoRA check (judges' and render's): shapes against the base UNet in every naming, one safe reader.

LoRA files are written in each naming by harness.lora.formats from a peft state dict of the
tiny Kolors UNet; the base shapes come from that UNet's saved config.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from harness.errors import HarnessError
from harness.lora import formats
from harness.lora.checks import check_lora, unet_linear_shapes
from harness.lora.safeload import MAX_LORA_TENSORS, load_lora_file

TO_Q = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
DS_TO_Q = "blocks.7.transformer_blocks.0.attn1.to_q"  # DiffSynth's name for TO_Q
KOHYA_TO_Q = "lora_unet_" + TO_Q.replace(".", "_")


@pytest.fixture(scope="module")
def base_shapes(tiny_model_dir):
    return unet_linear_shapes(tiny_model_dir / "unet" / "config.json")


@pytest.fixture(scope="module")
def peft_sd(tiny_model_dir):
    """A rank-4 canonical LoRA on the tiny UNet's attention layers, seeded random values."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(tiny_model_dir / "unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(v.shape, generator=gen) for k, v in get_peft_model_state_dict(unet).items()}


def _widened(peft_sd: dict) -> dict:
    """`peft_sd` with TO_Q sized for the full Kolors (640 features, the tiny UNet has 64)."""
    sd = dict(peft_sd)
    sd[f"{TO_Q}.lora_A.weight"], sd[f"{TO_Q}.lora_B.weight"] = torch.ones(4, 640), torch.ones(640, 4)
    return sd


def _kohya(sd: dict, path):
    save_file(formats.to_kohya(sd, formats.LoraMeta(4, 4.0)), str(path))
    return path


def _diffsynth(sd: dict, path):
    torch.save(formats.to_diffsynth(sd), path)  # the baseline notebook's .ckpt
    return path


WRITERS = {"kohya": (_kohya, ".safetensors", KOHYA_TO_Q), "diffsynth": (_diffsynth, ".ckpt", DS_TO_Q)}


@pytest.mark.parametrize("naming", sorted(WRITERS))
def test_shapes_are_checked_in_every_naming(naming, peft_sd, base_shapes, tmp_path):
    write, suffix, name = WRITERS[naming]
    good = write(peft_sd, tmp_path / f"good{suffix}")
    problems, facts = check_lora(good, base_shapes)
    assert problems == [] and facts["format"] == naming and facts["shapes_checked"] is True

    bad = write(_widened(peft_sd), tmp_path / f"bad{suffix}")
    problems, facts = check_lora(bad, base_shapes)
    assert problems == [
        f"{name} ({TO_Q}): LoRA maps 640 -> 640 features, the base model's layer maps 64 -> 64 "
        "(made for another model?)"
    ]
    assert facts["shapes_checked"] is True
    assert check_lora(bad)[0] == []  # without the base config nothing is claimed about shapes


def test_names_that_map_to_no_layer_of_the_base_are_problems(base_shapes, tmp_path):
    one = {f"{TO_Q}.lora_A.weight": torch.ones(4, 64), f"{TO_Q}.lora_B.weight": torch.ones(64, 4)}
    no_layer = "no such Linear layer in the base model's UNet"
    # blocks.15 is a layer of the full Kolors the tiny UNet lacks; DiffSynth has no blocks.99.
    ds = formats.to_diffsynth(one)
    for block in ("15", "99"):
        ds.update(
            {
                k.replace("blocks.7.", f"blocks.{block}."): v.clone()
                for k, v in formats.to_diffsynth(one).items()
            }
        )
    torch.save(ds, tmp_path / "ds.ckpt")
    problems, _ = check_lora(tmp_path / "ds.ckpt", base_shapes)
    full_only = TO_Q.replace("down_blocks.1.", "down_blocks.2.")
    assert problems == [
        f"{DS_TO_Q.replace('.7.', '.15.')} ({full_only}): {no_layer}",
        f"{DS_TO_Q.replace('.7.', '.99.')}: not a layer of DiffSynth's Kolors UNet "
        "(no diffusers name for it)",
    ]
    # kohya-ss's own SDXL naming (input_blocks) is not a diffusers module of the base.
    kohya = formats.to_kohya(one, formats.LoraMeta(4, 4.0))
    sgm = {k.replace("down_blocks_1", "input_blocks_4"): v.clone() for k, v in kohya.items()}
    save_file({**kohya, **sgm}, str(tmp_path / "k.safetensors"))
    problems, _ = check_lora(tmp_path / "k.safetensors", base_shapes)
    assert problems == [
        f"{KOHYA_TO_Q.replace('down_blocks_1', 'input_blocks_4')}: {no_layer} (kohya-ss SDXL block names "
        "input_blocks/middle_block/output_blocks are not read; export with diffusers block names)"
    ]


def _both(path):
    """The one-line reason from both entry points (the reader's has the path in front)."""
    with pytest.raises(HarnessError) as e:
        load_lora_file(path)
    problems, _ = check_lora(path)
    assert len(problems) == 1 and str(e.value) == f"{path}: {problems[0]}"
    return problems[0]


def test_the_tensor_cap_holds_for_both_entry_points(tmp_path):
    n = MAX_LORA_TENSORS + 1
    save_file({f"t{i}": torch.zeros(1) for i in range(n)}, str(tmp_path / "many.safetensors"))
    one_storage = torch.zeros(n)  # views of one storage: a small, quick pickle
    torch.save({f"t{i}": one_storage[i : i + 1] for i in range(n)}, tmp_path / "many.ckpt")
    for name in ("many.safetensors", "many.ckpt"):
        assert _both(tmp_path / name) == f"{n} tensors is over the cap of {MAX_LORA_TENSORS}"


def test_pickles_are_refused_by_both_entry_points_naming_the_global(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({f"{DS_TO_Q}.lora_A.default.weight": Payload()}, tmp_path / "evil.ckpt")
    assert _both(tmp_path / "evil.ckpt") == (
        "refused: holds pickled Python objects that weights_only loading rejects (global io.open)"
    )
    assert not marker.exists(), "the pickle was executed"
    torch.save({"state_dict": {"w": torch.zeros(1), "step": 3}}, tmp_path / "nested.ckpt")
    assert _both(tmp_path / "nested.ckpt") == (
        "refused: 'state_dict' -> 'step' holds a int, not a tensor "
        "(only a flat mapping of names to tensors is accepted)"
    )
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    assert _both(tmp_path / "junk.safetensors").startswith("not a readable safetensors file (")


def test_a_lightning_checkpoint_is_read_through_its_state_dict(peft_sd, base_shapes, tmp_path):
    ds = formats.to_diffsynth(peft_sd)
    torch.save({"state_dict": ds, "epoch": 0, "global_step": 500}, tmp_path / "epoch=0.ckpt")
    problems, facts = check_lora(tmp_path / "epoch=0.ckpt", base_shapes)
    assert problems == [] and facts["tensors"] == len(ds) and facts["shapes_checked"]
