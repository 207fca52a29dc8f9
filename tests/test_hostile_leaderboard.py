"""The leaderboard against hostile teams (issue 13, classes 2 and 10, batch isolation).

A team controls every byte of its bundle folder. These tests build a submissions root where
bundles carry deep JSON, YAML bombs, huge, FIFO, symlinked and folder-shaped files, odd folder
names and markdown/HTML in every text field, and check what judges and viewers care about:

- `harness leaderboard build` exits 0 within a time bound, every hostile bundle is a row with a
  one-line printable reason, the good bundle is ranked first, and nothing outside the index
  files changed;
- a bundle that takes too long is cut by the per-bundle limit; a build killed with SIGKILL is
  simply rerun;
- the index and its digest cache are never written through planted links;
- the static page shows team text as text and names no other host;
- the served board refuses uploads and other writes (nothing lands on disk), and a headless
  Chromium that opens the hostile bundle's detail view shows its text literally and makes no
  request to any host but 127.0.0.1.

Servers listen on 127.0.0.1, keep their temporary files under tmp_path and are stopped by the
fixtures.
"""

from __future__ import annotations

import hashlib
import html.parser
import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from harness.leaderboard import synthetic
from harness.leaderboard.synthetic import Spec
from tests.bundle_helpers import rehash

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
INDEX_FILES = (
    ".leaderboard.sqlite",
    ".leaderboard.sqlite-wal",
    ".leaderboard.sqlite-shm",
    ".leaderboard.sqlite.digests.json",
)
GiB = 1 << 30


def evil(tag: str) -> str:
    """Markdown and HTML that would fetch evil.example (or run a script) if interpreted."""
    return (
        f'![x](http://evil.example/{tag}.png) <img src="http://evil.example/{tag}-img.png"> '
        f"[c](javascript:alert('{tag}')) <b>bold</b> **star**"
    )


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under `root` (iterative, links not followed): kind, size, sha256 or target."""
    out: dict[str, tuple] = {}
    stack = [root]
    while stack:
        here = stack.pop()
        with os.scandir(here) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                rel = os.path.relpath(e.path, root)
                if stat.S_ISDIR(st.st_mode):
                    out[rel] = ("dir",)
                    stack.append(Path(e.path))
                elif stat.S_ISLNK(st.st_mode):
                    out[rel] = ("link", os.readlink(e.path))
                elif stat.S_ISREG(st.st_mode):
                    digest = (
                        hashlib.sha256(Path(e.path).read_bytes()).hexdigest() if st.st_size < 1 << 26 else ""
                    )
                    out[rel] = ("file", st.st_size, digest)
                else:
                    out[rel] = ("special", stat.S_IFMT(st.st_mode))
    return out


def cli(*args: str, timeout: float = 180, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def index_rows(root: Path) -> dict[str, sqlite3.Row]:
    conn = sqlite3.connect(root / ".leaderboard.sqlite")
    conn.row_factory = sqlite3.Row
    try:
        from harness.leaderboard import db

        return {r["path"]: r for r in db.query(conn)}
    finally:
        conn.close()


def _set_manifest(bundle: Path, **fields) -> None:
    """Rewrite manifest fields as a team could (JSON escapes kept: lone surrogates survive)."""
    path = bundle / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(fields)
    path.write_text(json.dumps(data, ensure_ascii=True, indent=1), encoding="utf-8")


def _deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


BILLION_LAUGHS = "title: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"l{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
)
DEEP_DIRS = 1100  # deeper than Python's recursion limit: a recursive walk of it raises


def hostile_board(root: Path, outside: Path) -> dict[str, tuple[str, str]]:
    """Write the board; returns {folder key: (expected status, expected words in the reason)}."""
    expected: dict[str, tuple[str, str]] = {}
    synthetic.write(root, Spec("good", "s1", 8.0))
    expected["good/s1"] = ("valid", "")
    synthetic.write(root, Spec("fine", "s1", 7.9))
    expected["fine/s1"] = ("valid", "")

    # text that would be markup: title, prompts, claimed reproducibility, manifest team and name
    b = synthetic.write(root, Spec("hostile", "s1", 7.3, title=evil("title")))
    scores = json.loads((b / "scores.json").read_text(encoding="utf-8"))
    for p in scores["panels"]:
        p["prompt"] = evil("prompt")
    scores["reproducibility"] = {"verdict": evil("repro")}
    (b / "scores.json").write_text(json.dumps(scores), encoding="utf-8")
    rehash(b)
    _set_manifest(b, team=evil("team"), name="s1\u202e\x1b[31m\ud800")
    expected["hostile/s1"] = ("invalid", "holds the bundle of ![x](http://evil.example/team.png)")

    # deep JSON everywhere a bundle has JSON
    b = synthetic.write(root, Spec("deep", "manifest", 7.0))
    (b / "manifest.json").write_text(_deep_json(200_000), encoding="utf-8")
    expected["deep/manifest"] = ("unscored", "nested")
    b = synthetic.write(root, Spec("deep", "scores", 7.0))
    (b / "scores.json").write_text('{"kind": "harness.scores", "summary": ' + _deep_json(100_000) + "}")
    rehash(b)
    expected["deep/scores"] = ("unscored", "nested")
    b = synthetic.write(root, Spec("deep", "prompts", None))
    (b / "prompts.json").write_text(_deep_json(100_000), encoding="utf-8")
    rehash(b)
    expected["deep/prompts"] = ("unscored", "no scores.json")
    b = synthetic.write(root, Spec("deep", "verdict", 6.8))
    (b / "verdict.json").write_text(_deep_json(100_000), encoding="utf-8")
    from harness.bundle.batch import current_digest

    ledger = {
        "deep/verdict": {
            "digest": current_digest(b),
            "verdict_sha256": hashlib.sha256((b / "verdict.json").read_bytes()).hexdigest(),
        }
    }
    expected["deep/verdict"] = ("valid", "")  # an unreadable verdict is no verdict: claimed numbers

    # YAML bombs in story.yaml (the title is cosmetic: the row is still the bundle's)
    b = synthetic.write(root, Spec("yaml", "alias", 7.0))
    (b / "story.yaml").write_text(BILLION_LAUGHS, encoding="utf-8")
    rehash(b)
    expected["yaml/alias"] = ("valid", "")
    b = synthetic.write(root, Spec("yaml", "deep", 7.0))
    (b / "story.yaml").write_text("title: " + _deep_json(10_000) + "\n", encoding="utf-8")
    rehash(b)
    expected["yaml/deep"] = ("valid", "")

    # huge files
    b = synthetic.write(root, Spec("huge", "manifest", 7.0))
    with open(b / "manifest.json", "r+b") as f:
        f.truncate(64 << 20)
    expected["huge/manifest"] = ("unscored", "cap")
    b = synthetic.write(root, Spec("huge", "scores", 7.0))
    with open(b / "scores.json", "r+b") as f:
        f.truncate(64 << 20)
    data = json.loads((b / "manifest.json").read_text(encoding="utf-8"))
    for e in data["files"]:
        if e["path"] == "scores.json":
            e["size"] = 64 << 20
    (b / "manifest.json").write_text(json.dumps(data), encoding="utf-8")
    expected["huge/scores"] = ("invalid", "cap")

    # FIFOs, links and folders where files should be
    b = synthetic.write(root, Spec("fifo", "manifest", 7.0))
    (b / "manifest.json").unlink()
    os.mkfifo(b / "manifest.json")
    expected["fifo/manifest"] = ("unscored", "FIFO")
    b = synthetic.write(root, Spec("fifo", "scores", 7.0))
    (b / "scores.json").unlink()
    os.mkfifo(b / "scores.json")
    expected["fifo/scores"] = ("invalid", "scores.json")
    b = synthetic.write(root, Spec("fifo", "verdict", 6.9))
    os.mkfifo(b / "verdict.json")
    ledger["fifo/verdict"] = {"digest": current_digest(b), "verdict_sha256": "0" * 64}
    expected["fifo/verdict"] = ("invalid", "verdict.json: not a regular file")
    # the judges' ledger (docs/leaderboard.md) vouches for both verdict files
    (root / ".verify-ledger.json").write_text(json.dumps(ledger), encoding="utf-8")
    b = synthetic.write(root, Spec("link", "manifest", 7.0))
    (outside / "manifest.json").write_bytes((b / "manifest.json").read_bytes())
    (b / "manifest.json").unlink()
    (b / "manifest.json").symlink_to(outside / "manifest.json")
    expected["link/manifest"] = ("unscored", "symlink")
    b = synthetic.write(root, Spec("link", "image", 7.0))
    (b / "images/01.png").unlink()
    (b / "images/01.png").symlink_to(outside / "secret.png")
    expected["link/image"] = ("invalid", "symlink")
    b = synthetic.write(root, Spec("dir", "manifest", 7.0))
    (b / "manifest.json").unlink()
    (b / "manifest.json").mkdir()
    expected["dir/manifest"] = ("unscored", "folder")
    b = synthetic.write(root, Spec("dir", "scores", 7.0))
    (b / "scores.json").unlink()
    (b / "scores.json").mkdir()
    expected["dir/scores"] = ("invalid", "scores.json")

    # a tree deeper than the recursion limit
    b = synthetic.write(root, Spec("tree", "deep", 7.0))
    here = b / "images"
    for _ in range(DEEP_DIRS):  # os.makedirs itself recurses
        here = here / "d"
        os.mkdir(here)
    expected["tree/deep"] = ("invalid", "")

    # folder names that are not names: a newline, markup, bytes that are not UTF-8
    for tag, raw in [("newline", "odd\nteam"), ("markup", "<img src=x onerror=alert(1)>")]:
        b = synthetic.write(root, Spec(tag, "s1", 7.0))
        (root / tag).rename(root / raw)
        expected[ascii(f"{raw}/s1")[1:-1]] = ("invalid", "folder name")
    b = synthetic.write(root, Spec("bytes", "s1", 7.0))
    os.rename(os.fsencode(root / "bytes"), os.fsencode(root) + b"/bad\xffname")
    expected["bad\\udcffname/s1"] = ("invalid", "folder name")
    return expected


def _remove_deep_tree(root: Path) -> None:
    """pytest's recursive clean-up cannot remove DEEP_DIRS levels; undo them bottom-up."""
    base = root / "tree/deep/images"
    for n in range(DEEP_DIRS, 0, -1):
        try:
            os.rmdir(base / "/".join(["d"] * n))
        except OSError:
            pass


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """(root, outside, expected, build result, seconds, snapshot before) of one hostile build."""
    base = tmp_path_factory.mktemp("hostile")
    root, outside = base / "submissions", base / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"secret")
    expected = hostile_board(root, outside)
    before = snapshot(base)
    t0 = time.monotonic()
    proc = cli("leaderboard", "build", "--submissions", str(root), "--quiet", "--bundle-timeout", "60")
    seconds = time.monotonic() - t0
    yield root, outside, expected, proc, seconds, before
    _remove_deep_tree(root)


def test_build_survives_every_hostile_bundle_and_ranks_the_good_ones(hostile):
    root, outside, expected, proc, seconds, before = hostile
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and len(proc.stdout.strip().splitlines()) == 1
    assert f"{len(expected)} added" in proc.stdout
    assert seconds < 120
    rows = index_rows(root)
    assert set(rows) == set(expected)
    assert [r["path"] for r in sorted(rows.values(), key=lambda r: r["rank"])][:2] == ["good/s1", "fine/s1"]
    for key, (status, words) in expected.items():
        row = rows[key]
        assert row["status"] == status, (key, row["reason"])
        assert words in row["reason"], (key, row["reason"])
        for col in ("path", "team", "name", "title", "reason", "reproducibility"):
            text = row[col] or ""
            assert text.isprintable() and len(text) <= 400, (key, col, text)
    # the hostile name's bidi override, escape and lone surrogate are stored as visible escapes
    assert "\\u202e\\x1b[31m\\ud800" in rows["hostile/s1"]["reason"]
    assert rows["hostile/s1"]["team"] == "hostile"  # shown under its folder, not the name it claims

    after = snapshot(root.parent)
    for name in INDEX_FILES:
        after.pop(f"submissions/{name}", None)
    assert after == before  # nothing changed but the index files: no bundle, no outside file


def test_the_views_read_the_hostile_index_and_show_text_as_text(hostile, tmp_path):
    from harness.leaderboard.app import Board, detail_text, panels_frame, table_frame

    root, outside, expected, proc, _, _ = hostile
    assert proc.returncode == 0, proc.stderr
    board = Board(root / ".leaderboard.sqlite", root)
    rows = board.rows()
    assert len(table_frame(rows)) == len(expected)
    for r in rows:  # every row opens: detail text, gallery (panels refused with a reason), prompts
        entry = board.entry(r["path"])
        items, problems = board.gallery(entry)
        text = detail_text(entry, problems)
        assert text.splitlines()[0].startswith(entry.team)
        panels_frame(entry)
    hostile_entry = board.entry("hostile/s1")
    text = detail_text(hostile_entry, [])
    assert evil("title") in text and "reproducibility: ![x](http://evil.example/repro.png) <img" in text
    assert hostile_entry.panels[0].prompt == evil("prompt")


class _Page(html.parser.HTMLParser):
    """Collects every attribute value and the text of an HTML page."""

    def __init__(self):
        super().__init__()
        self.attrs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]

    def handle_data(self, data):
        self.text.append(data)


def test_the_static_page_shows_team_text_as_text_and_names_no_other_host(hostile, tmp_path):
    root, _, _, proc, _, _ = hostile
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "site"
    done = cli("leaderboard", "export", str(out), "--submissions", str(root), "--quiet")
    assert done.returncode == 0, done.stderr
    page = _Page()
    page.feed((out / "index.html").read_text(encoding="utf-8"))
    text = "".join(page.text)
    assert evil("title") in text  # shown as written
    tooltips = [v for t, k, v in page.attrs if t == "img" and k == "title"]
    assert f"1. {evil('prompt')} (7.000)" in tooltips  # a prompt is a thumbnail's tooltip, as written
    assert "<img src=x onerror=alert(1)>" in text  # a folder name that looks like a tag
    assert "script" not in page.tags and "a" not in page.tags and "b" not in page.tags
    for tag, name, value in page.attrs:
        if name in ("src", "href", "srcset", "action", "poster", "background", "data"):
            assert value.startswith("data:image/jpeg;base64,"), (tag, name, value[:80])
        assert not name.startswith("on"), (tag, name)
    csp = [v for t, k, v in page.attrs if t == "meta" and k == "content" and "default-src" in v]
    assert csp == ["default-src 'none'; img-src data:; style-src 'unsafe-inline'"]


# --- time limits, kill -9, planted links --------------------------------------------------


def _slow_bundle(root: Path, files: int = 16) -> Path:
    """A bundle listing `files` sparse 2 GiB 'LoRA' files: no disk used, minutes of hashing."""
    b = synthetic.write(root, Spec("slow", "s1", 7.5))
    (b / "lora").mkdir()
    data = json.loads((b / "manifest.json").read_text(encoding="utf-8"))
    for i in range(files):
        path = b / "lora" / f"w{i:02d}.safetensors"
        with open(path, "wb") as f:
            f.truncate(2 * GiB - 1)
        data["files"].append({"path": f"lora/w{i:02d}.safetensors", "size": 2 * GiB - 1, "sha256": "0" * 64})
    (b / "manifest.json").write_text(json.dumps(data), encoding="utf-8")
    return b


def test_a_bundle_that_takes_too_long_becomes_a_row_and_the_build_goes_on(tmp_path):
    root = tmp_path / "submissions"
    synthetic.write(root, Spec("good", "s1", 7.0))
    _slow_bundle(root)
    t0 = time.monotonic()
    proc = cli("leaderboard", "build", "--submissions", str(root), "--quiet", "--bundle-timeout", "2")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 30  # hashing all of it takes minutes
    rows = index_rows(root)
    assert rows["good/s1"]["rank"] == 1 and rows["good/s1"]["status"] == "valid"
    assert rows["slow/s1"]["status"] == "invalid"
    assert rows["slow/s1"]["reason"] == "not indexed: reading it took over 2 s (per-bundle limit)"


def test_a_build_killed_mid_way_is_simply_rerun(tmp_path):
    root = tmp_path / "submissions"
    synthetic.write(root, Spec("good", "s1", 7.0))
    assert cli("leaderboard", "build", "--submissions", str(root), "--quiet").returncode == 0
    synthetic.write(root, Spec("late", "s1", 6.6))
    _slow_bundle(root)
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "leaderboard", "build", "--submissions", str(root), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(4)  # importing, then hashing the slow bundle
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert set(index_rows(root)) == {"good/s1"}  # the index as the last build left it
    again = cli("leaderboard", "build", "--submissions", str(root), "--quiet", "--bundle-timeout", "2")
    assert again.returncode == 0, again.stderr
    assert set(index_rows(root)) == {"good/s1", "late/s1", "slow/s1"}
    conn = sqlite3.connect(root / ".leaderboard.sqlite")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    json.loads((root / ".leaderboard.sqlite.digests.json").read_text(encoding="utf-8"))
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("planted", ["index-symlink", "wal-symlink", "index-hardlink", "index-fifo"])
def test_the_index_is_never_opened_through_something_planted(tmp_path, planted):
    root = tmp_path / "submissions"
    synthetic.write(root, Spec("good", "s1", 7.0))
    victim = tmp_path / "victim.sqlite"
    victim.write_bytes(b"judges' other file\n")
    index = root / ".leaderboard.sqlite"
    if planted == "index-symlink":
        index.symlink_to(victim)
        why = "is a symlink; the index is never written through a link"
    elif planted == "wal-symlink":
        (root / ".leaderboard.sqlite-wal").symlink_to(victim)
        why = "is a symlink; the index is never written through a link"
    elif planted == "index-hardlink":
        os.link(victim, index)
        why = "has 2 hard links; the index is never written through one"
    else:
        os.mkfifo(index)
        why = "exists and is not a regular file; not touching it"
    before = snapshot(tmp_path)
    proc = cli("leaderboard", "build", "--submissions", str(root), "--quiet", timeout=60)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("harness: error: ") and line.endswith(why)
    assert snapshot(tmp_path) == before


def test_the_digest_cache_replaces_a_planted_link_instead_of_writing_through_it(tmp_path):
    root = tmp_path / "submissions"
    synthetic.write(root, Spec("good", "s1", 7.0))
    victim = tmp_path / "victim.json"
    victim.write_text("{}", encoding="utf-8")
    cache = root / ".leaderboard.sqlite.digests.json"
    cache.symlink_to(victim)
    proc = cli("leaderboard", "build", "--submissions", str(root), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text(encoding="utf-8") == "{}"
    assert not cache.is_symlink() and len(json.loads(cache.read_text(encoding="utf-8"))) == 11


# --- the served board -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, data: bytes | None = None, method: str | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _status_no_redirect(url: str) -> int:
    """The status of a GET, a redirect reported rather than followed."""
    import http.client

    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture(scope="module")
def served(hostile, tmp_path_factory):
    """`harness leaderboard serve` over the hostile index, on 127.0.0.1, temp files in tmp."""
    root = hostile[0]
    base = tmp_path_factory.mktemp("served")
    (base / "gradio").mkdir()
    (base / "tmp").mkdir()
    env = {
        **os.environ,
        "GRADIO_TEMP_DIR": str(base / "gradio"),
        "TMPDIR": str(base / "tmp"),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "NO_PROXY": "*",
        "no_proxy": "*",
    }
    port = _free_port()
    log = open(base / "server.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "leaderboard",
            "serve",
            "--submissions",
            str(root),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (base / "server.log").read_text(errors="replace")
            assert time.monotonic() < deadline, "the server did not start in 180 s"
            try:
                if _request(url)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        yield url, root, base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
        log.close()


def _multipart(name: str, content: bytes) -> tuple[bytes, dict]:
    body = (
        b'--BOUNDARY\r\nContent-Disposition: form-data; name="files"; filename="'
        + name.encode()
        + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
        + content
        + b"\r\n--BOUNDARY--\r\n"
    )
    return body, {"Content-Type": "multipart/form-data; boundary=BOUNDARY"}


def test_the_board_refuses_uploads_and_other_writes_and_stores_nothing(served):
    url, root, base = served
    before = {"gradio": snapshot(base / "gradio"), "tmp": snapshot(base / "tmp"), "root": snapshot(root)}
    body, headers = _multipart("payload.html", b"<script>alert(1)</script>" * 1000)
    for route in [
        "gradio_api/upload",
        "gradio_api/upload?upload_id=abc",
        "gradio_api/process_recording",
        "upload",
        "gradio_api/component_server",
        "gradio_api/stream/x",
    ]:
        status, _, answer = _request(url + route, data=body, headers=headers)
        assert status == 403, (route, status, answer[:200])
    for method in ("PUT", "DELETE", "PATCH"):
        assert _request(url + "gradio_api/upload", data=body, method=method, headers=headers)[0] == 403
    # an allowed API route still refuses a Gradio file object (a local path or a URL to fetch)
    for file_obj in [
        {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}},
        {
            "path": "http://evil.example/x.png",
            "url": "http://evil.example/x.png",
            "meta": {"_type": "gradio.FileData"},
        },
    ]:
        payload = json.dumps({"data": [file_obj, False, 0.0]}).encode()
        status, _, _ = _request(
            url + "gradio_api/call/rows", data=payload, headers={"Content-Type": "application/json"}
        )
        assert status == 403
    # a GET that would store this session's state in a new file is refused as well
    from gradio_client import Client

    client = Client(url, verbose=False)
    assert client.predict("anonymous " * 100, False, 0.0, api_name="/rows") == []
    assert _request(f"{url}gradio_api/deep_link?session_hash={client.session_hash}")[0] == 403
    # Gradio redirects `file=<url>` and the deprecated `file/<url>` to any URL: refused, never a 30x
    for route in [
        "gradio_api/file=http://evil.example/x.png",
        "gradio_api/file/http://evil.example/x.png",
        "gradio_api/file/https://evil.example/x.png",
        "gradio_api/file/http%3A%2F%2Fevil.example/x.png",
        "gradio_api/file/HTTPS:/evil.example/x.png",
        "gradio_api/file=//evil.example/x.png",
        "gradio_api/file///evil.example/x.png",
        "gradio_api/file/%5C%5Cevil.example/x.png",
        "gradio_api/file/javascript:alert(1)",
    ]:
        assert _status_no_redirect(url + route) == 403, route
    # while the board's own API works through the same door
    payload = json.dumps({"data": ["", False, 0.0]}).encode()
    status, _, answer = _request(
        url + "gradio_api/call/rows", data=payload, headers={"Content-Type": "application/json"}
    )
    assert status == 200 and "event_id" in json.loads(answer)
    time.sleep(1)
    after = {"gradio": snapshot(base / "gradio"), "tmp": snapshot(base / "tmp"), "root": snapshot(root)}
    assert after == before


def test_the_page_names_no_other_host_and_carries_a_same_origin_policy(served):
    url, _, _ = served
    status, headers, page = _request(url)
    assert status == 200
    csp = {k.lower(): v for k, v in headers.items()}["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp and "font-src 'self' data:" in csp
    for host in (b"cdnjs.cloudflare.com", b"fonts.googleapis.com", b"fonts.gstatic.com"):
        assert host not in page
    status, _, css = _request(url + "theme.css")
    assert status == 200 and b"googleapis" not in css and b"@import" not in css


def test_a_browser_shows_the_hostile_text_literally_and_only_talks_to_the_board(served, tmp_path):
    if not Path(CHROMIUM).is_file():
        if os.environ.get("HARNESS_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is not installed (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    url, _, _ = served
    requested: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.on("request", lambda r: requested.append(r.url))
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            page.locator("#leaderboard-table").get_by_text("good", exact=True).first.wait_for(timeout=60_000)
            page.get_by_label("search").fill("hostile/s1")
            page.wait_for_function(
                "t => (document.querySelector('#detail textarea')?.value || '').includes(t)",
                arg=evil("title"),
                timeout=60_000,
            )
            page.wait_for_function(
                "() => { const i = document.querySelector('#panels img');"
                " return i && i.complete && i.naturalWidth > 0 }",
                timeout=60_000,
            )
            page.wait_for_timeout(1500)  # room for any late fetch the page would make
            detail = page.locator("#detail textarea").input_value()
            seen = page.evaluate("() => document.body.innerText")
            found = page.evaluate(
                """() => ({
                    evilImages: [...document.querySelectorAll('img')].map(i => i.src)
                        .filter(s => s.includes('evil')),
                    jsLinks: [...document.querySelectorAll('a')].map(a => a.getAttribute('href') || '')
                        .filter(h => h.toLowerCase().startsWith('javascript')),
                    bold: [...document.querySelectorAll('b, strong')].filter(b => b.textContent === 'bold'
                        || b.textContent === 'star').length,
                })"""
            )
        finally:
            browser.close()
    assert evil("title") in detail and "reproducibility: ![x](http://evil.example/repro.png) <img" in detail
    assert "holds the bundle of ![x](http://evil.example/team.png) <img src=" in detail
    assert "![x](http://evil.example/prompt.png)" in seen  # the prompts table and the captions
    assert found == {"evilImages": [], "jsLinks": [], "bold": 0}
    hosts = {urllib.parse.urlsplit(u).hostname for u in requested if not u.startswith(("data:", "blob:"))}
    assert requested and hosts == {"127.0.0.1"}, sorted(set(requested))


def test_a_reader_that_raises_on_one_bundle_costs_that_bundle_only(tmp_path, monkeypatch):
    """Batch isolation beyond the known attacks: whatever a future reader bug raises on one
    bundle (here a RecursionError and a KeyError from `read_entry`) is that bundle's row."""
    from harness.leaderboard import build
    from harness.leaderboard.build import build_index

    root = tmp_path / "submissions"
    for team in ("alpha", "bravo", "charlie"):
        synthetic.write(root, Spec(team, "s1", 7.0))
    real = build.read_entry

    def reader(root_, bundle, **kw):
        if bundle.parent.name == "bravo":
            raise RecursionError("maximum recursion depth exceeded")
        if bundle.parent.name == "charlie":
            raise KeyError("summary")
        return real(root_, bundle, **kw)

    monkeypatch.setattr(build, "read_entry", reader)
    report = build_index(root, progress=False)
    assert report.added == 3
    rows = index_rows(root)
    assert rows["alpha/s1"]["status"] == "valid" and rows["alpha/s1"]["rank"] == 1
    assert rows["bravo/s1"]["reason"] == "not indexed: nested too deeply to read"
    assert rows["charlie/s1"]["reason"] == "not indexed: KeyError: 'summary'"


def test_a_bundle_one_level_up_cannot_rank_as_another_team(tmp_path):
    """`<root>/zzz/manifest.json` claiming team datawhale: shown as team zzz, invalid, with a reason
    naming the claim; the real datawhale row is untouched; an honest one-level bundle stays valid."""
    import shutil

    root = tmp_path / "subs"
    synthetic.write(root, Spec("datawhale", "s1", 6.5))
    b = synthetic.write(tmp_path / "tmp", Spec("datawhale", "s2", 9.9))
    shutil.move(str(b), str(root / "zzz"))
    b = synthetic.write(tmp_path / "tmp", Spec("solo", "s1", 7.5))
    shutil.move(str(b), str(root / "solo"))
    before = snapshot(tmp_path)

    proc = cli("leaderboard", "build", "--submissions", str(root), "--quiet")
    assert proc.returncode == 0, proc.stderr
    rows = index_rows(root)
    assert set(rows) == {"datawhale/s1", "zzz", "solo"}
    assert rows["zzz"]["team"] == "zzz" and rows["zzz"]["status"] == "invalid"
    assert "folder zzz holds the bundle of team datawhale" in rows["zzz"]["reason"]
    assert [r["path"] for r in rows.values() if r["team"] == "datawhale"] == ["datawhale/s1"]
    assert rows["solo"]["status"] == "valid" and rows["solo"]["team"] == "solo", rows["solo"]["reason"]
    after = snapshot(tmp_path)
    for name in INDEX_FILES:
        after.pop(f"subs/{name}", None)
    assert after == before
