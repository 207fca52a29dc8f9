"""The leaderboard as a standalone Gradio app: `python leaderboard/app.py`.

The shape a hosted Space or ModelScope Studio expects (an app.py that defines `demo`). Settings
come from the environment:
  HARNESS_SUBMISSIONS   bundles root (default: ./submissions)
  HARNESS_LEADERBOARD_DB  index file (default: $HARNESS_SUBMISSIONS/.leaderboard.sqlite)
  HARNESS_RANK_BY       ranking keys, e.g. valid,aesthetic,consistency (default valid,aesthetic)
  GRADIO_SERVER_NAME / GRADIO_SERVER_PORT  where to listen (Gradio's own variables)
When the index does not exist yet it is built once at start; after that the app only reads.
Same app as `harness leaderboard serve`, served the same way (`launch_blocks`: uploads refused,
no request to another host); a `demo` launched by other means has none of those guards.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without `pip install -e .`

from harness.leaderboard.app import build_app, launch_blocks  # noqa: E402
from harness.leaderboard.build import build_index, default_db  # noqa: E402
from harness.leaderboard.ranking import Ranking  # noqa: E402

ROOT = Path(os.environ.get("HARNESS_SUBMISSIONS", "submissions"))
DB = Path(os.environ.get("HARNESS_LEADERBOARD_DB") or default_db(ROOT))
if not DB.exists():
    print(f"building the leaderboard index {DB}: {build_index(ROOT, DB, progress=False).line()}")
demo = build_app(DB, ROOT, Ranking.parse(os.environ.get("HARNESS_RANK_BY")))

if __name__ == "__main__":
    launch_blocks(demo)
