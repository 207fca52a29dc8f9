"""Leaderboard benchmark: build, unchanged rebuild and first page at 1,000 and 10,000 bundles.

    python bench/leaderboard_bench.py [--bundles 1000] [--large 10000] [--work DIR] [--out result.json]

Measures, on one machine, in one run:
- generate: writing the synthetic bundles (8 small PNGs each, real manifests; not part of the
  board), then a wait of 2.2 s: stats younger than 2 s are not trusted by a rebuild (see
  harness/leaderboard/stats.py), and a real submissions folder is not being written while it
  is judged, so the rebuilds below measure that steady state (each reports what it read);
- build: `harness leaderboard build` from an empty index (read and hash every bundle, one
  transaction), for --bundles bundles;
- rebuild: the same build again, nothing changed: stat every bundle's names, compare with the
  index, read nothing (target: at most 10% of build);
- rebuild_one: one bundle rewritten with a new score, then a build (reads that bundle only);
- large_build: a first build of --large bundles (the first --bundles rewritten, the rest added;
  a new index; target: at most 20 s), and large_rebuild, nothing changed;
- query: the first page (100 rows) of the ranked table straight from SQLite, median of 20;
- app: launching the Gradio app over the large index, then the first page through the HTTP API
  (gradio_client `/rows`: first call, then the median of 5; target: at most 0.5 s) and the
  page HTML (GET /), median of 5.
Not a test: the numbers go to stdout and, with --out, to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.leaderboard import db, synthetic  # noqa: E402
from harness.leaderboard.build import build_index, default_db  # noqa: E402


def _median(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _fresh_index(root: Path) -> None:
    for p in root.glob(db.DB_NAME + "*"):  # the index, its WAL files and its digest cache
        p.unlink()


SETTLE_S = 2.2  # past the racy-stat window (stats.RACY_NS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundles", type=int, default=1000)
    ap.add_argument("--large", type=int, default=10000, help="bundles for the large build (0: skip)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/harness-leaderboard-bench"))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--image-size", type=int, default=32, help="panel side in pixels (default 32)")
    ap.add_argument(
        "--noise", action="store_true", help="random-pixel panels: real panel byte sizes, for hashing cost"
    )
    args = ap.parse_args(argv)

    root = args.work / "submissions"
    shutil.rmtree(args.work, ignore_errors=True)
    result: dict = {
        "bundles": args.bundles,
        "panels": f"8 x {args.image_size}px {'random-pixel' if args.noise else 'gradient'} PNGs",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}",
        "load_average_at_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    result["generate_s"], _ = _timed(
        lambda: synthetic.board(root, args.bundles, size=args.image_size, noise=args.noise)
    )
    time.sleep(SETTLE_S)

    result["build_s"], first = _timed(lambda: build_index(root, progress=False))
    result["build"] = first.line()
    result["rebuild_s"], again = _timed(lambda: build_index(root, progress=False))
    result["rebuild"] = again.line()
    result["rebuild_share_of_build"] = f"{result['rebuild_s'] / result['build_s']:.1%} (target <= 10%)"
    result["bundle_bytes"] = sum(
        f.stat().st_size for f in root.rglob("*") if f.is_file() and "/." not in str(f)
    )
    result["index_bytes"] = default_db(root).stat().st_size

    synthetic.write(root, synthetic.Spec("team0000", "story0", 9.9, title="rewritten"), seed=99)
    time.sleep(SETTLE_S)  # the other bundles stay as they were; this one is new on disk
    result["rebuild_one_s"], one = _timed(lambda: build_index(root, progress=False))
    result["rebuild_one"] = one.line()

    board_size = args.bundles
    if args.large > args.bundles:
        t = time.perf_counter()
        synthetic.board(root, args.large, size=args.image_size, noise=args.noise)
        result["large_generate_s"] = time.perf_counter() - t
        time.sleep(SETTLE_S)
        _fresh_index(root)
        result["large_build_s"], big = _timed(lambda: build_index(root, progress=False))
        result["large_build"] = big.line()
        result["large_build_target"] = f"{args.large} bundles in <= 20 s"
        result["large_rebuild_s"], big_again = _timed(lambda: build_index(root, progress=False))
        result["large_rebuild"] = big_again.line()
        board_size = args.large

    def first_page():
        conn = db.connect_read_only(default_db(root))
        rows = db.query(conn, limit=100)
        conn.close()
        assert len(rows) == min(100, board_size)

    result["query_first_page_s"] = _median(first_page, 20)

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from gradio_client import Client

    from harness.leaderboard.app import launch

    t = time.perf_counter()
    demo, url = launch(default_db(root), root, block=False)
    result["app_bundles"] = board_size
    result["app_launch_s"] = time.perf_counter() - t
    try:
        client = Client(url, verbose=False)
        result["api_first_page_first_call_s"], rows = _timed(
            lambda: client.predict("", False, 0.0, api_name="/rows")
        )
        assert len(rows) == min(100, board_size)
        result["api_first_page_s"] = _median(lambda: client.predict("", False, 0.0, api_name="/rows"), 5)
        result["api_first_page_target"] = "<= 0.5 s"
        urllib.request.urlopen(url).read()
        result["html_page_s"] = _median(lambda: urllib.request.urlopen(url).read(), 5)
    finally:
        demo.close()
    result["load_average_at_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())

    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k.ljust(width)}  {v:.3f}" if isinstance(v, float) else f"{k.ljust(width)}  {v}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
