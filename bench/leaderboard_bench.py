"""Leaderboard benchmark: build and first-page time for N synthetic bundles (default 1,000).

    python bench/leaderboard_bench.py [--bundles 1000] [--work /tmp/lb-bench] [--out result.json]

Measures, on one machine, in one run:
- generate: writing N synthetic bundles (8 small PNGs each, real manifests; not part of the board);
- build: `harness leaderboard build` from an empty index (hash every file, one transaction);
- rebuild: the same build again, nothing changed (the idempotent re-run; file hashes come from
  the digest cache beside the index unless a file's size, mtime, ctime or inode changed);
- query: the first page (100 rows) of the ranked table straight from SQLite, median of 20;
- app: launching the Gradio app, then the first page through the HTTP API (gradio_client
  `/rows`) and the page HTML (GET /), each the median of 5 after one warm-up call.
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundles", type=int, default=1000)
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
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    t = time.perf_counter()
    synthetic.board(root, args.bundles, size=args.image_size, noise=args.noise)
    result["generate_s"] = time.perf_counter() - t

    t = time.perf_counter()
    first = build_index(root, progress=False)
    result["build_s"] = time.perf_counter() - t
    result["build"] = first.line()
    t = time.perf_counter()
    again = build_index(root, progress=False)
    result["rebuild_s"] = time.perf_counter() - t
    result["rebuild"] = again.line()
    result["bundle_bytes"] = sum(
        f.stat().st_size for f in root.rglob("*") if f.is_file() and "/." not in str(f)
    )
    result["index_bytes"] = default_db(root).stat().st_size

    def first_page():
        conn = db.connect_read_only(default_db(root))
        rows = db.query(conn, limit=100)
        conn.close()
        assert len(rows) == min(100, args.bundles)

    result["query_first_page_s"] = _median(first_page, 20)

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from gradio_client import Client

    from harness.leaderboard.app import launch

    t = time.perf_counter()
    demo, url = launch(default_db(root), root, block=False)
    result["app_launch_s"] = time.perf_counter() - t
    try:
        client = Client(url, verbose=False)
        client.predict("", False, 0.0, api_name="/rows")
        result["api_first_page_s"] = _median(lambda: client.predict("", False, 0.0, api_name="/rows"), 5)
        urllib.request.urlopen(url).read()
        result["html_page_s"] = _median(lambda: urllib.request.urlopen(url).read(), 5)
    finally:
        demo.close()

    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k.ljust(width)}  {v:.3f}" if isinstance(v, float) else f"{k.ljust(width)}  {v}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
