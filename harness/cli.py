"""The `harness` command line: parse arguments, call one function, print the result.

Heavy libraries (torch, diffusers) are imported inside the commands, never at module level, so
`harness --help` stays instant. A refusal is exactly one line on stderr and exit code 2: a
HarnessError, an operating-system refusal (permission, disk full, name too long) and a bad
command line alike; `one_line` escapes whatever a message carries (newlines, control
characters, text from a story) and caps its length.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness import __version__
from harness.errors import HarnessError, one_line


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line (the usage is one `--help` away)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def _add_render_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--panels", help="comma-separated panel numbers to render, e.g. 1,3 (default: all)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="panels denoised together (default 1: each panel bit-identical alone or in the story)",
    )
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run (default auto)"
    )
    p.add_argument("--force", action="store_true", help="replace a different run already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="harness",
        description="Train, render, score and bundle Kolors LoRA style stories.",
    )
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("validate", help="check a story file (schema, ranges, prompt lengths)")
    p.add_argument("story", type=Path)

    p = sub.add_parser("render", help="render a story's panels into a folder")
    p.add_argument("story", type=Path)
    p.add_argument("--out", type=Path, required=True, help="run folder to write")
    _add_render_options(p)

    p = sub.add_parser("run", help="the whole story: train (if declared), render, score, bundle")
    p.add_argument("story", type=Path)
    p.add_argument("--out", type=Path, help="run folder (default runs/<team>-<name>)")
    _add_render_options(p)
    p.add_argument("--no-score", action="store_true", help="skip scoring (and the gate)")
    p.add_argument("--no-bundle", action="store_true", help="do not write the submission bundle")
    p.add_argument(
        "--submissions", type=Path, default=Path("submissions"), help="bundles root (default submissions)"
    )
    p.add_argument("--namespace", help="ModelScope namespace (default $MODELSCOPE_NAMESPACE, else the team)")
    from harness.score.cli import add_score_options

    add_score_options(p)

    p = sub.add_parser("inspect", help="print the parameters embedded in a rendered panel")
    p.add_argument("image", type=Path)
    p.add_argument("--json", action="store_true", help="print the raw JSON")

    # The other stages own their subcommands; their modules import nothing heavy.
    from harness.bundle.cli import add_parsers as add_bundle
    from harness.leaderboard.cli import add_parsers as add_leaderboard
    from harness.score.cli import add_parsers as add_score
    from harness.sweep.cli import add_parsers as add_sweep
    from harness.train.cli import add_parsers as add_train

    add_train(sub)
    add_score(sub)
    add_bundle(sub)
    add_leaderboard(sub)
    add_sweep(sub)
    return parser


def _quiet_libraries() -> None:
    try:
        from diffusers.utils import logging as dlog

        dlog.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def cmd_validate(args) -> int:
    from harness.config.story import load_story

    loaded = load_story(args.story)
    s = loaded.story
    print(
        f"{one_line(str(args.story))}: ok: {s.team}/{s.name}, {len(s.panels)} panels, {s.base_model}, "
        f"{s.sampling.width}x{s.sampling.height}, {s.sampling.steps} steps, guidance {s.sampling.guidance}"
        + (f", LoRA {s.lora.path or s.lora.train} x {s.lora.scale}" if s.lora else "")
    )
    return 0


def cmd_render(args) -> int:
    from harness.config.story import load_story
    from harness.render.run import render_story

    out = args.out
    loaded = load_story(args.story)
    _quiet_libraries()
    result = render_story(
        loaded,
        out,
        panels=args.panels,
        batch_size=args.batch_size,
        device=args.device,
        force=args.force,
        progress=not args.quiet,
    )
    _print_render(result, out)
    return 0


def _print_render(result, out: Path) -> None:
    from harness.layout import IMAGES, RUN_MANIFEST

    m = result.manifest
    print(
        f"rendered panels {','.join(map(str, result.rendered))} into {out} "
        f"({len(m.panels)}/{m.story.panel_count} panels present, {m.status})"
    )
    print(f"  images:        {out / IMAGES}")
    print(f"  contact sheet: {result.contact_sheet}")
    print(f"  manifest:      {out / RUN_MANIFEST}")


def cmd_run(args) -> int:
    from harness.config.story import load_story
    from harness.pipeline import run_story
    from harness.score.cli import config_from_args

    out = args.out
    if out is None:  # built only from a validated team and name (the bundle's naming rule)
        s = load_story(args.story, check_tokens=False).story
        out = Path("runs") / f"{s.team}-{s.name}"
    scoring = config_from_args(args)
    _quiet_libraries()
    outcome = run_story(
        args.story,
        out,
        panels=args.panels,
        batch_size=args.batch_size,
        device=args.device,
        force=args.force,
        progress=not args.quiet,
        scoring=scoring,
        score=not args.no_score,
        bundle=not args.no_bundle,
        submissions=args.submissions,
        namespace=args.namespace,
    )
    _print_render(outcome.render, out)
    if outcome.lora is not None:
        print(f"  LoRA:          {outcome.lora}")
    if outcome.score is not None:
        from harness.score.report import format_table

        print()
        print(format_table(outcome.score))
        if outcome.score.config.aesthetic_model.startswith("tiny"):
            print("(scored by the tiny test models: the numbers show the pipeline works, not quality)")
    if outcome.bundle is not None:
        print(f"\nbundle: {outcome.bundle.path}  (ModelScope id {outcome.bundle.model_id})")
    elif outcome.bundle_skipped:
        print(f"\nno bundle written: {outcome.bundle_skipped}")
    return outcome.exit_code


def cmd_inspect(args) -> int:
    import json

    from harness.render.pngmeta import describe, read_panel_params

    params = read_panel_params(args.image)
    if args.json:
        print(json.dumps(params.to_json(), ensure_ascii=True, indent=2))
    else:  # the values come from the file: no terminal escape reaches the screen
        print("\n".join(one_line(line) for line in describe(params).splitlines()))
    return 0


COMMANDS = {"validate": cmd_validate, "render": cmd_render, "run": cmd_run, "inspect": cmd_inspect}


def main(argv: list[str] | None = None) -> int:
    import warnings

    # Deprecation chatter from torch/pynvml/diffusers is not the user's business.
    warnings.filterwarnings("ignore", category=FutureWarning)
    args = build_parser().parse_args(argv)
    try:
        command = getattr(args, "func", None) or COMMANDS[args.command]
        return command(args)
    except HarnessError as e:
        print(f"harness: error: {one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # the system refused (permission, disk full, name too long): not a bug
        where = f"{e.filename}: " if e.filename is not None else ""
        print(f"harness: error: {one_line(f'{where}{e.strerror or e}')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
