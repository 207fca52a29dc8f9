"""harness.safeio: writes into untrusted folders never go through what an attacker planted, and
reads of untrusted files are bounded (links, FIFOs, size, JSON depth) with one-line refusals."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import HarnessError
from harness.safeio import read_json, read_text, resolve_inside, write_atomic, write_json


def _outside(tmp_path: Path) -> Path:
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("precious\n")
    return victim


def _one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text and text, text
    return text


def test_symlink_at_target_is_replaced_not_written_through(tmp_path):
    victim = _outside(tmp_path)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "verdict.json").symlink_to(victim)
    write_json(bundle / "verdict.json", {"verdict": "pass"})
    assert victim.read_text() == "precious\n"
    assert not (bundle / "verdict.json").is_symlink()
    assert json.loads((bundle / "verdict.json").read_text()) == {"verdict": "pass"}
    assert sorted(os.listdir(bundle)) == ["verdict.json"]  # no temp file left


def test_hardlink_at_target_is_replaced_not_written_through(tmp_path):
    victim = _outside(tmp_path)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    os.link(victim, bundle / "verdict.json")
    write_atomic(bundle / "verdict.json", "new")
    assert victim.read_text() == "precious\n"
    assert (bundle / "verdict.json").read_text() == "new"


def test_planted_temp_names_are_never_used(tmp_path):
    """Links planted at every name the old fixed-name temp scheme used are left alone."""
    victim = _outside(tmp_path)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name in (".verdict.json.tmp", "verdict.json.tmp", ".verdict.json"):
        (bundle / name).symlink_to(victim)
    write_atomic(bundle / "verdict.json", "ok")
    assert victim.read_text() == "precious\n"
    assert (bundle / "verdict.json").read_text() == "ok"


def test_planted_folder_or_fifo_at_target_is_refused_in_one_line(tmp_path):
    bundle = tmp_path / "bundle"
    (bundle / "verdict.json").mkdir(parents=True)
    (bundle / "verdict.json" / "keep").write_text("x")
    with pytest.raises(HarnessError) as e:
        write_atomic(bundle / "verdict.json", "ok")
    assert "is a folder" in _one_line(e.value)
    assert (bundle / "verdict.json" / "keep").read_text() == "x"
    os.mkfifo(bundle / "fifo.json")
    with pytest.raises(HarnessError) as e:
        write_atomic(bundle / "fifo.json", "ok")
    assert "FIFO" in _one_line(e.value)
    assert sorted(os.listdir(bundle)) == ["fifo.json", "verdict.json"]


def test_symlinked_folder_is_not_written_into(tmp_path):
    victim = _outside(tmp_path)
    (tmp_path / "bundle").symlink_to(victim.parent)
    with pytest.raises(HarnessError) as e:
        write_atomic(tmp_path / "bundle" / "verdict.json", "ok")
    assert "not a folder" in _one_line(e.value)
    assert sorted(os.listdir(victim.parent)) == ["victim.txt"]


def test_reads_refuse_links_fifos_and_oversize_without_blocking(tmp_path):
    victim = _outside(tmp_path)
    (tmp_path / "link.json").symlink_to(victim)
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "big.json").write_text("[" + "0," * 1000 + "0]")
    start = time.monotonic()
    for name, why in (("link.json", "symlink"), ("fifo.json", "FIFO"), ("big.json", "over the cap")):
        with pytest.raises(HarnessError) as e:
            read_json(tmp_path / name, max_bytes=100)
        assert why in _one_line(e.value) and name in str(e.value)
    assert time.monotonic() - start < 5  # a FIFO opened for reading would block forever
    assert read_text(tmp_path / "link.json", max_bytes=100, follow_links=True) == "precious\n"


@pytest.mark.parametrize("depth", [33, 10_000, 200_000])
def test_deep_json_is_refused_before_the_parser_recurses(tmp_path, depth):
    (tmp_path / "deep.json").write_text("[" * depth + "]" * depth)
    start = time.monotonic()
    with pytest.raises(HarnessError) as e:
        read_json(tmp_path / "deep.json")
    assert f"nested {depth} levels deep" in _one_line(e.value)
    assert time.monotonic() - start < 5


def test_json_strings_with_brackets_do_not_count_as_depth(tmp_path):
    doc = {"prompt": "[[[[{{{{" * 100 + '\\"]]]'}
    (tmp_path / "ok.json").write_text(json.dumps(doc))
    assert read_json(tmp_path / "ok.json") == doc


def test_nan_literals_and_huge_integers_are_refused(tmp_path):
    for text in ('{"a": NaN}', '{"a": Infinity}', '{"a": ' + "9" * 5000 + "}"):
        (tmp_path / "x.json").write_text(text)
        with pytest.raises(HarnessError) as e:
            read_json(tmp_path / "x.json")
        _one_line(e.value)


def test_resolve_inside_refuses_escapes(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "out").symlink_to(tmp_path)
    assert resolve_inside(root, "sub/x.png") == root / "sub" / "x.png"
    for rel in ("../x", "/etc/passwd", "sub/../../x", "out/x", "a\x00b", "a\\..\\b", ""):
        with pytest.raises(HarnessError) as e:
            resolve_inside(root, rel)
        _one_line(e.value)


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=4096))
def test_any_bytes_load_as_json_or_refuse_in_one_line(tmp_path, data):
    path = tmp_path / "fuzz.json"
    path.write_bytes(data)
    try:
        read_json(path, max_depth=8)
    except HarnessError as e:
        _one_line(e)


_finite = st.floats(allow_nan=False, allow_infinity=False)
_json_leaf = st.none() | st.booleans() | st.integers() | _finite | st.text(max_size=20)


@settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.recursive(
        _json_leaf,
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
        max_leaves=40,
    )
)
def test_json_within_the_depth_limit_round_trips(tmp_path, doc):
    path = tmp_path / "doc.json"
    write_json(path, doc)
    assert read_json(path) == doc


def test_non_finite_numbers_are_written_as_null(tmp_path):
    write_json(tmp_path / "s.json", {"psnr": float("inf"), "x": [float("nan"), 1.5]})
    assert read_json(tmp_path / "s.json") == {"psnr": None, "x": [None, 1.5]}


def test_an_unterminated_string_of_escaped_quotes_is_read_in_linear_time(tmp_path):
    """'"' followed by a megabyte of escaped quotes used to make the depth scan quadratic (hours)."""
    (tmp_path / "x.json").write_text('"' + ' \\"' * 340_000)
    start = time.monotonic()
    with pytest.raises(HarnessError) as e:
        read_json(tmp_path / "x.json", max_bytes=2 << 20)
    assert "not valid JSON" in _one_line(e.value)
    assert time.monotonic() - start < 5
