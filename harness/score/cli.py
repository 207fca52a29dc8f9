"""The `harness score` subcommand: parse options, build a ScoringConfig, call `score_run`, report.

No torch at import time: `harness --help` stays instant. Exit codes: 2 unusable input
(HarnessError), 1 when the aesthetic gate or the reproducibility check fails, 0 otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.config.gate import AESTHETIC_GATE
from harness.errors import HarnessError


def add_score_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `harness score` and (for scoring after rendering) `harness run`."""
    p.add_argument("--scoring-config", type=Path, help="scoring YAML (thresholds, models, tolerances)")
    p.add_argument(
        "--threshold", type=float, help=f"aesthetic gate: mean >= this is valid (default {AESTHETIC_GATE})"
    )
    p.add_argument("--min-panels", type=int, help="panels required when no story says more (default 8)")
    p.add_argument("--aesthetic-model", help="registered aesthetic model (default aesthetic-v2-linear)")
    p.add_argument(
        "--consistency-model", help="registered open_clip model for CLIP-I (default clip-vit-h-14)"
    )
    p.add_argument(
        "--alignment-model",
        help="registered multilingual open_clip model for CLIP-T (default xlm-roberta-base-vit-b-32)",
    )
    p.add_argument(
        "--scorers", help="comma-separated scorers to run (default aesthetic,consistency,alignment)"
    )
    p.add_argument(
        "--reproduce",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="re-render and compare (default on)",
    )
    p.add_argument(
        "--lora", type=Path, help="LoRA file for re-rendering (default: found through the run's story)"
    )
    p.add_argument("--max-abs-diff", type=int, help="reproducible: largest channel difference (default 64)")
    p.add_argument("--min-psnr", type=float, help="reproducible: minimum PSNR in dB (default 35)")
    p.add_argument(
        "--min-clip-i", type=float, help="reproducible: minimum CLIP-I to the original (default 0.98)"
    )
    p.add_argument("--score-batch-size", type=int, help="images per scoring batch (default 8)")
    p.add_argument(
        "--score-device", choices=("auto", "cpu", "cuda"), help="where scoring models run (default auto)"
    )


def add_parsers(sub) -> argparse.ArgumentParser:
    """Add the `score` subcommand to an argparse subparsers object; returns its parser."""
    p = sub.add_parser(
        "score", help="score a run folder or a folder of images (aesthetic gate, CLIP, reproducibility)"
    )
    p.add_argument("dir", type=Path, help="run folder (with images/ and manifest.json) or a folder of images")
    p.add_argument(
        "--story", type=Path, help="story file for prompts and panel count (default: the run's copy)"
    )
    p.add_argument("--out", type=Path, help="where to write scores.json (default <run>/scores.json)")
    p.add_argument("--json", action="store_true", help="print scores.json instead of the table")
    add_score_options(p)
    p.set_defaults(func=cmd_score)

    m = sub.add_parser(
        "score-models",
        help="list the scoring models; --pin hashes the ones a scoring config uses",
        description="List the registered scoring models with their sources and pins. With --pin, "
        "fetch (or find in the cache) each model the scoring config uses, hash its folder and "
        "print a `pins:` block: add it to the scoring YAML you share, and everyone scoring with "
        "it gets the same weights or an error.",
    )
    m.add_argument("--scoring-config", type=Path, help="scoring YAML whose models --pin hashes")
    m.add_argument("--pin", action="store_true", help="hash the config's models and print a pins: block")
    m.set_defaults(func=cmd_score_models)
    return p


def cmd_score_models(args) -> int:
    """`harness score-models`: the registry as a table, or a pins: block for a config's models."""
    from harness.config.registry import SCORING_MODELS
    from harness.config.scoring import ScoringConfig, load_scoring_config

    if not args.pin:
        for s in SCORING_MODELS.values():
            pinned = "pinned sha256" if s.sha256 else "not pinned"
            print(f"{s.name}  ({s.kind}, {pinned})")
            print(f"    {s.ref}" + (f"\n    text tower {s.text_tower}" if s.text_tower else ""))
            print(f"    {s.description}")
        return 0

    import yaml

    from harness.models.scoring_registry import lookup, resolve_scoring_model
    from harness.score.registry import models_used

    config = load_scoring_config(args.scoring_config) if args.scoring_config else ScoringConfig()
    pins: dict[str, str] = {}
    for kind, name in models_used(config):
        resolved = resolve_scoring_model(lookup(name, kind), config.pins)
        pins[resolved.spec.name] = resolved.sha256
        if resolved.text_tower_sha256 is not None:
            pins[str(resolved.spec.text_tower)] = resolved.text_tower_sha256
    print(yaml.safe_dump({"pins": pins}, sort_keys=False, allow_unicode=True), end="")
    return 0


def config_from_args(args) -> "ScoringConfig":  # noqa: F821
    """A ScoringConfig from --scoring-config with the command-line options on top."""
    from pydantic import ValidationError

    from harness.config.scoring import ScoringConfig, load_scoring_config
    from harness.config.yamlio import format_loc

    base = (
        load_scoring_config(args.scoring_config) if getattr(args, "scoring_config", None) else ScoringConfig()
    )
    data = base.model_dump()
    flags = {
        "threshold": "threshold",
        "min_panels": "min_panels",
        "aesthetic_model": "aesthetic_model",
        "consistency_model": "consistency_model",
        "alignment_model": "alignment_model",
        "reproduce": "reproduce",
        "score_batch_size": "batch_size",
        "score_device": "device",
    }
    for flag, key in flags.items():
        value = getattr(args, flag, None)
        if value is not None:
            data[key] = value
    if getattr(args, "scorers", None):
        data["scorers"] = [s.strip() for s in args.scorers.split(",") if s.strip()]
    for flag in ("max_abs_diff", "min_psnr", "min_clip_i"):
        value = getattr(args, flag, None)
        if value is not None:
            data["tolerances"][flag] = value
    try:
        return ScoringConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        raise HarnessError(f"scoring option {format_loc(tuple(err['loc']))}: {msg}") from None


def cmd_score(args) -> int:
    """Run `harness score`; returns the exit code (HarnessError propagates for exit 2)."""
    import json

    from harness.score.api import score_run
    from harness.score.report import format_table, to_json, write_scores

    config = config_from_args(args)
    run = score_run(args.dir, story=args.story, config=config, lora=args.lora)
    path = write_scores(run, args.out)
    if args.json:
        print(json.dumps(to_json(run), ensure_ascii=False, indent=2))
    else:
        print(format_table(run))
        print(f"scores: {path}")
    return run.exit_code
