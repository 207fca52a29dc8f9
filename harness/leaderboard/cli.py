"""`harness leaderboard build|serve|export`: argparse wiring for the leaderboard.

`add_parsers(sub)` adds the `leaderboard` command with its three subcommands; each carries its
command function as `func`. Nothing heavy is imported here (Gradio only inside `serve`).
"""

from __future__ import annotations

from pathlib import Path

from harness.config.gate import AESTHETIC_GATE


def _common(p, *, ranking: bool) -> None:
    p.add_argument(
        "--submissions", type=Path, default=Path("submissions"), help="bundles root (default submissions)"
    )
    p.add_argument("--db", type=Path, help="index file (default SUBMISSIONS/.leaderboard.sqlite)")
    if ranking:
        from harness.leaderboard.ranking import DEFAULT, KEYS

        p.add_argument(
            "--rank-by",
            default=",".join(DEFAULT),
            help=f"comma-separated ranking keys from {', '.join(KEYS)} (default {','.join(DEFAULT)})",
        )


def add_parsers(sub) -> None:
    lb = sub.add_parser("leaderboard", help="index bundles and browse them: build, serve, export")
    lsub = lb.add_subparsers(dest="leaderboard_command", metavar="ACTION", required=True)

    p = lsub.add_parser("build", help="index every bundle under --submissions into the SQLite index")
    _common(p, ranking=False)
    p.add_argument(
        "--threshold",
        type=float,
        default=AESTHETIC_GATE,
        help=f"the aesthetic gate (default {AESTHETIC_GATE})",
    )
    p.add_argument(
        "--bundle-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="time one bundle may take to index; past it the bundle is a row saying so (default 300)",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="read every bundle again (default: only new bundles and those whose files' stats changed)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_build)

    p = lsub.add_parser("serve", help="the Gradio leaderboard app (read-only)")
    _common(p, ranking=True)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.set_defaults(func=cmd_serve)

    p = lsub.add_parser("export", help="write a self-contained static HTML page with thumbnails")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    _common(p, ranking=True)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_export)


def _db(args) -> Path:
    from harness.leaderboard.build import default_db

    return args.db if args.db is not None else default_db(args.submissions)


def cmd_build(args) -> int:
    import math

    from harness.errors import HarnessError
    from harness.leaderboard.build import build_index

    if not math.isfinite(args.threshold):
        raise HarnessError("--threshold: must be a finite number")
    if not (math.isfinite(args.bundle_timeout) and args.bundle_timeout > 0):
        raise HarnessError("--bundle-timeout: must be a positive number of seconds")
    report = build_index(
        args.submissions,
        _db(args),
        threshold=args.threshold,
        progress=not args.quiet,
        timeout=args.bundle_timeout,
        full=args.full,
    )
    print(f"{_db(args)}: {report.line()}")
    return 0


def cmd_serve(args) -> int:
    from harness.leaderboard.app import launch
    from harness.leaderboard.ranking import Ranking

    ranking = Ranking.parse(args.rank_by)
    launch(_db(args), args.submissions, host=args.host, port=args.port, ranking=ranking, block=True)
    return 0


def cmd_export(args) -> int:
    from harness.leaderboard.export import export
    from harness.leaderboard.ranking import Ranking

    path = export(
        _db(args), args.submissions, args.out_dir, Ranking.parse(args.rank_by), progress=not args.quiet
    )
    print(f"wrote {path}")
    return 0
