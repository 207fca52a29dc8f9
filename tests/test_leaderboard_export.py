"""`harness leaderboard export`: one self-contained page, ranked, with thumbnails, untrusted text escaped."""

from __future__ import annotations

import re

from harness.cli import main
from harness.leaderboard import synthetic
from harness.leaderboard.synthetic import Spec


def test_export_is_one_self_contained_ranked_page(tmp_path, capsys):
    root = tmp_path / "submissions"
    synthetic.write(root, Spec("bravo", "s1", 6.4))
    synthetic.write(root, Spec("alpha", "s1", 7.2, title="<script>alert('x')</script>长安"))
    synthetic.write(root, Spec("charlie", "s1", None))
    assert main(["leaderboard", "build", "--submissions", str(root), "--quiet"]) == 0
    out = tmp_path / "site"
    assert main(["leaderboard", "export", str(out), "--submissions", str(root), "--quiet"]) == 0
    html = (out / "index.html").read_text(encoding="utf-8")

    teams = re.findall(r'<tr class="(\w+)" id="([^"]+)"', html)
    assert teams == [("valid", "alpha/s1"), ("valid", "bravo/s1"), ("unscored", "charlie/s1")]
    # 8 thumbnails per bundle, embedded: nothing on the page points back into the root
    assert html.count('src="data:image/jpeg;base64,') == 24
    assert str(root) not in html and 'src="/' not in html and "file:" not in html
    # a title is text, never markup
    assert "<script>" not in html and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;长安" in html
    assert "no scores.json in the bundle" in html


def test_serve_and_export_without_an_index_say_so(tmp_path, capsys):
    root = tmp_path / "empty"
    root.mkdir()
    assert main(["leaderboard", "export", str(tmp_path / "site"), "--submissions", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    index = root / ".leaderboard.sqlite"
    assert err == [f"harness: error: {index}: no leaderboard index; run `harness leaderboard build` first"]
    assert main(["leaderboard", "build", "--submissions", str(tmp_path / "missing")]) == 2
    assert "no such submissions folder" in capsys.readouterr().err
