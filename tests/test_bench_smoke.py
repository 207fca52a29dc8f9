"""The Kolors benchmark (bench/kolors_bench.py) on the CPU with the tiny model, and its full-size configs.

The smoke run goes through the same code as the GPU run: it checks that every section reports
positive timings and the cross-section ratios, and that the harness render path gives the same
pixels as a plain KolorsPipeline call at the same seed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "bench" / "kolors_bench.py"


def run_bench(tmp_path, *args) -> tuple[int, dict, str]:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        # One thread: the smoke must not depend on what else the two cores are doing.
        [
            sys.executable,
            str(SCRIPT),
            "--tiny",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--out",
            str(out),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # the script must not depend on the working directory
    )
    assert out.is_file(), proc.stderr[-3000:]
    return proc.returncode, json.loads(out.read_text(encoding="utf-8")), proc.stdout


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return run_bench(tmp_path_factory.mktemp("bench"), "--steps", "3", "--train-steps", "2")


def test_every_section_runs_and_reports_positive_timings(smoke):
    code, result, stdout = smoke
    assert code == 0, {k: v.get("error") for k, v in result["sections"].items()}
    s = result["sections"]
    assert list(s) == ["story", "floor", "train", "score"]
    assert all(sec["status"] == "ok" for sec in s.values())

    story = s["story"]
    assert story["panels"] == 8 and story["steps"] == 3 and story["size"] == 64
    assert story["baseline"]["seconds"] > 0 and story["harness"]["seconds"] > 0
    assert story["ratio_harness_over_baseline"] == pytest.approx(
        story["harness"]["seconds"] / story["baseline"]["seconds"], rel=1e-3
    )
    assert story["speedup_vs_baseline"] > 0

    floor = s["floor"]
    assert floor["calls"] == 8 * 3 and floor["batch"] == 2 and floor["seconds"] > 0
    assert floor["shapes"]["sample"] == [2, 4, 8, 8]
    assert floor["shapes"]["time_ids"] == [2, 6]
    assert floor["flops_per_call"] > 0

    for way in ("baseline_way", "cached"):
        t = s["train"][way]
        assert t["status"] == "ok" and t["steps_per_s"] > 0 and t["losses_finite"]
        assert t["lora_params"] > 0
    # the baseline way really encodes every step (warm-up + timed), the cached way never does
    assert s["train"]["baseline_way"]["encoder_calls"] == {"vae": 3, "text": 3}
    assert s["train"]["speedup_cached_over_baseline"] > 0

    score = s["score"]
    assert score["models"] == "tiny" and "TINY" in score["label"]
    assert set(score["components"]) == {
        "aesthetic",
        "consistency_images",
        "alignment_images",
        "alignment_texts",
    }
    assert all(c["seconds"] > 0 for c in score["components"].values())

    summary = result["summary"]
    assert summary["harness_over_unet_floor"] > 0 and summary["baseline_over_unet_floor"] > 0
    assert summary["story_speedup_vs_baseline"] == story["speedup_vs_baseline"]
    # targets are stated but not judged on a tiny CPU run
    assert result["targets"]["story_speedup_vs_baseline"]["met"] is None
    assert "Kolors benchmark" in stdout and "harness render" in stdout


def test_harness_panel_equals_plain_pipeline_panel(smoke):
    _, result, _ = smoke
    story = result["sections"]["story"]
    # CPU, batch 1, same seed: the harness path must be bit-identical to the plain pipeline
    assert story["panel1_max_abs_diff_uint8"] == 0
    assert story["panel1_max_abs_diff_float"] == 0.0
    assert story["all_panels_max_abs_diff_uint8"] == 0
    assert story["panel1_finite"]


def test_fast_path_variants_are_timed_and_compared(smoke):
    _, result, stdout = smoke
    variants = result["sections"]["story"]["variants"]
    assert list(variants) == ["resident", "batch2", "channels_last"]  # the default set
    for v in variants.values():
        assert v["seconds"] > 0 and v["speedup_vs_baseline"] > 0
        assert v["max_abs_diff_uint8_vs_baseline"] >= 0
    # Staging moves weights, never changes arithmetic: all-resident gives the same pixels.
    assert variants["resident"]["max_abs_diff_uint8_vs_harness"] == 0
    assert variants["batch2"]["batch_size"] == 2
    assert set(result["summary"]["variants"]) == set(variants)
    assert "variant batch2" in stdout


def test_result_records_machine_versions_and_command(smoke):
    _, result, _ = smoke
    libs = result["machine"]["libraries"]
    assert all(libs[n] not in ("", "not installed") for n in ("torch", "diffusers", "peft", "harness"))
    assert result["machine"]["device"] == "cpu" and result["machine"]["gpu"] is None
    assert "kolors_bench.py --tiny --device cpu" in result["command"]
    assert result["settings"]["dtype"] == "float32" and result["settings"]["determinism"] == "harness"
    # the harness's device plans it ran with (harness.device.plan): all float32 on the CPU
    plans = result["settings"]["plans"]
    assert set(plans) == {"render", "train", "score"}
    assert all(p["device"] == "cpu" and p["weights"] == p["vae"] == "float32" for p in plans.values())


def test_a_failing_section_keeps_the_others(tmp_path):
    # --panels 9 on an 8-panel story: the score section (which needs the prompts) fails, floor runs
    code, result, _ = run_bench(tmp_path, "--sections", "floor,score", "--panels", "9", "--steps", "1")
    assert code == 1
    assert result["sections"]["floor"]["status"] == "ok" and result["sections"]["floor"]["seconds"] > 0
    assert result["sections"]["score"]["status"] == "error"
    assert "only 8 panels" in result["sections"]["score"]["error"]


def test_full_size_configs_are_the_real_kolors_sizes():
    """Built on the meta device (no memory): the parameter counts of Kolors' three models."""
    import torch

    from bench.kolors_arch import build_text_encoder, build_unet, build_vae, param_count

    unet = build_unet("meta", torch.bfloat16)
    assert 2.57e9 < param_count(unet) < 2.59e9  # 2.58 B (shared/STACK.md)
    assert next(unet.parameters()).dtype == torch.bfloat16
    te = build_text_encoder("meta", torch.bfloat16)
    assert 6.2e9 < param_count(te) < 6.3e9  # ChatGLM3-6B: 6.24 B
    assert 83.0e6 < param_count(build_vae("meta", torch.bfloat16)) < 84.0e6  # SDXL VAE: 83.65 M
