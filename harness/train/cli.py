"""Command-line entry points for training: `harness train`, `harness data prepare`, `harness lora import`.

`add_parsers(sub)` adds the subcommands to the main parser; each `cmd_*` returns an exit code and
raises HarnessError for bad input. No torch at module level: `harness --help` stays instant.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parsers(sub) -> None:
    """Add `train`, `data prepare` and `lora import` to an argparse subparsers object."""
    p = sub.add_parser("train", help="train a LoRA from a training config (reuses a finished identical run)")
    p.add_argument("config", type=Path)
    p.add_argument("--out", type=Path, help="run folder (default $HARNESS_CACHE/loras/<config>-<key>)")
    p.add_argument(
        "--resume", action="store_true", help="continue an unfinished run from its last checkpoint"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace the training run --out holds, a finished one included "
        "(never a folder the harness did not make)",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("data", help="training data tools")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    q = dsub.add_parser(
        "prepare", help="filter a config's data source into its prepared folder, with a report"
    )
    q.add_argument("config", type=Path)
    q.add_argument("--out", type=Path, help="prepared folder (default: the config's data.prepared)")
    q.set_defaults(func=cmd_data_prepare)

    p = sub.add_parser("lora", help="LoRA file tools")
    lsub = p.add_subparsers(dest="lora_command", metavar="SUBCOMMAND", required=True)
    q = lsub.add_parser("import", help="convert a DiffSynth/kohya/diffusers LoRA into the diffusers naming")
    q.add_argument("file", type=Path)
    q.add_argument(
        "--out", type=Path, required=True, help="folder to write pytorch_lora_weights.safetensors into"
    )
    q.add_argument(
        "--alpha",
        type=float,
        help="LoRA alpha when the file does not store one "
        "(DiffSynth files never do; the baseline trained with 4.0)",
    )
    q.add_argument("--force", action="store_true", help="overwrite an existing import in --out")
    q.add_argument(
        "--base",
        default="kolors",
        help="base model whose UNet the LoRA's shapes must fit (default kolors; tiny, local:PATH)",
    )
    q.set_defaults(func=cmd_lora_import)


def cmd_train(args) -> int:
    from harness.config.training import load_training_config
    from harness.train.api import train
    from harness.train.outdir import MANIFEST

    loaded = load_training_config(args.config, follow_links=True)
    r = train(
        loaded, args.out, resume=args.resume, force=args.force, device=args.device, progress=not args.quiet
    )
    m = r.manifest
    if r.reused:
        print(f"{args.config}: already trained with this config and data in {r.out} (nothing to do)")
    else:
        resumed = f", resumed from step {m['resumed_from_step']}" if m.get("resumed_from_step") else ""
        print(f"trained {m['steps']} steps{resumed}, final loss {m['final_loss']:.4f}, into {r.out}")
    for fmt, f in m["files"].items():
        print(f"  {fmt:10s} {r.out / f['file'] if 'file' in f else f['skipped']}")
    print(f"  manifest   {r.out / MANIFEST}")
    return 0


def cmd_data_prepare(args) -> int:
    from harness.config.training import load_training_config
    from harness.data.prepare import REPORT, prepare

    loaded = load_training_config(args.config, follow_links=True)
    r = prepare(loaded, args.out)
    rep = r.report
    print(f"kept {rep['kept']} of {rep['candidates']} images into {r.folder}")
    for why, n in rep["skipped_counts"].items():
        print(f"  skipped {n}: {why}")
    for s in rep["skipped"]:
        print(f"  - {s['file']}: {s['reason']}")
    print(f"  report: {r.folder / REPORT}")
    return 0


def cmd_lora_import(args) -> int:
    from harness.lora.importer import import_lora

    r = import_lora(args.file, args.out, alpha=args.alpha, force=args.force, base=args.base)
    what = f"{r.keys} keys ({r.format} naming, rank {r.rank}, alpha {r.alpha}{r.alpha_note})"
    print(f"imported {what} into {r.path}" + (f"\n  {r.shapes_note}" if r.shapes_note else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """A standalone parser with only these commands (tests; the main CLI wires add_parsers)."""
    parser = argparse.ArgumentParser(prog="harness")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    import sys

    from harness.errors import HarnessError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HarnessError as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
