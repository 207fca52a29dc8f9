"""`harness sweep STORY ...` and `harness sweep serve DIR`: argparse wiring for the sweep.

Nothing heavy is imported here (torch only inside the command, Gradio only inside `serve`).
Exit codes: 0 the chosen story clears the aesthetic gate, 1 it does not, 2 bad input (one line,
nothing written).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.errors import HarnessError

SERVE = "serve"


def add_parsers(sub) -> argparse.ArgumentParser:
    """Add the `sweep` subcommand to an argparse subparsers object; returns its parser."""
    p = sub.add_parser(
        "sweep",
        help="search seeds and LoRA strength for the best story; `sweep serve DIR` to pick by eye",
        description="Render extra seeds (and LoRA strengths) for some panels, score every candidate with "
        "the judges' scorers and choose the story with the best mean aesthetic score whose panels keep "
        "their prompt alignment and whose consistency stays above a floor. Writes the candidates table, a "
        "sheet per panel, story.swept.yaml and a report into --out; a stopped sweep continues where it "
        "stopped. `harness sweep serve DIR` opens a page to override the pick and save the story.",
    )
    p.add_argument(
        "story", metavar="STORY", help=f"story file to sweep (or `{SERVE}` to open DIR's pick page)"
    )
    p.add_argument("dir", nargs="?", type=Path, metavar="DIR", help=f"with `{SERVE}`: the sweep folder")
    p.add_argument("--seeds", type=int, help="extra seeds per swept panel (the story's own is always kept)")
    p.add_argument("--panels", help="comma-separated panels to sweep, e.g. 1,3 (default: all)")
    p.add_argument("--scales", help="extra LoRA strengths to try for the whole story, e.g. 0.6,0.8,1.0")
    p.add_argument("--preview-steps", type=int, metavar="K", help="render every candidate with K steps first")
    p.add_argument(
        "--keep", type=int, metavar="M", help="with --preview-steps: full-render the best M per panel"
    )
    p.add_argument(
        "--min-consistency",
        type=float,
        metavar="C",
        help="story consistency (CLIP-I) the choice must keep (default: the original story's)",
    )
    p.add_argument(
        "--alignment-margin",
        type=float,
        default=0.02,
        help="a panel's CLIP-T may fall at most this much below its original's (default 0.02)",
    )
    p.add_argument("--out", type=Path, help="sweep folder (default runs/<team>-<name>-sweep)")
    p.add_argument(
        "--backend",
        default="local",
        help="local (this process) or ray (the judges' Ray workers; see docs/sweep.md)",
    )
    p.add_argument(
        "--address",
        help="--backend ray: `auto` (the cluster `ray start` runs here) or ray://host:port; "
        "default: a private Ray on this machine",
    )
    p.add_argument("--workers", type=int, help="--backend ray: workers (default one per GPU, or one)")
    p.add_argument(
        "--gpus-per-worker",
        type=float,
        help="--backend ray: GPUs each worker takes (default 1 where the cluster has GPUs)",
    )
    p.add_argument(
        "--scoring-config",
        type=Path,
        help="scoring YAML (models, pins, threshold); with serve: the gate's threshold",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to render")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    p.add_argument("--host", default="127.0.0.1", help=f"{SERVE}: address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7861, help=f"{SERVE}: port (default 7861)")
    p.set_defaults(func=cmd_sweep)
    return p


def cmd_sweep(args) -> int:
    if args.story == SERVE:
        if args.dir is None:
            raise HarnessError(f"sweep {SERVE}: needs the sweep folder (harness sweep {SERVE} DIR)")
        return cmd_serve(args)
    if args.dir is not None:
        raise HarnessError(
            f"sweep: unexpected argument {str(args.dir)!r} (DIR goes with `harness sweep serve DIR`)"
        )
    if args.seeds is None:
        raise HarnessError("--seeds: required (how many seeds to try per panel besides the story's own)")
    import json

    from harness.sweep.outputs import format_report
    from harness.sweep.plan import SweepOptions
    from harness.sweep.run import run_sweep

    story = Path(args.story)
    scoring = None
    if args.scoring_config is not None:
        from harness.config.scoring import load_scoring_config

        scoring = load_scoring_config(args.scoring_config)
    out = args.out
    if out is None:  # built only from a validated team and name (the bundle's naming rule)
        from harness.config.story import load_story

        s = load_story(story, check_tokens=False).story
        out = Path("runs") / f"{s.team}-{s.name}-sweep"
    try:
        from diffusers.utils import logging as dlog

        dlog.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass
    opts = SweepOptions(
        seeds=args.seeds,
        panels=args.panels,
        scales=args.scales,
        preview_steps=args.preview_steps,
        keep=args.keep,
        min_consistency=args.min_consistency,
        alignment_margin=args.alignment_margin,
        device=args.device,
        backend=args.backend,
        address=args.address,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        progress=not args.quiet,
    )
    result = run_sweep(story, out, opts, scoring)
    if args.json:
        print(json.dumps(result.report, ensure_ascii=True, indent=2))
    else:
        print(format_report(result.report))
        print(
            f"table: {out / 'candidates.csv'}\nsheets: {out / 'sheets'}\n"
            f"swept story: {out / 'story.swept.yaml'}"
        )
    return result.exit_code


def cmd_serve(args) -> int:
    from harness.sweep.app import serve

    scoring = None
    if args.scoring_config is not None:
        from harness.config.scoring import load_scoring_config

        scoring = load_scoring_config(args.scoring_config)
    serve(args.dir, host=args.host, port=args.port, scoring=scoring)
    return 0
