"""CPU timings of the everyday commands: `harness --help`, `harness validate`, and the demo
`harness run` with the share each stage takes.

    python bench/cli_bench.py [--repeat 3] [--out result.json]

Measures, on one machine, in one run (a private HARNESS_CACHE and work folder under /tmp):
- help: `harness --help` in a fresh process (wall clock; median of --repeat);
- validate: `harness validate stories/cat-and-youth.yaml` in a fresh process (median);
- run: `harness run stories/demo.yaml` in a fresh process, the tiny model already in the cache
  (the wall clock a user sees, median);
- stages: the same run twice in one process. The first run pays the imports and the first use
  of torch; the second, with every module already imported, gives each stage's time, timed
  around the stage functions: loading Kolors (`load_pipeline`), rendering (`engine.render`:
  the story, then the reproducibility re-render), scoring (`score_run` less the re-render
  inside it: loading the scorers and scoring), bundling (`write_bundle`). "importing and first
  use" is the first run less the second.
Not a test: the numbers go to stdout and, with --out, to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HARNESS = Path(sys.executable).with_name("harness")


def wall(cmd: list[str], cwd: Path, env: dict, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, env=env, check=False, capture_output=True, timeout=900)
        out.append(time.perf_counter() - t)
    return out


class Timed:
    """Wrap module functions to add up the seconds spent in them (called by module attribute)."""

    def __init__(self, targets: dict[str, tuple[str, str]]):
        import importlib

        self.seconds = dict.fromkeys(targets, 0.0)
        self.calls = dict.fromkeys(targets, 0)
        for label, (module, name) in targets.items():
            mod = importlib.import_module(module)
            setattr(mod, name, self._wrap(label, getattr(mod, name)))

    def _wrap(self, label, fn):
        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds[label] += time.perf_counter() - t
                self.calls[label] += 1

        return timed


def stages(work: Path) -> dict[str, float]:
    """Run the demo twice in this process; the second run gives the stage times."""
    os.chdir(work)
    from harness.cli import main
    from harness.render.pipelines import release_pipeline

    def once(i: int) -> float:
        shutil.copytree(ROOT / "stories", work / f"s{i}", dirs_exist_ok=True)
        argv = ["run", f"s{i}/demo.yaml", "--out", f"runs{i}", "--submissions", f"subs{i}"]
        release_pipeline()  # each run loads Kolors, as a fresh `harness run` does
        t = time.perf_counter()
        main(argv)
        return time.perf_counter() - t

    first = once(1)
    timed = Timed(
        {
            "load": ("harness.models.loader", "load_pipeline"),
            "render": ("harness.render.engine", "render"),
            "score": ("harness.score.api", "score_run"),
            "bundle": ("harness.bundle.writer", "write_bundle"),
        }
    )
    second = once(2)
    t = timed.seconds
    manifest = json.loads((work / "runs2" / "manifest.json").read_text())
    story_render = manifest.get("timings_s", {}).get("render", 0.0)
    return {
        "first_run_s": first,
        "second_run_s": second,
        "importing and first use": first - second,
        "loading Kolors": t["load"],
        "rendering the story": story_render,
        "re-rendering (reproducibility check)": t["render"] - story_render,
        "scoring (scorers loaded and run)": t["score"] - (t["render"] - story_render),
        "bundling": t["bundle"],
        "other (reading the story, checks, writing the run)": second
        - t["load"]
        - t["render"]
        - (t["score"] - (t["render"] - story_render))
        - t["bundle"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cli-bench-"))
    env = {**os.environ, "HARNESS_CACHE": str(work / "cache")}
    os.environ["HARNESS_CACHE"] = env["HARNESS_CACHE"]
    shutil.copytree(ROOT / "stories", work / "stories")
    try:
        # the tiny model is built into the cache once, outside every measurement
        subprocess.run(
            [str(HARNESS), "run", "stories/demo.yaml", "--out", "warm"],
            cwd=work,
            env=env,
            check=False,  # exit 1: the tiny scorers leave the gate unmet
            capture_output=True,
            timeout=900,
        )
        result = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "load_average": os.getloadavg(),
            "help_s": wall([str(HARNESS), "--help"], work, env, args.repeat),
            "validate_s": wall(
                [str(HARNESS), "validate", "stories/cat-and-youth.yaml"], work, env, args.repeat
            ),
            "run_s": [],
        }
        for i in range(args.repeat):
            cmd = [str(HARNESS), "run", "stories/demo.yaml", "--out", f"r{i}", "--submissions", f"b{i}"]
            result["run_s"] += wall(cmd, work, env, 1)
        result["stages_s"] = stages(work)
        result["load_average_end"] = os.getloadavg()
    finally:
        os.chdir(ROOT)
        shutil.rmtree(work, ignore_errors=True)
    for key in ("help_s", "validate_s", "run_s"):
        runs = ", ".join(f"{x:.3f}" for x in result[key])
        print(f"{key:12} median {statistics.median(result[key]):.3f} s  ({runs})")
    total = result["stages_s"]["first_run_s"]
    for name, s in result["stages_s"].items():
        print(f"  {name:34} {s:7.3f} s  {100 * s / total:5.1f}% of the first run")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
