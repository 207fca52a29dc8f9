"""Story and floor sections: a whole story two ways, and the UNet compute it cannot go below.

Owns:
- `run_story`: (a) the baseline, a plain `KolorsPipeline` called once per panel with every
  component resident, and (b) the harness render path (`harness.render.engine.render` with the
  `PanelJob`s and `Sampling` that `render_story` builds), on the same pipeline object, same
  prompts, seeds and sampling; seconds per story, peak GPU memory of each, the ratio b/a, and
  how far panel 1 of (b) is from panel 1 of (a) in uint8 and in float.
- `run_floor`: panels x steps guided UNet forwards (batch 2: conditional + unconditional) with
  the pipeline's exact shapes, timed alone, plus the FLOPs of one forward (torch's counter).
Must not change the harness: the only hook is a per-object wrapper around the pipeline's
image post-processor that keeps panel 1's float image (removed afterwards). Placement goes
through the harness's loader (`harness.models.loader.place`): staged per phase as the harness
renders, or every component resident for (a) and the "resident" variant; the dtypes are the
harness's render plan (`Settings.render`), and memory is freed with `harness.device.release`.
"""

from __future__ import annotations

import contextlib

from bench.bench_util import Settings, allocated_gib, log, now, peak_gib, reset_peak
from harness.device import release


def story_jobs(settings: Settings):
    """The first `panels` panels of the story file as PanelJobs, exactly as render_story builds them."""
    from harness.config.story import load_story
    from harness.render.engine import PanelJob

    story = load_story(settings.story).story
    if settings.panels > story.panel_count:
        raise ValueError(f"--panels {settings.panels}: {settings.story} has only {story.panel_count} panels")
    return [
        PanelJob(i, story.panels[i - 1].prompt, story.negative_for(i - 1), story.panels[i - 1].seed)
        for i in range(1, settings.panels + 1)
    ]


def sampling_of(settings: Settings):
    from harness.config.story import Sampling

    return Sampling(
        steps=settings.steps,
        guidance=float(settings.guidance),
        width=settings.size,
        height=settings.size,
        scheduler="euler",
    )


@contextlib.contextmanager
def keep_first_float_image(pipe, sink: list):
    """Record the first image the pipeline post-processes as float HWC in 0..1 (before uint8)."""
    proc = pipe.image_processor
    original = proc.postprocess

    def postprocess(image, output_type="pil", **kwargs):
        if not sink:
            sink.append(original(image, output_type="np", **kwargs)[0].astype("float64"))
        return original(image, output_type=output_type, **kwargs)

    proc.postprocess = postprocess
    try:
        yield
    finally:
        del proc.postprocess  # back to the class's method


def get_pipeline(settings: Settings, state: dict):
    """The benchmark's pipeline, built once and shared by the story and floor sections."""
    if state.get("pipe") is None:
        from bench.kolors_arch import build_pipeline, param_count

        size = "tiny" if settings.tiny else "full-size"
        plan = settings.render
        log(f"building {size} Kolors on {plan.device} ({plan.weights})")
        t0 = now(plan.device)
        pipe = build_pipeline(plan.device, plan.torch_dtype(plan.weights), tiny=settings.tiny)
        state["build"] = {
            "seconds": round(now(settings.device) - t0, 3),
            "resident_gib": allocated_gib(settings.device),
            "params": {
                "unet": param_count(pipe.unet),
                "text_encoder": param_count(pipe.text_encoder),
                "vae": param_count(pipe.vae),
            },
        }
        if settings.compile:
            import torch

            pipe.unet = torch.compile(pipe.unet)
        state["pipe"] = pipe
    return state["pipe"]


def _plain_call(pipe, job, settings: Settings, steps: int):
    import torch

    return pipe(
        prompt=job.prompt,
        negative_prompt=job.negative_prompt,
        generator=torch.Generator("cpu").manual_seed(job.seed),
        num_inference_steps=steps,
        guidance_scale=settings.guidance,
        height=settings.size,
        width=settings.size,
    ).images[0]


def run_story(settings: Settings, state: dict) -> dict:
    import numpy as np

    from harness.models.loader import place
    from harness.render.engine import encode_texts, render

    dev = settings.device
    jobs = story_jobs(settings)
    state["prompts"] = [j.prompt for j in jobs]
    pipe = get_pipeline(settings, state)

    # A short untimed render through each path first, so one-time CUDA/cuDNN set-up and
    # torch.compile (which compiles again for the harness path: inference_mode there, no_grad in
    # the plain pipeline) are billed to neither timed run.
    log("story: warm-up renders, one per path (2 steps, untimed)")
    t0 = now(dev)
    _plain_call(pipe, jobs[0], settings, steps=2)
    warmup_a = now(dev) - t0
    t0 = now(dev)
    render(pipe, jobs[:1], sampling_of(settings).model_copy(update={"steps": 2}), device=dev, progress=False)
    warmup_b = now(dev) - t0
    place(pipe, dev, resident=True)  # render() staged the pipeline (ChatGLM on the CPU); (a) wants all
    panel1 = encode_texts(pipe, [jobs[0].prompt, jobs[0].negative_prompt], dev)  # for the probe below

    log(f"story (a): plain KolorsPipeline, {len(jobs)} calls of {settings.steps} steps")
    float_a: list = []
    release()
    reset_peak(dev)
    t0 = now(dev)
    with keep_first_float_image(pipe, float_a):
        images_a = [_plain_call(pipe, job, settings, settings.steps) for job in jobs]
    seconds_a = now(dev) - t0
    peak_a = peak_gib(dev)

    log(f"story (b): harness.render.engine.render, batch_size {settings.batch_size}")
    float_b: list = []
    place(pipe, dev, resident=False)  # untimed: staged for encoding, as load_pipeline leaves it
    release()
    reset_peak(dev)
    t0 = now(dev)
    with keep_first_float_image(pipe, float_b):
        done = render(
            pipe, jobs, sampling_of(settings), device=dev, batch_size=settings.batch_size, progress=False
        )
    seconds_b = now(dev) - t0
    peak_b = peak_gib(dev)
    images_b = [image for _, image in sorted(done, key=lambda d: d[0].index)]

    # Probe: the peak of denoising + decoding alone (text encoder off the GPU, embeddings given):
    # the denoise phase of (b) without the encode phase.
    import torch

    release()
    reset_peak(dev)
    resident_b = allocated_gib(dev)
    with torch.inference_mode():
        pipe(
            prompt_embeds=panel1[jobs[0].prompt][0],
            pooled_prompt_embeds=panel1[jobs[0].prompt][1],
            negative_prompt_embeds=panel1[jobs[0].negative_prompt][0],
            negative_pooled_prompt_embeds=panel1[jobs[0].negative_prompt][1],
            num_inference_steps=2,
            guidance_scale=settings.guidance,
            height=settings.size,
            width=settings.size,
            generator=torch.Generator("cpu").manual_seed(jobs[0].seed),
        )
    denoise_peak = peak_gib(dev)
    del panel1

    a0 = np.asarray(images_a[0].convert("RGB"), dtype=np.int16)
    b0 = np.asarray(images_b[0].convert("RGB"), dtype=np.int16)
    all_diff = max_diff(images_a, images_b)
    variants = {
        name: run_variant(name, pipe, jobs, settings, seconds_a, seconds_b, images_a, images_b)
        for name in settings.variants
    }
    state["images"] = images_b
    n = len(jobs)
    return {
        "panels": n,
        "size": settings.size,
        "steps": settings.steps,
        "guidance": settings.guidance,
        "story_file": settings.story,
        "seeds": [j.seed for j in jobs],
        "warmup_s": {"baseline": round(warmup_a, 4), "harness": round(warmup_b, 4)},
        "compile": settings.compile,
        "baseline": {
            "what": "plain KolorsPipeline(prompt=..., negative_prompt=..., generator=CPU seed) once per "
            "panel, every component resident",
            "seconds": round(seconds_a, 4),
            "seconds_per_panel": round(seconds_a / n, 4),
            "peak_vram_gib": peak_a,
        },
        "harness": {
            "what": "harness.render.engine.render(pipe, PanelJobs, Sampling) as render_story calls it "
            "(PNG writing excluded)",
            "batch_size": settings.batch_size,
            "seconds": round(seconds_b, 4),
            "seconds_per_panel": round(seconds_b / n, 4),
            "peak_vram_gib": peak_b,
            "text_encoder_device_after": str(next(pipe.text_encoder.parameters()).device),
            "resident_after_gib": resident_b,
            "denoise_decode_peak_vram_gib": denoise_peak,
            "denoise_decode_peak_note": "peak of a 2-step render of panel 1 from precomputed embeddings "
            "with the text encoder off the GPU (UNet + VAE + activations only)",
        },
        "ratio_harness_over_baseline": round(seconds_b / seconds_a, 4),
        "speedup_vs_baseline": round(seconds_a / seconds_b, 4),
        "panel1_max_abs_diff_uint8": int(np.abs(a0 - b0).max()),
        "panel1_max_abs_diff_float": float(np.abs(float_a[0] - float_b[0]).max()),
        "all_panels_max_abs_diff_uint8": all_diff,
        "panel1_finite": bool(np.isfinite(float_a[0]).all()),
        "variants": variants,
    }


def max_diff(images_x: list, images_y: list) -> int:
    """Largest uint8 difference over all panels of two renders of the same story."""
    import numpy as np

    return max(
        int(np.abs(np.asarray(x.convert("RGB"), np.int16) - np.asarray(y.convert("RGB"), np.int16)).max())
        for x, y in zip(images_x, images_y, strict=True)
    )


# Candidate fast paths, each measured as one more harness render of the same story, so a change is
# adopted only when it wins here without changing the panels (see docs/performance.md).
VARIANTS = ("resident", "batch2", "batch4", "channels_last")


def run_variant(name, pipe, jobs, settings: Settings, seconds_a, seconds_b, images_a, images_b) -> dict:
    """One variant of the harness path (b): untimed set-up and a 2-step warm-up, then the story."""
    import torch

    from harness.models.loader import place
    from harness.render.engine import render

    dev = settings.device
    batch = {"batch2": 2, "batch4": 4}.get(name, settings.batch_size)
    resident = name == "resident"
    memory_format = torch.channels_last if name == "channels_last" else torch.contiguous_format
    what = {
        "resident": "every component stays on the GPU (no staging): speed against the 16 GiB peak",
        "batch2": "2 panels per pipeline call (CFG pairs of 2 panels in one UNet batch of 4)",
        "batch4": "4 panels per pipeline call (UNet batch of 8)",
        "channels_last": "UNet and VAE weights in channels_last memory format",
    }[name]
    log(f"story variant {name}: {what}")
    try:
        pipe.unet.to(memory_format=memory_format)
        pipe.vae.to(memory_format=memory_format)
        place(pipe, dev, resident=resident)
        warm = sampling_of(settings).model_copy(update={"steps": 2})
        render(pipe, jobs[:batch], warm, device=dev, batch_size=batch, progress=False)
        place(pipe, dev, resident=resident)
        release()
        reset_peak(dev)
        t0 = now(dev)
        done = render(pipe, jobs, sampling_of(settings), device=dev, batch_size=batch, progress=False)
        seconds = now(dev) - t0
        peak = peak_gib(dev)
    finally:
        pipe.unet.to(memory_format=torch.contiguous_format)
        pipe.vae.to(memory_format=torch.contiguous_format)
    images = [image for _, image in sorted(done, key=lambda d: d[0].index)]
    return {
        "what": what,
        "batch_size": batch,
        "seconds": round(seconds, 4),
        "peak_vram_gib": peak,
        "speedup_vs_baseline": round(seconds_a / seconds, 4),
        "speedup_vs_harness": round(seconds_b / seconds, 4),
        "max_abs_diff_uint8_vs_baseline": max_diff(images_a, images),
        "max_abs_diff_uint8_vs_harness": max_diff(images_b, images),
    }


def run_floor(settings: Settings, state: dict) -> dict:
    """Guided UNet forwards alone: panels x steps calls at batch 2, the pipeline's shapes and dtype."""
    import torch

    dev = settings.device
    if state.get("pipe") is not None:
        unet = state["pipe"].unet
        scheduler_config = state["pipe"].scheduler.config
        source = "the story section's pipeline UNet"
    else:
        from bench.kolors_arch import build_parts

        parts = build_parts(
            dev, {"unet": settings.render.torch_dtype(settings.render.weights)}, tiny=settings.tiny
        )
        unet = parts["unet"]
        state.setdefault("build", {"params": {"unet": sum(p.numel() for p in unet.parameters())}})
        if settings.compile:
            unet = torch.compile(unet)
        scheduler_config = parts["scheduler"].config
        source = "a UNet built for this section"
    from diffusers import EulerDiscreteScheduler

    cfg = unet.config
    hidden = int(cfg.encoder_hid_dim)
    lat = settings.size // 8
    dtype = settings.render.torch_dtype(settings.render.compute)
    gen = torch.Generator("cpu").manual_seed(0)
    x = torch.randn((2, cfg.in_channels, lat, lat), generator=gen).to(dev, dtype)
    ehs = torch.randn((2, 256, hidden), generator=gen).to(dev, dtype)
    added = {
        "text_embeds": torch.randn((2, hidden), generator=gen).to(dev, dtype),
        "time_ids": torch.tensor([[settings.size, settings.size, 0, 0, settings.size, settings.size]] * 2).to(
            dev, dtype
        ),
    }
    sched = EulerDiscreteScheduler.from_config(scheduler_config)
    sched.set_timesteps(settings.steps, device=dev)
    timesteps = list(sched.timesteps)

    def forward(t):
        return unet(x, t, encoder_hidden_states=ehs, added_cond_kwargs=added, return_dict=False)[0]

    with torch.inference_mode():
        t0 = now(dev)
        forward(timesteps[0])
        first_s = now(dev) - t0
        forward(timesteps[-1])
        flops = None
        try:
            from torch.utils.flop_counter import FlopCounterMode

            counter = FlopCounterMode(display=False)
            with counter:
                forward(timesteps[0])
            flops = int(counter.get_total_flops())
        except Exception as e:  # counting is a bonus; timing does not depend on it
            log(f"floor: FLOP counting failed ({type(e).__name__}: {e})")

        log(f"floor: {settings.panels} x {settings.steps} UNet forwards at batch 2 ({source})")
        release()
        reset_peak(dev)
        t0 = now(dev)
        for _ in range(settings.panels):
            for t in timesteps:
                forward(t)
        seconds = now(dev) - t0
    calls = settings.panels * len(timesteps)
    result = {
        "source": source,
        "calls": calls,
        "batch": 2,
        "shapes": {
            "sample": list(x.shape),
            "encoder_hidden_states": list(ehs.shape),
            "text_embeds": list(added["text_embeds"].shape),
            "time_ids": list(added["time_ids"].shape),
        },
        "first_call_s": round(first_s, 4),
        "seconds": round(seconds, 4),
        "seconds_per_call": round(seconds / calls, 6),
        "seconds_per_panel": round(seconds / settings.panels, 4),
        "peak_vram_gib": peak_gib(dev),
        "flops_per_call": flops,
        "achieved_tflops": round(flops * calls / seconds / 1e12, 3) if flops else None,
    }
    return result
