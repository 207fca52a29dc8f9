"""LoRA files: safe loading, and conversion between diffusers/PEFT, kohya and DiffSynth naming."""
