"""`harness bundle`, `harness upload` and `harness verify`: argparse wiring for the bundle stage.

`add_parsers(sub)` adds the three subcommands to the main parser's subparsers; each parser
carries its command function as `func` (also listed in COMMANDS). Command functions return the
exit code: 0 ok, 1 a failed check (verify), and HarnessError (exit 2) for unusable input.
Nothing heavy is imported here.
"""

from __future__ import annotations

import json
from pathlib import Path


def add_parsers(sub) -> None:
    """Add `bundle`, `upload` and `verify` to an argparse subparsers object."""
    p = sub.add_parser("bundle", help="write submissions/<team>/<name>/ from a finished run folder")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument(
        "--namespace",
        help="ModelScope namespace (default: $MODELSCOPE_NAMESPACE, else the team name)",
    )
    p.add_argument("--out", type=Path, default=Path("submissions"), help="bundles root (default submissions)")
    p.add_argument(
        "--lora",
        type=Path,
        action="append",
        default=[],
        help="add a LoRA file in another format (repeatable)",
    )
    p.add_argument("--license", default="apache-2.0", help="license in the model card (default apache-2.0)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace the bundle of a different story with the same team and name, and its LoRA "
        "(a re-bundle of the same story needs no --force; "
        "a folder the harness did not write is never replaced)",
    )
    p.set_defaults(func=cmd_bundle)

    p = sub.add_parser("upload", help="create the ModelScope model repo and upload a bundle")
    p.add_argument("bundle", type=Path, metavar="BUNDLE")
    p.add_argument(
        "--dry-run", action="store_true", help="print what would be created and sent; contact nothing"
    )
    p.add_argument("--visibility", choices=("public", "private", "internal"), default="public")
    p.add_argument("--license", default="apache-2.0")
    p.set_defaults(func=cmd_upload)

    p = sub.add_parser("verify", help="judges: check untrusted bundles and write verdict.json")
    p.add_argument(
        "bundle", type=Path, metavar="BUNDLE", help="a bundle folder, or the bundles root with --all"
    )
    p.add_argument("--all", action="store_true", help="verify every bundle under BUNDLE (e.g. submissions/)")
    p.add_argument("--force", action="store_true", help="with --all: also re-verify unchanged bundles")
    p.add_argument(
        "--no-rerun", action="store_true", help="file and content checks only: no re-scoring, no re-rendering"
    )
    p.add_argument("--scoring", type=Path, help="scoring config YAML (default: the competition's)")
    p.add_argument("--json", action="store_true", help="print the verdict JSON")
    p.add_argument("--quiet", action="store_true", help="with --all: no progress bar")
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="per bundle; a bundle past it fails with that reason (default 1800, 0: no limit)",
    )
    p.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="with --all: one bundle at a time here (local), or on a Ray cluster (ray; docs/judging.md)",
    )
    p.add_argument(
        "--address",
        metavar="auto|ray://HOST:PORT",
        help="with --backend ray: the cluster to join (default: start a private Ray on this machine)",
    )
    p.add_argument(
        "--workers", type=int, metavar="N", help="with --backend ray: worker processes (default: one per GPU)"
    )
    p.add_argument(
        "--gpus-per-worker",
        type=float,
        metavar="G",
        help="with --backend ray: GPUs per worker, a fraction shares a GPU (default 1, or 0 without GPUs)",
    )
    p.add_argument(
        "--results",
        type=Path,
        metavar="CSV",
        help="with --all: where the results table goes (default ROOT/.verify-results.csv)",
    )
    p.set_defaults(func=cmd_verify)


def cmd_bundle(args) -> int:
    from harness.bundle.writer import write_bundle

    result = write_bundle(
        args.run_dir,
        out_root=args.out,
        namespace=args.namespace,
        loras=args.lora,
        license=args.license,
        force=args.force,
    )
    m = result.manifest
    print(f"bundled {args.run_dir} into {result.path}")
    print(f"  model id: {result.model_id}")
    print(f"  files:    {len(m.files)} (+ manifest.json), LoRA: {', '.join(m.lora) or 'none'}")
    print(f"  scores:   {'scores.json included' if m.scored else 'unscored (no scores.json in the run)'}")
    return 0


def cmd_upload(args) -> int:
    from harness.bundle.upload import plan_upload, upload_bundle

    plan = plan_upload(args.bundle, visibility=args.visibility, license=args.license)
    if args.dry_run:
        print("dry run: nothing is contacted or sent")
        print(plan.describe())
        return 0
    result = upload_bundle(plan)
    print(f"{'created' if result.created else 'updated existing'} model repo {plan.model_id}")
    print(f"uploaded {len(plan.files)} files ({plan.total_bytes} bytes)")
    return 0


def _scoring(args):
    if args.scoring is None:
        return None
    from harness.config.scoring import load_scoring_config

    return load_scoring_config(args.scoring)


def cmd_verify(args) -> int:
    from harness.bundle.batch import DEFAULT_TIME_LIMIT, judge_one, summary_table, verify_all
    from harness.errors import HarnessError, one_line

    scoring = _scoring(args)
    limit = DEFAULT_TIME_LIMIT if args.time_limit is None else args.time_limit
    if limit < 0:
        raise HarnessError(f"--time-limit: must be >= 0 seconds (got {args.time_limit:g})")
    ray_only = [
        f
        for f, v in (
            ("--address", args.address),
            ("--workers", args.workers),
            ("--gpus-per-worker", args.gpus_per_worker),
        )
        if v is not None
    ]
    if ray_only and args.backend != "ray":
        raise HarnessError(f"{ray_only[0]}: only with --backend ray")
    if not args.all and (args.backend != "local" or args.results is not None):
        raise HarnessError("--backend and --results: only with --all")
    if args.all:
        common = dict(force=args.force, rerun=not args.no_rerun, scoring=scoring, time_limit_s=limit)
        common["progress"] = not args.quiet
        if args.backend == "ray":
            from harness.bundle.ray_backend import verify_all_ray
            from harness.cluster.connection import check_address
            from harness.cluster.workers import check_request

            check_request(args.workers, args.gpus_per_worker)
            check_address(args.address)

            rows = verify_all_ray(
                args.bundle,
                address=args.address,
                workers=args.workers,
                gpus_per_worker=args.gpus_per_worker,
                **common,
            )
        else:
            rows = verify_all(args.bundle, **common)
        if not rows:
            print(f"{args.bundle}: no bundles found")
            return 0
        from harness.bundle.results import write_results

        print(summary_table(rows))
        print(one_line(f"results table: {write_results(args.bundle, rows, args.results)}"))
        return 1 if any(r.verdict.get("verdict") != "pass" for r in rows) else 0
    if args.bundle.is_symlink():
        raise HarnessError(f"{args.bundle}: is a symlink; verify the real folder")
    if not args.bundle.is_dir():
        raise HarnessError(f"{args.bundle}: no such bundle folder")
    verdict, path = judge_one(args.bundle, rerun=not args.no_rerun, scoring=scoring, time_limit_s=limit)
    if args.json:
        print(json.dumps(verdict.to_json(), ensure_ascii=True, indent=2))
    else:
        for c in verdict.checks:
            print(one_line(f"{c.name:<17} {c.status:<8} {c.detail}"))
        for n in verdict.notes:
            print(one_line(f"note: {n}"))
        where = f"verdict in {path}" if path is not None else "verdict.json could not be written"
        print(one_line(f"{'PASS' if verdict.passed else 'FAIL'}: {args.bundle} ({where})"))
    return 0 if verdict.passed else 1


COMMANDS = {"bundle": cmd_bundle, "upload": cmd_upload, "verify": cmd_verify}
