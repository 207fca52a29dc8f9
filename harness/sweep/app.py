"""`harness sweep serve DIR`: a Gradio page to look at a sweep's candidates and pick by eye.

Owns: the pick page. Each swept panel shows its candidates ranked by aesthetic score with their
scores; a person can override the sweep's pick (and the LoRA strength, which is one for the
whole story), sees the story's mean aesthetic score, its consistency and the gate update, and
saves the story as `story.picked.yaml` in DIR (the sweep's own `story.swept.yaml` is left as
the sweep chose). Reads only a folder `harness sweep` made (its marker, rows and PNGs through
`harness.safeio`: no link followed) and shows only candidates the sweep's plan names, each once,
each finished (`store.finished`); the gate's threshold is the scoring config's, never the
report's; a damaged report or table is one HarnessError line. Images reach the browser
re-encoded from decoded pixels.
Serves on 127.0.0.1 by default, with no share link and no allowed_paths, behind the
HTTP guard (`harness.http_guard`: no upload route, no outside host).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.sweep import store
from harness.sweep.plan import scale_text
from harness.sweep.select import Option, story_scores

if TYPE_CHECKING:
    from harness.config.scoring import ScoringConfig

PICKED_STORY = store.PICKED_STORY
THUMB = 256
MAX_OPTIONS = 64  # candidates shown per panel: the best by aesthetic score


def _int(v: Any) -> int:
    """A whole number from JSON or the table (a bool, a fraction or text is damage)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
        raise TypeError(f"{v!r} is not a whole number")
    return int(v)


class Picks:
    """The page's data side (no Gradio): a sweep folder's candidates, the story's numbers for
    any pick, and saving a pick as a story."""

    def __init__(self, out: Path, scoring: "ScoringConfig | None" = None):
        """`scoring`: the scoring config the sweep ran with (`--scoring-config`); the gate's
        threshold comes from it (default: the competition's gate), never from the folder."""
        from harness.ownership import inspect

        self.out = Path(out)
        if not os.path.lexists(self.out / store.MARKER) or inspect(self.out, store.PURPOSE).state != "ours":
            raise HarnessError(f"{self.out}: not a sweep folder (run `harness sweep STORY --out {self.out}`)")
        if not (self.out / store.REPORT).is_file():
            raise HarnessError(
                f"{self.out}: the sweep has not finished (no {store.REPORT}); run `harness sweep` again"
            )
        from harness.config.scoring import scoring_for
        from harness.config.story import load_story

        self.template = load_story(self.out / store.SWEPT_STORY, follow_links=False)
        self.threshold = scoring_for(self.template.story.base_model, scoring).threshold
        try:
            self._read()
        except HarnessError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, NameError, IndexError) as e:
            raise HarnessError(
                f"{self.out}: {store.REPORT} or {store.TABLE} is damaged ({type(e).__name__}: "
                f"{str(e)[:120]}); run `harness sweep` again"
            ) from None
        for p in self.swept:
            if not self.options.get(self.chosen_scale, {}).get(p):
                raise HarnessError(
                    f"{self.out}: panel {p} has no finished candidate at the chosen strength; "
                    "run `harness sweep` again"
                )

    def _read(self) -> None:
        """The report's plan and the table's candidates: only ids the plan names (the id is the
        hash of the story, panel, seed, strength and steps; the seed is the panel's story seed
        or its derived seed of that rank), each once, each finished (`store.finished`)."""
        from harness.safeio import read_json
        from harness.sweep.outputs import read_table
        from harness.sweep.plan import MAX_SEEDS, Candidate, derived_seeds

        marker = read_json(self.out / store.MARKER, max_bytes=64 << 10)
        sha = marker["story_sha256"]
        if not isinstance(sha, str):
            raise TypeError("story_sha256 is not text")
        self.report = read_json(self.out / store.REPORT, max_bytes=4 << 20)
        self.steps = _int(self.report["steps"])
        self.before = float(self.report["before"]["aesthetic_mean"])
        self.story_name = str(self.report["story"])
        self.swept = [_int(p) for p in self.report["swept_panels"]]
        scales = [None if s is None else float(s) for s in self.report["scales"]]
        own = {_int(r["panel"]): _int(r["original"]["seed"]) for r in self.report["panels"]}
        table = read_table(self.out)
        self.options: dict[Any, dict[int, list[Option]]] = {}
        seen: set[str] = set()
        derived: dict[int, list[int]] = {}
        for rec in table.to_dict("records"):
            cid = str(rec["id"])
            if cid in seen or _int(rec["steps"]) != self.steps:
                continue
            panel, rank, seed = _int(rec["panel"]), _int(rec["rank"]), int(str(rec["seed"]))
            scale = None if rec["scale"] is None or rec["scale"] != rec["scale"] else float(rec["scale"])
            if panel not in own or scale not in scales or not 0 <= rank <= MAX_SEEDS:
                continue
            if rank == 0:
                expected = own[panel]
            else:
                if panel not in self.swept:
                    continue
                have = derived.get(panel, [])
                if len(have) < rank:
                    have = derived[panel] = derived_seeds(sha, panel, own[panel], rank)
                expected = have[rank - 1]
            cand = Candidate(panel, rank, expected, scale, self.steps, sha)
            if cand.id != cid or seed != expected:
                continue
            row = store.finished(self.out, cand)
            if row is None:
                continue
            seen.add(cid)
            o = Option(
                cid, panel, rank, expected, scale, row["aesthetic"], row["clip_t"], tuple(row["embedding"])
            )
            self.options.setdefault(o.scale, {}).setdefault(o.panel, []).append(o)
        for per_panel in self.options.values():
            for p in per_panel:
                per_panel[p].sort(key=lambda o: (-o.aesthetic, o.rank))
                del per_panel[p][MAX_OPTIONS:]
        self.scales = list(self.options)
        after = self.report["after"]["scale"]
        self.chosen_scale = None if after is None else float(after)
        self.chosen = {_int(r["panel"]): str(r["chosen"]["id"]) for r in self.report["panels"]}
        self.original = {_int(r["panel"]): str(r["original"]["id"]) for r in self.report["panels"]}
        for p in self.swept:  # a pick the report names that is not a listed candidate: the story seed
            if self.by_id(self.chosen_scale, self.chosen.get(p, "")) is None:
                self.chosen[p] = self.original.get(p, "")

    def by_id(self, scale, cid: str) -> Option | None:
        return next((o for opts in self.options.get(scale, {}).values() for o in opts if o.id == cid), None)

    def default_pick(self, scale) -> dict[int, str]:
        """The sweep's pick at its strength; at another strength, each panel's best candidate."""
        if scale == self.chosen_scale:
            return dict(self.chosen)
        return {p: opts[0].id for p, opts in self.options[scale].items()}

    def resolve(self, scale, picks: dict[int, str | None]) -> list[Option]:
        """One candidate per panel: the picked one where given, else the panel's story seed."""
        chosen = []
        for p, opts in sorted(self.options[scale].items()):
            o = self.by_id(scale, picks.get(p) or "") if picks.get(p) else None
            chosen.append(o if o is not None and o.panel == p else next(x for x in opts if x.rank == 0))
        return chosen

    def summary(self, scale, picks: dict[int, str | None]) -> str:
        chosen = self.resolve(scale, picks)
        mean, clip_i = story_scores(chosen)
        before = self.before
        gate = "VALID" if mean >= self.threshold else "INVALID"
        ci = "n/a" if clip_i is None else f"{clip_i:.4f}"
        return (
            f"story mean aesthetic {mean:.4f} (original {before:.4f}) · CLIP-I {ci} · "
            f"{_scale_label(scale)} · gate (mean >= {self.threshold:g}): {gate}"
        )

    def image(self, option: Option):
        from PIL import Image

        from harness.imaging import open_untrusted
        from harness.safeio import read_bytes

        data = read_bytes(store.png_path(self.out, option.id), max_bytes=256 << 20)
        with open_untrusted(io.BytesIO(data), 1 << 26) as im:
            rgb = im.convert("RGB")
        if max(rgb.size) < THUMB:  # the tiny model's panels: enlarge without smoothing
            k = THUMB // max(rgb.size)
            rgb = rgb.resize((rgb.width * k, rgb.height * k), Image.Resampling.NEAREST)
        return rgb

    @staticmethod
    def label(o: Option, n: int) -> str:
        seed = "story seed" if o.rank == 0 else f"seed #{o.rank}"
        clip_t = "n/a" if o.clip_t is None else f"{o.clip_t:.3f}"
        return f"{n}. {seed} {o.seed} · aesthetic {o.aesthetic:.4f} · CLIP-T {clip_t}"

    def save(self, scale, picks: dict[int, str | None]) -> Path:
        """story.picked.yaml: the sweep's story with these seeds and this strength, validated."""
        import yaml

        from harness.config.story import load_story
        from harness.safeio import write_atomic

        data = self.template.story.model_dump(mode="json", exclude_none=True)
        for o in self.resolve(scale, picks):
            data["panels"][o.panel - 1]["seed"] = o.seed
        if scale is not None and "lora" in data:
            data["lora"]["scale"] = scale
        text = "# Picked on `harness sweep serve` from the sweep's candidates.\n" + yaml.safe_dump(
            data, allow_unicode=True, sort_keys=False, width=1000
        )
        path = write_atomic(self.out / PICKED_STORY, text)
        load_story(path, follow_links=False)
        return path


def _scale_label(scale) -> str:
    return "no LoRA" if scale is None else f"LoRA ×{scale:g}"


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def build_app(out: Path, scoring: "ScoringConfig | None" = None):
    """The Gradio Blocks of the pick page (not launched; see `serve`)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import gradio as gr

    picks = Picks(out, scoring)
    swept = picks.swept

    def gallery(scale, p):
        opts = picks.options[scale][p]
        return [(picks.image(o), picks.label(o, i + 1)) for i, o in enumerate(opts)]

    def radio(scale, p, value):
        opts = picks.options[scale][p]
        return gr.Radio(choices=[(picks.label(o, i + 1), o.id) for i, o in enumerate(opts)], value=value)

    def current(scale, values) -> dict[int, str | None]:
        return dict(zip(swept, values, strict=True))

    def on_pick(name, *values):
        scale = by_name[name]
        return picks.summary(scale, current(scale, values))

    def on_scale(name):
        scale = by_name[name]
        default = picks.default_pick(scale)
        return (
            [radio(scale, p, default[p]) for p in swept]
            + [gallery(scale, p) for p in swept]
            + [picks.summary(scale, default)]
        )

    def on_save(name, *values):
        scale = by_name[name]
        try:
            path = picks.save(scale, current(scale, values))
        except HarnessError as e:
            return f"not saved: {e}"
        return f"saved {path.name}: {picks.summary(scale, current(scale, values))}"

    by_name = {scale_text(s): s for s in picks.scales}  # a Radio's values are text (None has no LoRA)
    scale0 = picks.chosen_scale
    story = picks.story_name
    with gr.Blocks(title=f"sweep: {story}", analytics_enabled=False) as demo:
        gr.Markdown("# Sweep: pick the story's panels")  # fixed text only
        summary = gr.Textbox(
            value=picks.summary(scale0, picks.chosen),
            label="story",
            interactive=False,
            elem_id="sweep-summary",
        )
        strength = gr.Radio(
            choices=[(_scale_label(s), scale_text(s)) for s in picks.scales],
            value=scale_text(scale0),
            label="LoRA strength (one for the whole story)",
            visible=len(picks.scales) > 1,
            elem_id="strength",
        )
        radios, galleries = [], []
        for p in swept:
            with gr.Row():
                with gr.Column(scale=3):
                    galleries.append(
                        gr.Gallery(
                            value=gallery(scale0, p),
                            label=f"panel {p}: {_short(picks.template.story.panels[p - 1].prompt)}",
                            columns=4,
                            height="auto",
                            object_fit="contain",
                            elem_id=f"gallery-{p}",
                        )
                    )
                with gr.Column(scale=2):
                    opts = picks.options[scale0][p]
                    radios.append(
                        gr.Radio(
                            choices=[(picks.label(o, i + 1), o.id) for i, o in enumerate(opts)],
                            value=picks.chosen[p],
                            label=f"panel {p}: pick",
                            elem_id=f"pick-{p}",
                        )
                    )
        with gr.Row():
            save = gr.Button("save story", elem_id="save")
            status = gr.Textbox(label="saved", interactive=False, elem_id="save-status")
        for r in radios:
            r.change(on_pick, [strength, *radios], [summary], api_visibility="private")
        strength.change(on_scale, [strength], [*radios, *galleries, summary], api_visibility="private")
        save.click(on_save, [strength, *radios], [status], api_visibility="private")
    return demo


def serve(
    out: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    block: bool = True,
    scoring: "ScoringConfig | None" = None,
):
    """Launch the pick page; returns (demo, local url). No share link and no allowed_paths."""
    import gradio as gr

    from harness.http_guard import launch_options

    demo = build_app(out, scoring)
    demo.queue(default_concurrency_limit=1)
    _, url, _ = demo.launch(
        **launch_options(),
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        quiet=not block,
        theme=gr.themes.Base(
            font=["system-ui", "Noto Sans CJK SC", "WenQuanYi Micro Hei", "sans-serif"],
            font_mono=["ui-monospace", "DejaVu Sans Mono", "monospace"],
        ),
    )
    return demo, url
