"""Kolors benchmark: full-size architecture with random weights, every cost of a story run side by side.

    python bench/kolors_bench.py --device cuda --out results.json            # full size, on a GPU
    python bench/kolors_bench.py --tiny --device cpu --out /tmp/smoke.json   # CPU smoke, seconds

Sections (all by default, pick with --sections):
  story  an 8-panel story: (a) plain KolorsPipeline once per panel vs (b) the harness render path
  floor  the same number of guided UNet forwards alone (batch 2), the compute floor
  train  LoRA training steps/s and peak memory: encoders every step vs latents/embeddings cached
  score  the harness's scoring models over the panels

No weights are downloaded: the full-size model is built from the real Kolors configs with random
weights, directly on the device (bench/kolors_arch.py); --tiny uses the harness's tiny Kolors.
Progress goes to stderr, a table to stdout, everything to the --out JSON (rewritten after each
section, so a crash keeps what was measured). One failing section is recorded and the others
still run; the exit code is 1 when any section failed. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: `bench` and `harness` importable
    sys.path.insert(0, str(ROOT))

from bench.bench_util import Settings, environment, error_record, log  # noqa: E402

SECTIONS = ("story", "floor", "train", "score")
DEFAULT_STORY = ROOT / "stories" / "cat-and-youth.yaml"
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}

# The targets: (result field, comparison, limit). Memory is in GiB (what a "16 GB" card
# holds); the render target is judged on the harness path, the training one on the cached way.
TARGETS = {
    "story_speedup_vs_baseline": (">=", 1.5),
    "harness_over_unet_floor": ("<=", 1.15),
    "render_peak_vram_gib": ("<=", 16.0),
    "train_peak_vram_gib": ("<=", 24.0),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="kolors_bench.py",
        description="Benchmark the harness's Kolors paths: story render, UNet floor, LoRA training, scoring.",
    )
    p.add_argument("--out", required=True, type=Path, help="JSON result file")
    p.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default=None,
        help="default: the harness's choice (harness.device): cuda when available, cpu for --tiny",
    )
    p.add_argument("--tiny", action="store_true", help="the harness's tiny Kolors instead of full size")
    p.add_argument(
        "--dtype",
        choices=tuple(DTYPES),
        default=None,
        help="render weights; default: the harness's (bf16 on a cuda GPU that supports it, else fp16; "
        "fp32 on cpu and for --tiny). Training follows it as mixed_precision",
    )
    p.add_argument(
        "--size", type=int, default=None, help="image side in pixels (default 1024; 64 with --tiny)"
    )
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default 50; 4 with --tiny)")
    p.add_argument("--panels", type=int, default=8, help="panels of the story to render (default 8)")
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--story", type=Path, default=DEFAULT_STORY, help="story file giving prompts and seeds")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma list of story,floor,train,score")
    p.add_argument(
        "--batch-size", type=int, default=1, help="harness render batch size (default 1, as harness)"
    )
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the UNet (compile time reported apart)"
    )
    p.add_argument(
        "--variants",
        default="resident,batch2,channels_last",
        help="extra harness renders of the story, each timed and compared with (a) and (b): comma list "
        "of resident,batch2,batch4,channels_last, or none (default resident,batch2,channels_last)",
    )
    p.add_argument(
        "--determinism",
        choices=("harness", "stock"),
        default="harness",
        help="harness: the settings render_story/train apply (harness.device.make_deterministic), for "
        "every section; stock: torch defaults",
    )
    p.add_argument(
        "--train-steps", type=int, default=None, help="timed training steps (default 10; 3 with --tiny)"
    )
    p.add_argument(
        "--train-warmup", type=int, default=None, help="untimed steps first (default 2; 1 with --tiny)"
    )
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--lora-alpha", type=float, default=4.0)
    p.add_argument(
        "--no-grad-checkpointing", action="store_true", help="train without gradient checkpointing"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default 1 with --device cpu: repeatable on a shared machine; "
        "torch's choice on cuda)",
    )
    p.add_argument(
        "--scorers",
        choices=("auto", "full", "tiny"),
        default="auto",
        help="scoring models: auto = full-size architectures unless --tiny",
    )
    return p.parse_args(argv)


def plans(args: argparse.Namespace, caps=None) -> dict:
    """The harness's device plans for the benchmark's request (`caps`: this machine's by default).

    Rendering uses --dtype when given; training runs with the mixed precision of those weights
    (none on the CPU), scoring in float32: what `harness run` and `harness train` would do.
    """
    from harness import device as hdev
    from harness.errors import HarnessError

    try:
        device = hdev.pick_device(args.device or "auto", tiny=args.tiny, caps=caps)
        weights = DTYPES[args.dtype] if args.dtype else None
        render = hdev.plan("render", device, tiny=args.tiny, weights=weights, caps=caps)
        mixed = hdev.MIXED_PRECISION_OF[render.weights] if device == "cuda" else "no"
        return {
            "render": render,
            "train": hdev.plan("train", device, tiny=args.tiny, mixed_precision=mixed, caps=caps),
            "score": hdev.plan("score", device, caps=caps),
        }
    except HarnessError as e:
        raise SystemExit(f"kolors_bench: {e}") from None


def make_settings(args: argparse.Namespace) -> tuple[Settings, list[str]]:
    chosen = plans(args)
    device = chosen["render"].device
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        raise SystemExit(
            f"kolors_bench: --sections: unknown {unknown or sections}; choose from {','.join(SECTIONS)}"
        )
    size = args.size or (64 if args.tiny else 1024)
    if size % 8 or not 64 <= size <= 2048:
        raise SystemExit(f"kolors_bench: --size {size}: must be a multiple of 8 between 64 and 2048")
    from bench.bench_story import VARIANTS

    variants = (
        [] if args.variants.strip() == "none" else [v.strip() for v in args.variants.split(",") if v.strip()]
    )
    if [v for v in variants if v not in VARIANTS]:
        raise SystemExit(f"kolors_bench: --variants: choose from {','.join(VARIANTS)} or none")
    if args.panels < 1 or args.batch_size < 1:
        raise SystemExit("kolors_bench: --panels and --batch-size must be at least 1")
    settings = Settings(
        device=device,
        dtype_name=chosen["render"].weights,
        **chosen,
        tiny=args.tiny,
        size=size,
        steps=args.steps or (4 if args.tiny else 50),
        panels=args.panels,
        guidance=args.guidance,
        story=str(args.story),
        batch_size=args.batch_size,
        compile=args.compile,
        determinism=args.determinism,
        train_steps=args.train_steps or (3 if args.tiny else 10),
        train_warmup=args.train_warmup if args.train_warmup is not None else (1 if args.tiny else 2),
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        grad_checkpointing=not args.no_grad_checkpointing,
        scorers=args.scorers,
        variants=variants,
    )
    return settings, [s for s in SECTIONS if s in sections]  # fixed order: floor reuses story's pipeline


def _get(d: dict, *path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def summarize(result: dict) -> dict:
    """Cross-section ratios and the issue's targets (judged only at full size on a GPU)."""
    s = result["sections"]
    story_h = _get(s, "story", "harness", "seconds")
    story_b = _get(s, "story", "baseline", "seconds")
    floor = _get(s, "floor", "seconds")
    summary = {
        "story_speedup_vs_baseline": _get(s, "story", "speedup_vs_baseline"),
        "harness_over_unet_floor": round(story_h / floor, 4) if story_h and floor else None,
        "baseline_over_unet_floor": round(story_b / floor, 4) if story_b and floor else None,
        "render_peak_vram_gib": _get(s, "story", "harness", "peak_vram_gib"),
        "render_denoise_decode_peak_vram_gib": _get(s, "story", "harness", "denoise_decode_peak_vram_gib"),
        "train_peak_vram_gib": _get(s, "train", "cached", "peak_vram_gib"),
        "train_speedup_cached_over_baseline": _get(s, "train", "speedup_cached_over_baseline"),
        "panel1_max_abs_diff_uint8": _get(s, "story", "panel1_max_abs_diff_uint8"),
        "panel1_max_abs_diff_float": _get(s, "story", "panel1_max_abs_diff_float"),
        "variants": {
            name: {
                k: v[k]
                for k in ("seconds", "speedup_vs_baseline", "peak_vram_gib", "max_abs_diff_uint8_vs_harness")
            }
            for name, v in (_get(s, "story", "variants") or {}).items()
        },
    }
    st = result["settings"]
    full = not st["tiny"] and st["device"] == "cuda" and st["size"] == 1024
    targets = {}
    for key, (op, limit) in TARGETS.items():
        value = summary.get(key)
        met = None
        if full and value is not None:
            met = value >= limit if op == ">=" else value <= limit
        targets[key] = {"target": f"{op} {limit:g}", "value": value, "met": met}
    if not full:
        targets["note"] = "targets are judged only at full size (1024 px) on a GPU; this run is not"
    return {"summary": summary, "targets": targets}


def write_json(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table(result: dict) -> str:
    """The human summary printed on stdout."""
    s = result["sections"]
    rows: list[tuple[str, str, str]] = []

    def status(name):
        sec = s.get(name)
        return None if sec is None else sec.get("status")

    if status("story") == "ok":
        st = s["story"]
        rows += [
            (
                "story",
                f"(a) baseline: plain pipeline x{st['panels']}, s/story",
                _fmt(st["baseline"]["seconds"]),
            ),
            ("story", "(a) baseline peak VRAM GiB", _fmt(st["baseline"]["peak_vram_gib"])),
            ("story", "(b) harness render, s/story", _fmt(st["harness"]["seconds"])),
            ("story", "(b) harness peak VRAM GiB", _fmt(st["harness"]["peak_vram_gib"])),
            (
                "story",
                "    denoise+decode alone, peak GiB",
                _fmt(st["harness"]["denoise_decode_peak_vram_gib"]),
            ),
            (
                "story",
                "ratio b/a (speedup a/b)",
                f"{_fmt(st['ratio_harness_over_baseline'])} ({_fmt(st['speedup_vs_baseline'])}x)",
            ),
            (
                "story",
                "panel 1 max |a-b| uint8 / float",
                f"{st['panel1_max_abs_diff_uint8']} / {st['panel1_max_abs_diff_float']:.3g}",
            ),
        ]
        for name, v in st.get("variants", {}).items():
            rows.append(
                (
                    "story",
                    f"variant {name}: s/story, speedup, peak GiB, max diff vs (b)",
                    f"{_fmt(v['seconds'])}, {_fmt(v['speedup_vs_baseline'])}x, "
                    f"{_fmt(v['peak_vram_gib'])}, {v['max_abs_diff_uint8_vs_harness']}",
                )
            )
    if status("floor") == "ok":
        fl = s["floor"]
        rows += [
            ("floor", f"{fl['calls']} UNet calls (batch 2), s", _fmt(fl["seconds"])),
            ("floor", "achieved TFLOP/s", _fmt(fl["achieved_tflops"])),
        ]
    if status("train") == "ok":
        for way in ("baseline_way", "cached"):
            t = s["train"].get(way, {})
            if t.get("status") == "ok":
                rows += [
                    ("train", f"{way}: steps/s", _fmt(t["steps_per_s"])),
                    ("train", f"{way}: peak VRAM GiB", _fmt(t["peak_vram_gib"])),
                ]
            else:
                rows.append(("train", f"{way}", "ERROR " + str(t.get("error", ""))[:60]))
    if status("score") == "ok":
        sc = s["score"]
        for label, c in sc["components"].items():
            rows.append(("score", f"{label} ({c['model']}), s", _fmt(c["seconds"])))
        rows.append(("score", f"total ({sc['models']} models), s", _fmt(sc["total_s"])))
    for name, sec in s.items():
        if sec.get("status") == "error":
            rows.append((name, "ERROR", sec["error"][:80]))
    for key, t in result.get("targets", {}).items():
        if isinstance(t, dict):
            met = {True: "met", False: "NOT met", None: "not judged"}[t["met"]]
            rows.append(("target", f"{key} {t['target']}", f"{_fmt(t['value'])} ({met})"))
    w0 = max(len(r[0]) for r in rows) if rows else 6
    w1 = max(len(r[1]) for r in rows) if rows else 6
    st = result["settings"]
    head = (
        f"Kolors benchmark: {'tiny' if st['tiny'] else 'full-size'} model on {st['device']} "
        f"({st['dtype']}), {st['panels']} panels, {st['size']} px, {st['steps']} steps"
    )
    return "\n".join([head] + [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings, sections = make_settings(args)
    threads = args.threads or (1 if settings.device == "cpu" else None)
    if threads:
        import torch

        torch.set_num_threads(threads)
    from bench.bench_score import run_score
    from bench.bench_story import run_floor, run_story
    from bench.bench_train import run_train
    from harness.device import release

    if settings.determinism == "harness":  # before any CUDA work: cuBLAS reads its workspace setting once
        from harness.device import make_deterministic

        make_deterministic(settings.render.placement)
    runners = {"story": run_story, "floor": run_floor, "train": run_train, "score": run_score}
    raw_argv = sys.argv if argv is None else ["bench/kolors_bench.py", *argv]
    result: dict = {
        "kind": "kolors-bench",
        "version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *raw_argv]),
        "cwd": os.getcwd(),
        "machine": environment(settings.device),
        "settings": {
            "device": settings.device,
            "dtype": settings.dtype_name,
            "plans": {p.role: asdict(p) for p in (settings.render, settings.train, settings.score)},
            "tiny": settings.tiny,
            "size": settings.size,
            "steps": settings.steps,
            "panels": settings.panels,
            "guidance": settings.guidance,
            "story": settings.story,
            "batch_size": settings.batch_size,
            "compile": settings.compile,
            "determinism": settings.determinism,
            "train_steps": settings.train_steps,
            "train_warmup": settings.train_warmup,
            "lora_rank": settings.lora_rank,
            "lora_alpha": settings.lora_alpha,
            "gradient_checkpointing": settings.grad_checkpointing,
            "scorers": settings.scorers,
            "variants": settings.variants,
            "sections": sections,
        },
        "model": None,
        "sections": {},
    }
    state: dict = {}
    for name in sections:
        log(f"=== section {name} ===")
        t0 = time.perf_counter()
        try:
            out = runners[name](settings, state)
            result["sections"][name] = {"status": "ok", **out}
        except Exception as e:
            result["sections"][name] = error_record(e)
            log(f"section {name} failed: {type(e).__name__}: {e}")
        result["sections"][name]["section_wall_s"] = round(time.perf_counter() - t0, 3)
        if "build" in state and result["model"] is None:
            result["model"] = state["build"]
        if name == "floor" or (name == "story" and "floor" not in sections):
            state.pop("pipe", None)  # the pipeline is shared by story and floor only
        release()
        result.update(summarize(result))
        write_json(args.out, result)
    state.clear()
    print(table(result))
    log(f"wrote {args.out}")
    return 0 if all(s.get("status") == "ok" for s in result["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
