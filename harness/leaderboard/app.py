"""The leaderboard as a Gradio 6 app, read-only over the index and the submissions root.

Owns: the page (filters, ranked table, the aesthetic-vs-consistency plot with the gate line, the
detail view with the 8-panel gallery, prompts and per-panel scores) and its public API
(`/rows` and `/detail`, for gradio_client). It opens the index read-only for every request,
never writes to the submissions root, and shows a bundle's images only through
`files.resolve_file` (inside the root, no symlinks) after decoding them under a pixel cap and
re-encoding them as PNG into a private cache: what a browser receives is always a real image,
never a participant's bytes. `launch` gives Gradio no allowed_paths, so no URL reaches the
submissions root directly.
"""

import contextlib
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

from harness.config.gate import AESTHETIC_GATE
from harness.errors import HarnessError
from harness.leaderboard import db
from harness.leaderboard.entry import Entry
from harness.leaderboard.files import load_panel
from harness.leaderboard.ranking import DEFAULT_RANKING, Ranking

GALLERY_MAX_SIDE = 1024
TABLE_HEADERS = {
    "rank": "rank",
    "team": "team",
    "name": "name",
    "aesthetic": "aesthetic",
    "consistency": "consistency",
    "alignment": "alignment",
    "reproducibility": "reproducibility",
    "status": "valid",
    "source": "scores",
    "reason": "reason",
    "path": "folder",
}
STATUS_SHOWN = {"valid": "valid", "invalid": "INVALID", "unscored": "unscored"}


class Board:
    """The app's data side (no Gradio here): queries, detail rows, gallery files, the plot."""

    def __init__(self, db_path: Path, root: Path, ranking: Ranking = DEFAULT_RANKING, page_size: int = 100):
        self.db_path = Path(db_path)
        self.root = Path(root).resolve()
        self.ranking = ranking
        self.page_size = page_size
        self._images = Path(tempfile.mkdtemp(prefix="harness-leaderboard-"))
        weakref.finalize(self, shutil.rmtree, self._images, True)
        with self._conn() as conn:  # refuse a missing, foreign or old index at start-up
            self.meta = db.read_meta(conn)
        self.threshold = float(self.meta.get("threshold", AESTHETIC_GATE))

    def _conn(self):
        return contextlib.closing(db.connect_read_only(self.db_path))

    def rows(self, search: str = "", valid_only: bool = False, min_aesthetic: float | None = 0.0):
        with self._conn() as conn:
            return db.query(
                conn,
                self.ranking,
                search=search or "",
                valid_only=bool(valid_only),
                min_aesthetic=min_aesthetic,
                limit=self.page_size,
            )

    def all_points(self) -> list[dict[str, Any]]:
        with self._conn() as conn:
            return db.query(conn, self.ranking)

    def counts(self) -> dict[str, int]:
        with self._conn() as conn:
            return db.count(conn)

    def entry(self, path: str) -> Entry | None:
        with self._conn() as conn:
            return db.get_entry(conn, path)

    def image(self, entry: Entry, rel: str) -> Path:
        """A re-encoded PNG copy of one panel (cached by bundle digest); HarnessError if refused."""
        out = self._images / entry.digest[:16] / rel.replace("/", "_")
        out = out.with_suffix(".png")
        if not out.is_file():
            img = load_panel(self.root, entry.path, rel, GALLERY_MAX_SIDE)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.tmp")
            img.save(tmp, format="PNG")
            os.replace(tmp, out)
        return out

    def gallery(self, entry: Entry) -> tuple[list[tuple[str, str]], list[str]]:
        """([(png path, caption)], problems) for the entry's panels in order."""
        items, problems = [], []
        for p in sorted(entry.panels, key=lambda p: p.index):
            if p.image is None:
                problems.append(f"panel {p.index}: no intact image in the bundle")
                continue
            try:
                items.append((str(self.image(entry, p.image)), f"{p.index}. {p.prompt[:120]}"))
            except HarnessError as e:
                problems.append(f"panel {p.index}: {e}")
        return items, problems

    def plot(self):
        """Aesthetic mean (x) vs story consistency (y) for every scored bundle, with the gate line."""
        from matplotlib.figure import Figure

        points = [r for r in self.all_points() if r["aesthetic"] is not None]
        fig = Figure(figsize=(7, 4.2), dpi=100)
        ax = fig.add_subplot()
        colours = {"valid": "#2a9d4b", "invalid": "#d1495b", "unscored": "#999999"}
        for status in ("valid", "invalid"):
            pts = [r for r in points if r["status"] == status]
            ax.scatter(
                [r["aesthetic"] for r in pts],
                [r["consistency"] if r["consistency"] is not None else float("nan") for r in pts],
                s=22,
                c=colours[status],
                label=f"{status} ({len(pts)})",
                alpha=0.8,
            )
        ax.axvline(self.threshold, color="#333333", linestyle="--", linewidth=1)
        ax.text(
            self.threshold, 1.0, f" gate {self.threshold:g}", transform=ax.get_xaxis_transform(), va="top"
        )
        ax.set_xlabel("aesthetic mean")
        ax.set_ylabel("story consistency (CLIP-I)")
        ax.grid(alpha=0.3)
        ax.margins(0.08)
        if points:
            ax.legend(loc="best")
        fig.tight_layout()
        return fig


def _fmt(v: Any) -> Any:
    return round(v, 4) if isinstance(v, float) else ("" if v is None else v)


def table_frame(rows: list[dict[str, Any]]):
    import pandas as pd

    data = [
        {
            label: (STATUS_SHOWN.get(r[col], r[col]) if col == "status" else _fmt(r[col]))
            for col, label in TABLE_HEADERS.items()
        }
        for r in rows
    ]
    return pd.DataFrame(data, columns=list(TABLE_HEADERS.values()))


def detail_text(entry: Entry | None, problems: list[str]) -> str:
    """The detail view as plain text (shown in a Textbox: nothing in it is interpreted)."""
    if entry is None:
        return "Pick a submission in the table (or the list above) to see its panels."
    lines = [f"{entry.team} / {entry.name}" + (f" — {entry.title}" if entry.title else "")]
    status = STATUS_SHOWN[entry.status]
    lines.append(f"{status}: {entry.reason}" if entry.reason else status)
    numbers = [
        f"aesthetic mean {entry.aesthetic:.4f}" if entry.aesthetic is not None else "aesthetic: -",
        f"consistency {entry.consistency:.4f}" if entry.consistency is not None else "consistency: -",
        f"alignment {entry.alignment:.4f}" if entry.alignment is not None else "alignment: -",
        f"reproducibility: {entry.reproducibility}",
        "scores re-checked by the judges" if entry.source == "judges" else "scores as claimed by the team",
    ]
    lines.append(" · ".join(numbers))
    if entry.model_id:
        lines.append(f"ModelScope: {entry.model_id}")
    lines += [f"- {p}" for p in problems]
    return "\n".join(lines)


def panels_frame(entry: Entry | None):
    import pandas as pd

    cols = ["panel", "prompt", "aesthetic", "consistency", "clip-t"]
    if entry is None:
        return pd.DataFrame([], columns=cols)
    rows = [
        [p.index, p.prompt, _fmt(p.aesthetic), _fmt(p.consistency), _fmt(p.clip_t)]
        for p in sorted(entry.panels, key=lambda p: p.index)
    ]
    return pd.DataFrame(rows, columns=cols)


def local_theme():
    """Gradio's base look with system fonts only: no font is fetched from another host."""
    import gradio as gr

    return gr.themes.Base(
        font=["system-ui", "Noto Sans CJK SC", "WenQuanYi Micro Hei", "sans-serif"],
        font_mono=["ui-monospace", "DejaVu Sans Mono", "monospace"],
    )


def build_app(db_path: Path, root: Path, ranking: Ranking = DEFAULT_RANKING, page_size: int = 100):
    """The Gradio Blocks of the leaderboard (not launched; see `launch_blocks`)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import gradio as gr

    board = Board(db_path, root, ranking, page_size)

    def summary_text() -> str:
        c = board.counts()
        return (
            f"{sum(c.values())} submissions: {c['valid']} valid, {c['invalid']} invalid, "
            f"{c['unscored']} unscored · {board.ranking.describe()} · aesthetic gate "
            f"{board.threshold:g} · index built {board.meta.get('built', '?')}"
        )

    def refresh(search: str, valid_only: bool, min_aesthetic: float):
        found = board.rows(search, valid_only, min_aesthetic)
        choices = [(f"{r['rank']}. {r['team']} / {r['name']}", r["path"]) for r in found]
        first = choices[0][1] if choices else None
        return table_frame(found), gr.Dropdown(choices=choices, value=first), summary_text()

    def detail(path: str | None):
        entry = board.entry(path) if isinstance(path, str) and path else None
        items, problems = board.gallery(entry) if entry else ([], [])
        return items, detail_text(entry, problems), panels_frame(entry)

    def pick(table, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        try:
            return table.iloc[int(row)][TABLE_HEADERS["path"]]
        except (IndexError, KeyError, ValueError, TypeError):
            return gr.skip()

    with gr.Blocks(title="Kolors LoRA story leaderboard", analytics_enabled=False) as demo:
        gr.Markdown("# Kolors LoRA style-story leaderboard")  # the only markdown: a fixed heading
        # filled, like the table, by `refresh` when the page loads
        summary = gr.Textbox(label="summary", interactive=False, lines=1, elem_id="summary")
        with gr.Row():
            search = gr.Textbox(label="search", placeholder="team, story, prompt…", scale=3)
            valid_only = gr.Checkbox(label="valid only", value=False, scale=1)
            min_aesthetic = gr.Slider(0, 10, value=0, step=0.1, label="minimum aesthetic mean", scale=2)
        table = gr.Dataframe(
            value=table_frame([]),
            datatype="str",  # team text is shown as text, never as markdown or HTML
            interactive=False,
            label="ranking",
            elem_id="leaderboard-table",
        )
        with gr.Row():
            with gr.Column(scale=3):
                chooser = gr.Dropdown(
                    label="submission", choices=[], interactive=True, allow_custom_value=True
                )
                info = gr.Textbox(
                    value=detail_text(None, []),
                    label="details",
                    interactive=False,
                    lines=4,
                    max_lines=40,
                    elem_id="detail",
                )
                gallery = gr.Gallery(
                    label="the 8 panels", columns=4, object_fit="contain", height="auto", elem_id="panels"
                )
                panel_table = gr.Dataframe(
                    value=panels_frame(None),
                    datatype="str",
                    interactive=False,
                    label="prompts and scores",
                    elem_id="panel-table",
                )
            with gr.Column(scale=2):
                plot = gr.Plot(label="aesthetic vs consistency")
        filters = [search, valid_only, min_aesthetic]
        for control in filters:
            control.change(refresh, filters, [table, chooser, summary], api_visibility="private")
        table.select(pick, [table], [chooser], api_visibility="private")
        chooser.change(detail, [chooser], [gallery, info, panel_table], api_name="detail")
        demo.load(refresh, filters, [table, chooser, summary], api_visibility="private")
        demo.load(lambda: board.plot(), None, [plot], api_visibility="private")

        def ranked_rows(search: str = "", valid_only: bool = False, min_aesthetic: float = 0.0) -> list[dict]:
            """The ranked rows (rank, folder, team, name, scores, status, reason), filtered."""
            # "folder", not "path": gradio_client takes any dict with a "path" key for a file
            return [
                {("folder" if k == "path" else k): v for k, v in r.items()}
                for r in board.rows(search, valid_only, min_aesthetic)
            ]

        gr.api(ranked_rows, api_name="rows")  # the public API, for scripts and gradio_client
    return demo


def launch_blocks(demo, *, host: str | None = None, port: int | None = None, block: bool = True) -> str:
    """Serve `demo` read-only (see the module docstring); returns the local URL.

    No share link, no allowed_paths, no SSR, MCP, PWA or monitoring routes; every request
    passes `http_guard.ReadOnlyGuard`. Before returning (or blocking) it asks the app for its
    first page once (`_warm_up`), so no viewer pays Gradio's one-time start of event processing.
    """
    from harness.http_guard import launch_options

    demo.queue(default_concurrency_limit=4)
    _, url, _ = demo.launch(
        **launch_options(),
        server_name=host,
        server_port=port,
        prevent_thread_lock=True,  # warmed up first, then blocks below when asked to
        quiet=not block,
        theme=local_theme(),
    )
    _warm_up(url)
    if block:
        demo.block_thread()
    return url


def _warm_up(url: str) -> None:
    """Ask the served app for its first page once, so the first viewer does not pay Gradio's
    one-time start of event processing (~0.4 s, whatever the board's size). Best effort: the
    board serves the same either way."""
    import json
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    base = f"http://127.0.0.1:{parts.port}/" if parts.port else url
    body = json.dumps({"data": ["", False, 0.0]}).encode()
    headers = {"Content-Type": "application/json"}
    try:
        req = urllib.request.Request(base + "gradio_api/call/rows", body, headers, method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            event = json.loads(r.read())["event_id"]
        with urllib.request.urlopen(f"{base}gradio_api/call/rows/{event}", timeout=30) as r:
            r.read()
    except Exception:  # noqa: BLE001 - a warm-up that fails changes nothing but the first page's time
        pass


def launch(
    db_path: Path,
    root: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    ranking: Ranking = DEFAULT_RANKING,
    block: bool = True,
):
    """Build and launch; returns (demo, local url). No share link and no allowed_paths."""
    demo = build_app(db_path, root, ranking)
    return demo, launch_blocks(demo, host=host, port=port, block=block)
