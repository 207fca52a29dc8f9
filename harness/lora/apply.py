"""Apply a LoRA file to a loaded Kolors pipeline's UNet, at a strength.

The file first goes through the judges' check against this UNet (`harness.lora.checks`): what
renders is what `verify` accepts, and a wrong file gets that check's one line.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import HarnessError, first_line

LORA_ADAPTER = "story"  # the PEFT adapter name the harness loads a story's LoRA under


def apply_lora(pipe, path: Path, scale: float) -> None:
    """Load a diffusers/PEFT- or kohya-naming LoRA into the UNet and set its strength.

    The judges' check runs first (see the module docstring).
    """
    from diffusers.utils import logging as dlog

    from harness.lora.checks import check_lora, linear_shapes

    problems, facts = check_lora(path, linear_shapes(pipe.unet))
    if not problems and facts.get("format") == "diffsynth":
        problems = ["DiffSynth naming; convert it with `harness lora import FILE --out DIR` first"]
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise HarnessError(f"{path}: cannot be applied as a Kolors LoRA: {problems[0]}{more}")
    dlog.disable_default_handler()  # diffusers logs a failure in full before raising it
    try:
        pipe.load_lora_weights(str(path), adapter_name=LORA_ADAPTER)
    except Exception as e:  # anything the check above could not see: one line naming the file
        raise HarnessError(f"{path}: cannot be applied as a Kolors LoRA: {first_line(e)}") from None
    finally:
        dlog.enable_default_handler()
    pipe.set_adapters([LORA_ADAPTER], adapter_weights=[scale])
