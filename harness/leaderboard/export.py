"""`harness leaderboard export OUT_DIR`: one self-contained HTML page, for sharing without a server.

Owns: the static page (`templates/leaderboard.html.j2`, jinja2 with HTML autoescaping on: team
names, titles, prompts and reasons are untrusted text) and its thumbnails. Thumbnails are decoded
from the bundles through `files.resolve_file` under a pixel cap, shrunk and embedded as JPEG data
URIs, so the page is one file with no links back into the submissions root. The page carries a
Content-Security-Policy that allows inline styles and data: images only: nothing on it can make
a browser contact any host. It is written with `safeio.write_atomic` (a link planted at its name
is replaced, never written through).
"""

from __future__ import annotations

import base64
import io
from datetime import datetime, timezone
from pathlib import Path

from harness.config.gate import AESTHETIC_GATE
from harness.errors import HarnessError
from harness.leaderboard import db
from harness.leaderboard.files import load_panel
from harness.leaderboard.ranking import DEFAULT_RANKING, Ranking

PAGE = "index.html"
THUMB_SIDE = 128


def thumbnail(root: Path, bundle: str, rel: str, side: int = THUMB_SIDE) -> str:
    """A data: URI of a small JPEG of one panel; HarnessError when the file is refused."""
    img = load_panel(root, bundle, rel, side)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    return Environment(
        loader=PackageLoader("harness.leaderboard", "templates"),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True),
        undefined=StrictUndefined,
    )


def render_page(
    db_path: Path, root: Path, ranking: Ranking = DEFAULT_RANKING, *, progress: bool = True
) -> str:
    from tqdm.auto import tqdm

    conn = db.connect_read_only(db_path)
    try:
        rows = db.query(conn, ranking)
        meta = db.read_meta(conn)
        counts = db.count(conn)
        entries = {r["path"]: db.get_entry(conn, r["path"]) for r in rows}
    finally:
        conn.close()
    items = []
    for r in tqdm(rows, desc="thumbnails", unit="bundle", disable=not progress, leave=False):
        entry = entries[r["path"]]
        panels = []
        for p in sorted(entry.panels, key=lambda p: p.index) if entry else []:
            src, problem = None, None
            if p.image is not None:
                try:
                    src = thumbnail(root, entry.path, p.image)
                except HarnessError as e:
                    problem = str(e)
            panels.append(
                {
                    "index": p.index,
                    "prompt": p.prompt,
                    "src": src,
                    "problem": problem,
                    "aesthetic": p.aesthetic,
                }
            )
        items.append({**r, "panels": panels, "model_id": entry.model_id if entry else ""})
    return (
        _environment()
        .get_template("leaderboard.html.j2")
        .render(
            rows=items,
            counts=counts,
            ranking=ranking.describe(),
            threshold=float(meta.get("threshold", AESTHETIC_GATE)),
            built=meta.get("built", "?"),
            exported=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
    )


def export(
    db_path: Path, root: Path, out_dir: Path, ranking: Ranking = DEFAULT_RANKING, *, progress: bool = True
) -> Path:
    """Write OUT_DIR/index.html atomically; returns its path."""
    from harness.safeio import write_atomic

    html = render_page(db_path, root, ranking, progress=progress)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_atomic(out_dir / PAGE, html)
