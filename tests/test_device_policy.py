"""The one device policy (harness.device): each role's device and dtypes on every kind of machine.

The policy is a pure function of the request and the machine's capabilities, so the table is
checked for a CPU-only machine and for GPUs with and without bfloat16 here, on a CPU, by passing
the capabilities in. MPS is not a device the harness uses, so it has no row.
"""

from __future__ import annotations

import weakref

import pytest

from harness import device as dev
from harness.device import Capabilities, Placement
from harness.errors import HarnessError

CPU = Capabilities(cuda=False)
GPU_BF16 = Capabilities(cuda=True, bf16=True)  # Ampere and later
GPU_FP16 = Capabilities(cuda=True, bf16=False)  # e.g. a T4 or V100

F32, BF16, F16 = "float32", "bfloat16", "float16"

# (machine, role, --device, keyword arguments) -> (device, weights, compute, text_encoder, vae)
TABLE = [
    # A CPU-only machine: float32 everywhere, whatever the role.
    (CPU, "render", "auto", {}, ("cpu", F32, F32, F32, F32)),
    (CPU, "train", "auto", {}, ("cpu", F32, F32, F32, F32)),
    (CPU, "score", "auto", {}, ("cpu", F32, F32, F32, F32)),
    (CPU, "render", "cpu", {"tiny": True}, ("cpu", F32, F32, F32, F32)),
    # A GPU with bfloat16.
    (GPU_BF16, "render", "auto", {}, ("cuda", BF16, BF16, BF16, BF16)),
    (GPU_BF16, "render", "cuda", {}, ("cuda", BF16, BF16, BF16, BF16)),
    (GPU_BF16, "render", "cpu", {}, ("cpu", F32, F32, F32, F32)),
    (GPU_BF16, "render", "auto", {"weights": F16}, ("cuda", F16, F16, F16, F32)),
    (GPU_BF16, "render", "auto", {"weights": F32}, ("cuda", F32, F32, F32, F32)),
    (GPU_BF16, "render", "auto", {"tiny": True}, ("cpu", F32, F32, F32, F32)),
    (GPU_BF16, "render", "cuda", {"tiny": True}, ("cuda", F32, F32, F32, F32)),
    (GPU_BF16, "train", "auto", {}, ("cuda", F32, F32, BF16, F32)),
    (GPU_BF16, "train", "auto", {"mixed_precision": "bf16"}, ("cuda", BF16, BF16, BF16, F32)),
    (GPU_BF16, "train", "auto", {"mixed_precision": "fp16"}, ("cuda", F16, F16, BF16, F32)),
    (GPU_BF16, "train", "cuda", {"tiny": True}, ("cuda", F32, F32, F32, F32)),
    (GPU_BF16, "train", "cpu", {}, ("cpu", F32, F32, F32, F32)),
    (GPU_BF16, "score", "auto", {}, ("cuda", F32, F32, F32, F32)),
    (GPU_BF16, "score", "cpu", {}, ("cpu", F32, F32, F32, F32)),
    # A GPU without bfloat16: float16, with the VAE decoding in float32.
    (GPU_FP16, "render", "auto", {}, ("cuda", F16, F16, F16, F32)),
    (GPU_FP16, "train", "auto", {}, ("cuda", F32, F32, F16, F32)),
    (GPU_FP16, "train", "auto", {"mixed_precision": "fp16"}, ("cuda", F16, F16, F16, F32)),
    (GPU_FP16, "score", "auto", {}, ("cuda", F32, F32, F32, F32)),
]


@pytest.mark.parametrize(
    "caps, role, requested, kwargs, expected",
    TABLE,
    ids=[
        f"{'bf16-gpu' if c.bf16 else 'fp16-gpu' if c.cuda else 'cpu-only'}-{r}-{q}-"
        + ("-".join(f"{k}={v}" for k, v in kw.items()) or "default")
        for c, r, q, kw, _ in TABLE
    ],
)
def test_policy_table(caps, role, requested, kwargs, expected):
    plan = dev.plan(role, requested, caps=caps, **kwargs)
    assert (plan.device, plan.weights, plan.compute, plan.text_encoder, plan.vae) == expected
    assert plan.role == role
    assert plan.placement == Placement(plan.device, plan.weights)
    assert plan.autocast == (plan.compute != F32)


REFUSED = [
    (CPU, "render", "cuda", {}, "no CUDA device is available"),
    (CPU, "score", "cuda", {}, "no CUDA device is available"),
    (CPU, "train", "auto", {"mixed_precision": "fp16"}, "needs a CUDA device"),
    (GPU_BF16, "train", "cpu", {"mixed_precision": "bf16"}, "needs a CUDA device"),
    (GPU_FP16, "train", "auto", {"mixed_precision": "bf16"}, "bf16 is not supported by this GPU"),
    (GPU_FP16, "render", "auto", {"weights": BF16}, "bfloat16 is not supported by this GPU"),
    (GPU_BF16, "render", "cpu", {"weights": F16}, "needs a CUDA device"),
    (GPU_BF16, "render", "gpu", {}, "expected auto, cpu or cuda"),
    (GPU_BF16, "train", "auto", {"mixed_precision": "fp8"}, "expected no, fp16 or bf16"),
    (GPU_BF16, "render", "auto", {"weights": "float64"}, "expected one of float32"),
]


@pytest.mark.parametrize("caps, role, requested, kwargs, message", REFUSED)
def test_policy_refuses_what_the_machine_cannot_run(caps, role, requested, kwargs, message):
    with pytest.raises(HarnessError, match=message):
        dev.plan(role, requested, caps=caps, **kwargs)


@pytest.mark.parametrize("caps", [CPU, GPU_BF16, GPU_FP16])
@pytest.mark.parametrize("source", ["tiny", "local", "modelscope"])
@pytest.mark.parametrize("requested", ["auto", "cpu", "cuda"])
def test_choose_is_the_render_plan(caps, source, requested):
    """`choose` (what render and re-render call) is the render role's placement, nothing else."""
    try:
        expected = dev.plan("render", requested, tiny=source == "tiny", caps=caps).placement
    except HarnessError as e:
        with pytest.raises(HarnessError, match=str(e)):
            dev.choose(source, requested, caps=caps)
        return
    assert dev.choose(source, requested, caps=caps) == expected


def test_placement_vae_dtype_follows_the_render_plan():
    for caps in (CPU, GPU_BF16, GPU_FP16):
        plan = dev.plan("render", caps=caps)
        assert plan.placement.vae_dtype_name == plan.vae


def test_this_machine_is_probed_from_torch():
    import torch

    caps = dev.probe()
    assert caps.cuda == torch.cuda.is_available()
    if caps.cuda:
        assert caps.bf16 == torch.cuda.is_bf16_supported()
    # with no capabilities given, the policy asks this machine
    assert dev.plan("render") == dev.plan("render", caps=caps)
    assert dev.plan("score", "cpu").torch_dtype("float32") is torch.float32


def test_release_frees_dropped_models():
    import torch

    class Holder:
        def __init__(self):
            self.model = torch.nn.Linear(8, 8)
            self.me = self  # a reference cycle: only a collection frees it

    holder = Holder()
    gone = weakref.ref(holder.model)
    del holder
    dev.release()
    assert gone() is None


def test_resident_placement_keeps_every_component_on_the_device():
    """`place(..., resident=True)` keeps all of a pipeline on its device through both phases; a
    staged pipeline has only the phase's components there. "meta" stands in for an accelerator
    (the moves onto it are real; nothing is moved back from it)."""
    from harness.models.loader import place, stage
    from harness.models.tiny import build_tiny_pipeline

    def where(pipe):
        return {n: next(getattr(pipe, n).parameters()).device.type for n in ("text_encoder", "unet", "vae")}

    staged = build_tiny_pipeline()
    place(staged, "meta", resident=False)
    assert where(staged) == {"text_encoder": "meta", "unet": "cpu", "vae": "cpu"}

    resident = build_tiny_pipeline()
    place(resident, "meta", resident=True)
    assert where(resident) == {"text_encoder": "meta", "unet": "meta", "vae": "meta"}
    stage(resident, "denoise", "meta")  # what render() does between encoding and denoising
    assert where(resident) == {"text_encoder": "meta", "unet": "meta", "vae": "meta"}


@pytest.mark.parametrize(
    "caps, argv, expected",
    [
        (
            GPU_BF16,
            [],
            {"render": ("cuda", BF16, BF16), "train": ("cuda", BF16, BF16), "score": ("cuda", F32, F32)},
        ),
        (
            GPU_FP16,
            [],
            {"render": ("cuda", F16, F32), "train": ("cuda", F16, F16), "score": ("cuda", F32, F32)},
        ),
        (GPU_BF16, ["--dtype", "fp32"], {"render": ("cuda", F32, F32), "train": ("cuda", F32, BF16)}),
        (GPU_BF16, ["--tiny"], {"render": ("cpu", F32, F32), "train": ("cpu", F32, F32)}),
        (CPU, [], {"render": ("cpu", F32, F32), "train": ("cpu", F32, F32), "score": ("cpu", F32, F32)}),
    ],
)
def test_the_benchmark_asks_the_same_policy(caps, argv, expected):
    """bench/kolors_bench.py measures what the harness would run: its plans are the policy's.
    (render: device, weights, vae; train: device, weights, text encoder; score: device, weights, compute)"""
    from bench.kolors_bench import parse_args, plans

    got = plans(parse_args(["--out", "x.json", *argv]), caps=caps)
    fields = {"render": ("device", "weights", "vae"), "train": ("device", "weights", "text_encoder")}
    for role, want in expected.items():
        names = fields.get(role, ("device", "weights", "compute"))
        assert tuple(getattr(got[role], n) for n in names) == want, role


@pytest.mark.parametrize(
    "caps, argv, message",
    [
        (GPU_FP16, ["--dtype", "bf16"], "bfloat16 is not supported by this GPU"),
        (CPU, ["--device", "cuda"], "no CUDA device"),
        (CPU, ["--dtype", "fp16"], "needs a CUDA device"),
    ],
)
def test_the_benchmark_refuses_what_the_harness_would_not_run(caps, argv, message):
    from bench.kolors_bench import parse_args, plans

    with pytest.raises(SystemExit, match=message):
        plans(parse_args(["--out", "x.json", *argv]), caps=caps)
