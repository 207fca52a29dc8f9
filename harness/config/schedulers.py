"""Scheduler names a story may use, mapped to diffusers classes built from the model's config."""

from __future__ import annotations

from typing import Any

# Kolors' own scheduler config (shared/STACK.md): EulerDiscrete, 1100 training steps, leading spacing.
KOLORS_SCHEDULER_CONFIG: dict[str, Any] = dict(
    num_train_timesteps=1100,
    beta_start=0.00085,
    beta_end=0.014,
    beta_schedule="scaled_linear",
    steps_offset=1,
    timestep_spacing="leading",
    prediction_type="epsilon",
    interpolation_type="linear",
    use_karras_sigmas=False,
)

# name -> (diffusers class name, config overrides)
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),  # Kolors' own
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmpp_2m_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True},
    ),
    "ddim": ("DDIMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


def make_scheduler(name: str, base_config):
    """A fresh scheduler `name` built from the model's own scheduler config."""
    import diffusers

    cls_name, overrides = SCHEDULERS[name]
    return getattr(diffusers, cls_name).from_config(base_config, **overrides)
