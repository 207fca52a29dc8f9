"""Hostile LoRA files (issue 13, class 8): bombs are refused before they inflate, and bad content
is refused alike by `lora import`, `render` and the judges' bundle check, writing nothing.

Every attack is generated here from the tiny Kolors UNet's LoRA shapes. CLI commands run through
`harness.cli.main` (exit code and stderr as a user sees them); the bombs run in a child process
that reports its own peak memory, against a baseline child that reads a harmless file.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os
import shutil
import stat
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from harness.errors import HarnessError
from harness.lora import formats
from harness.lora.checks import check_lora
from harness.lora.safeload import (
    MAX_HEADER_BYTES,
    MAX_LORA_BYTES,
    MAX_LORA_TENSORS,
    MAX_ZIP_ENTRIES,
    load_lora_file,
)
from tests.bundle_helpers import copy_bundle, rehash
from tests.conftest import ROOT, small_story

pytest_plugins = ["tests.bundle_fixtures"]  # demo_bundle: the judges' check runs on a real bundle

TO_Q = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
A, B = f"{TO_Q}.lora_A.weight", f"{TO_Q}.lora_B.weight"
KOHYA_ALPHA = "lora_unet_" + TO_Q.replace(".", "_") + ".alpha"
MiB = 1 << 20


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under `root` (links not followed): kind, size, mtime and content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = os.lstat(p)
            small = stat.S_ISREG(st.st_mode) and st.st_size <= 64 * MiB  # big ones: size and mtime
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if small else None
            link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
            out[str(p.relative_to(root))] = (
                stat.S_IFMT(st.st_mode),
                st.st_size,
                st.st_mtime_ns,
                digest,
                link,
            )
    return out


def one_error_line(capsys, path: Path) -> str:
    """The single stderr line of a refusal; it names `path`. Returns the text after 'error: '."""
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"harness: error: {path}"), lines[0]
    return lines[0].removeprefix("harness: error: ")


def cli(argv: list[str]) -> int:
    from harness.cli import main

    return main([str(a) for a in argv])


# --- content attacks: one per rule of the LoRA check, in every naming --------------------------


@pytest.fixture(scope="module")
def peft_sd(tiny_model_dir):
    """A rank-4 canonical LoRA on the tiny UNet's attention layers, seeded random values."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(tiny_model_dir / "unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(v.shape, generator=gen) for k, v in get_peft_model_state_dict(unet).items()}


def _set(key: str, value):
    def change(sd):
        sd[key] = value(sd[key])

    return change


def _nan(t):
    t = t.clone()
    t.view(-1)[3] = math.nan
    return t


def _inf(t):
    t = t.clone()
    t.view(-1)[0] = -math.inf
    return t


# attack -> (change to the canonical dict, the problem the check reports)
CONTENT = {
    "nan": (_set(A, _nan), "holds NaN or Inf values"),
    "inf": (_set(B, _inf), "holds NaN or Inf values"),
    "int64": (_set(A, lambda t: (t * 100).to(torch.int64)), "dtype int64 is not one of float16"),
    "float8": (_set(A, lambda t: t.to(torch.float8_e4m3fn)), "dtype float8_e4m3fn is not one of float16"),
    "wrong-width": (
        lambda sd: sd.update({A: torch.ones(4, 65), B: torch.ones(65, 4)}),
        "LoRA maps 65 -> 65 features, the base model's layer maps 64 -> 64",
    ),
    "0-d": (_set(A, lambda t: torch.tensor(1.0)), "LoRA matrices must be 2-D (got () and (64, 4))"),
    "3-d": (_set(A, lambda t: t[:, :, None].contiguous()), "LoRA matrices must be 2-D (got (4, 64, 1)"),
    "5-d": (
        _set(B, lambda t: t[:, :, None, None, None].contiguous()),
        "must be 2-D (got (4, 64) and (64, 4, 1, 1, 1))",
    ),
    "ranks-differ": (_set(B, lambda t: t[:, :3].contiguous()), "lora_A rank 4 and lora_B rank 3 differ"),
    "rank-0": (
        lambda sd: sd.update({A: torch.ones(0, 64), B: torch.ones(64, 0)}),
        "rank 0 is not in 1 .. 1024",
    ),
}
# kohya files carry an alpha tensor per module: it must be one positive value.
KOHYA_ONLY = {
    "alpha-3d": (
        _set(KOHYA_ALPHA, lambda t: torch.ones(2, 1, 2)),
        "an alpha must be one value (got shape (2, 1, 2))",
    ),
    "alpha-negative": (_set(KOHYA_ALPHA, lambda t: torch.tensor(-4.0)), "alpha -4.0 is not in (0, 4096]"),
}


# diffusers files carry their adapter config as metadata, which diffusers parses at load time.
META = "lora_adapter_metadata"
METADATA_ONLY = {
    "meta-alpha-text": ({META: json.dumps({"unet.lora_alpha": "abc"})}, "lora_alpha 'abc' is not a number"),
    "meta-alpha-inf": ({META: '{"unet.lora_alpha": Infinity}'}, "not valid JSON (Infinity is not JSON)"),
    "meta-deep": ({META: "[" * 100_000}, "JSON nested 100000 levels deep, over the limit of 8"),
    "meta-not-object": ({META: "[4]"}, f"metadata {META}: not a JSON object"),
}


def _contiguous(sd: dict) -> dict:
    return {k: v.clone().contiguous() for k, v in sd.items()}


def write_lora(naming: str, sd: dict, folder: Path, stem: str, named_change=None, metadata=None) -> Path:
    """`sd` (canonical) written as a file in `naming`; `named_change` edits the file's own dict."""
    if naming == "kohya":
        named = formats.to_kohya(sd, formats.LoraMeta(4, 4.0))
    elif naming.startswith("diffsynth"):
        named = formats.to_diffsynth(sd)
    else:
        named = {f"unet.{k}": v for k, v in sd.items()}
    if named_change is not None:
        named_change(named)
    named = _contiguous(named)
    if naming == "diffsynth-ckpt":
        path = folder / f"{stem}.ckpt"
        torch.save(named, path)
    else:
        path = folder / f"{stem}.safetensors"
        save_file(named, str(path), metadata)
    return path


NAMINGS = ("diffusers", "kohya", "diffsynth-ckpt", "diffsynth-st")
CASES = (
    [(n, a) for n in NAMINGS for a in CONTENT]
    + [("kohya", a) for a in KOHYA_ONLY]
    + [("diffusers", a) for a in METADATA_ONLY]
)


def _attack(naming: str, attack: str):
    return {**CONTENT, **KOHYA_ONLY, **METADATA_ONLY}[attack]


@pytest.fixture(scope="module")
def attack_files(peft_sd, tmp_path_factory) -> dict[tuple[str, str], Path]:
    folder = tmp_path_factory.mktemp("attacks")
    files = {}
    for naming, attack in CASES:
        change, _ = _attack(naming, attack)
        stem = f"{naming}-{attack}"
        if attack in CONTENT:  # changes the canonical dict, so every naming carries it
            sd = dict(peft_sd)
            change(sd)
            files[naming, attack] = write_lora(naming, sd, folder, stem)
        elif attack in METADATA_ONLY:
            files[naming, attack] = write_lora(naming, peft_sd, folder, stem, metadata=change)
        else:
            files[naming, attack] = write_lora(naming, peft_sd, folder, stem, change)
    return files


def test_a_sound_lora_in_every_naming_imports(peft_sd, tmp_path, capsys):
    """The control: without the attack each file imports, so the refusals below are the attack's."""
    for naming in NAMINGS:
        path = write_lora(naming, peft_sd, tmp_path, f"good-{naming}")
        assert cli(["lora", "import", path, "--out", tmp_path / f"out-{naming}", "--base", "tiny"]) == 0
        sd, _ = load_lora_file(tmp_path / f"out-{naming}" / "pytorch_lora_weights.safetensors")
        back = formats.from_diffusers(sd)
        assert back.keys() == peft_sd.keys() and all(torch.equal(back[k], peft_sd[k]) for k in peft_sd)
    capsys.readouterr()


@pytest.mark.parametrize("naming,attack", CASES, ids=[f"{n}-{a}" for n, a in CASES])
def test_lora_import_refuses_bad_content_with_one_line_and_writes_nothing(
    naming, attack, attack_files, tmp_path, capsys
):
    path = attack_files[naming, attack]
    out = tmp_path / "imported"
    before = snapshot(tmp_path)
    assert cli(["lora", "import", path, "--out", out, "--base", "tiny"]) == 2
    line = one_error_line(capsys, path)
    assert line.startswith(f"{path}: not imported: ") and _attack(naming, attack)[1] in line, line
    assert snapshot(tmp_path) == before and not out.exists()


def test_import_over_an_earlier_import_refuses_bad_content_and_keeps_the_old_one(
    peft_sd, attack_files, tmp_path, capsys
):
    out = tmp_path / "imported"
    good = write_lora("diffusers", peft_sd, tmp_path, "good")
    assert cli(["lora", "import", good, "--out", out, "--base", "tiny"]) == 0
    capsys.readouterr()
    before = snapshot(tmp_path)
    for attack in CONTENT:
        path = attack_files["kohya", attack]
        assert cli(["lora", "import", path, "--out", out, "--base", "tiny", "--force"]) == 2
        one_error_line(capsys, path)
    assert snapshot(tmp_path) == before


def test_import_render_and_the_bundle_check_agree_on_every_attack(
    attack_files, demo_bundle, tmp_path, capsys
):
    """The same file gets the same reason from all three, and none of them writes anything."""
    from harness.bundle.verify import verify_bundle

    bundle = copy_bundle(demo_bundle, tmp_path / "subs")
    for path in attack_files.values():
        shutil.copy(path, bundle / "lora" / path.name)
    rehash(bundle)  # a consistent manifest: only the content check can catch them
    verdict = verify_bundle(bundle, rerun=False)
    assert not verdict.passed
    judged: dict[str, str] = {}
    for p in verdict.problems:
        if p.startswith("lora/"):
            rel, why = p.split(": ", 1)
            judged[rel] = judged.get(rel, "") + " | " + why

    work = tmp_path / "work"
    work.mkdir()
    for (naming, attack), src in attack_files.items():
        reason = _attack(naming, attack)[1]
        assert reason in judged.get(f"lora/{src.name}", ""), (src.name, judged.get(f"lora/{src.name}"))
        path = Path(shutil.copy(src, work / src.name))
        story = work / "story.yaml"
        data = small_story(lora={"path": path.name, "scale": 1.0})
        story.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
        before = snapshot(work)

        assert cli(["lora", "import", path, "--out", work / "imported", "--base", "tiny"]) == 2
        imported = one_error_line(capsys, path).removeprefix(f"{path}: not imported: ")
        assert reason in imported and imported.split(" (and ")[0] in judged[f"lora/{src.name}"]

        assert cli(["render", story, "--out", work / "rendered"]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1, err
        if path.suffix == ".ckpt":  # the story itself is refused: pickles are never rendered
            assert "only .safetensors LoRA files are rendered" in err[0], err[0]
        else:
            prefix = f"harness: error: {path}: cannot be applied as a Kolors LoRA: "
            assert err[0].startswith(prefix), err[0]
            assert err[0].removeprefix(prefix) == imported  # the first problem of the shared check
        assert snapshot(work) == before
        path.unlink()
        story.unlink()


# --- bombs: refused before they inflate, in bounded memory and time ----------------------------

# Peak memory is VmHWM (this process image's own high-water mark): ru_maxrss would carry the
# forking pytest process's peak across exec.
PEAK = "int(next(ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM:')))"
CHILD = f"""
import sys, time
from harness.cli import main
t = time.monotonic()
rc = main(sys.argv[2:])
took = time.monotonic() - t
with open(sys.argv[1], "w") as f:
    f.write(f"{{{PEAK}}} {{took}}")
sys.exit(rc)
"""
TORCH_LOAD = f"""
import sys, torch
torch.load(sys.argv[2], weights_only=True)
with open(sys.argv[1], "w") as f:
    f.write(f"{{{PEAK}}} 0")
"""


def run_child(script: str, args: list, tmp_path: Path) -> tuple[subprocess.CompletedProcess, int, float]:
    """(process, its peak RSS in MiB, seconds its command took) for `script` in a fresh Python."""
    if not Path("/proc/self/status").is_file():
        pytest.skip("peak memory is read from /proc (Linux)")
    report = tmp_path / f"rss-{time.monotonic_ns()}"
    proc = subprocess.run(
        [sys.executable, "-c", script, str(report), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    rss_kib, took = report.read_text().split()
    return proc, int(rss_kib) // 1024, float(took)


def _torch_zip(path, store: dict[str, bytes], compress=zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression=compress) as z:
        for name, data in store.items():
            z.writestr(name, data)


def deflate_bomb(path: Path, mib: int) -> None:
    """A torch.save checkpoint of one all-zero LoRA matrix of `mib` MiB, its entries DEFLATEd."""
    n = mib * MiB // 4
    src = path.with_suffix(".src")
    torch.save({A: torch.zeros(4321)}, src)  # 4321 appears only as the numel and the size
    with zipfile.ZipFile(src) as z:
        entries = {i.filename: z.read(i) for i in z.infolist()}
    src.unlink()
    pkl_name = next(k for k in entries if k.endswith("/data.pkl"))
    assert entries[pkl_name].count(b"M\xe1\x10") == 2
    entries[pkl_name] = entries[pkl_name].replace(b"M\xe1\x10", b"J" + struct.pack("<i", n))
    data_name = next(k for k in entries if k.endswith("/data/0"))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            if name != data_name:
                z.writestr(name, data)
                continue
            with z.open(name, "w", force_zip64=True) as f:
                zero = bytes(MiB)
                for _ in range(mib):
                    f.write(zero)


def _harmless(tmp_path: Path) -> Path:
    path = tmp_path / "harmless.ckpt"
    torch.save({"not.a.lora": torch.zeros(4)}, path)
    return path


def test_a_deflated_checkpoint_is_refused_before_it_inflates(tiny_model_dir, tmp_path):
    bomb = tmp_path / "bomb.ckpt"
    deflate_bomb(bomb, 256)
    assert bomb.stat().st_size < 2 * MiB
    harmless = _harmless(tmp_path)
    # The control: torch.load itself inflates it (what happened before the zip directory check).
    _, inflated, _ = run_child(TORCH_LOAD, [bomb], tmp_path)
    _, plain, _ = run_child(TORCH_LOAD, [harmless], tmp_path)
    assert inflated - plain > 200, (inflated, plain)

    argv = ["lora", "import", "--out", tmp_path / "o", "--base", "tiny"]
    _, baseline, _ = run_child(CHILD, [*argv, harmless], tmp_path)
    before = snapshot(tmp_path)
    proc, peak, took = run_child(CHILD, [*argv, bomb], tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert (
        proc.stderr.startswith(f"harness: error: {bomb}: refused: zip entry ")
        and "is compressed" in proc.stderr
    )
    assert peak - baseline < 64 and took < 20, (peak, baseline, took)
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("rss-")} == {
        k: v for k, v in before.items() if not k.startswith("rss-")
    }


def test_an_expanded_view_is_refused_before_any_pass_over_its_values(tiny_model_dir, tmp_path):
    """torch.save keeps a stride-0 view: 4 stored bytes can claim 16384 x 16384 values, which the
    finite-value check (and the import's conversion) would otherwise allocate."""
    bomb = tmp_path / "expanded.ckpt"
    torch.save({f"unet.{A}": torch.zeros(1).expand(16384, 16384), f"unet.{B}": torch.zeros(64, 16384)}, bomb)
    assert bomb.stat().st_size < 8 * MiB
    argv = ["lora", "import", "--out", tmp_path / "o", "--base", "tiny"]
    _, baseline, _ = run_child(CHILD, [*argv, _harmless(tmp_path)], tmp_path)
    proc, peak, took = run_child(CHILD, [*argv, bomb], tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"{bomb}: refused: 'unet.{A}' claims 1073741824 bytes of values over 4 stored bytes" in proc.stderr
    assert peak - baseline < 64 and took < 20, (peak, baseline, took)
    assert not (tmp_path / "o").exists()
    # The judges' check and render's reader refuse it the same way.
    with pytest.raises(HarnessError, match="claims 1073741824 bytes of values over 4 stored bytes"):
        load_lora_file(bomb)


def _overlapping_zip(path: Path, copies: int) -> None:
    """A zip whose directory lists one stored entry many times (sizes add up beyond the file)."""
    torch.save({f"unet.{A}": torch.zeros(4, 64), f"unet.{B}": torch.zeros(64, 4)}, path)
    with zipfile.ZipFile(path) as z:
        entries = [(i, z.read(i)) for i in z.infolist()]
    with zipfile.ZipFile(path, "w") as z:
        for info, data in entries:
            z.writestr(info.filename, data)
        big = z.getinfo(next(i.filename for i, _ in entries if i.filename.endswith("/data/0")))
        for n in range(copies):
            dup = copy.copy(big)
            dup.filename = big.filename[:-1] + f"{n + 2}"
            z.filelist.append(dup)


def _lying_size_zip(path: Path) -> None:
    """torch.save's zip with the directory's uncompressed size of a storage entry inflated."""
    torch.save({f"unet.{A}": torch.zeros(4, 64)}, path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        name = next(i.filename for i in z.infolist() if i.filename.endswith("/data/0")).encode()
    at = data.index(b"PK\x01\x02")  # central directory records: name length at +28, name at +46
    while data[at + 46 : at + 46 + struct.unpack_from("<H", data, at + 28)[0]] != name:
        at = data.index(b"PK\x01\x02", at + 4)
    data[at + 24 : at + 28] = struct.pack("<I", 0x7FFFFFFF)  # its uncompressed size
    path.write_bytes(bytes(data))


def _many_entries_zip(path: Path) -> None:
    _torch_zip(path, {f"archive/data/{i}": b"" for i in range(MAX_ZIP_ENTRIES + 1)})


def _legacy(path: Path) -> None:
    torch.save({f"unet.{A}": torch.zeros(4, 64)}, path, _use_new_zipfile_serialization=False)


def _sparse(path: Path) -> None:
    huge = torch.sparse_coo_tensor(
        torch.tensor([[0], [0]]), torch.tensor([1.0]), (4, 10**9), check_invariants=True
    )
    torch.save({f"unet.{A}": huge}, path)  # one stored value, 4e9 claimed


ZIP_ATTACKS = {
    "overlapping-entries": (lambda p: _overlapping_zip(p, 8), "entries declare more bytes than the file's"),
    "lying-size": (_lying_size_zip, "declares 2147483647 bytes but stores 1024"),
    "many-entries": (_many_entries_zip, f"{MAX_ZIP_ENTRIES + 1} zip entries is over the cap"),
    "legacy": (_legacy, "refused: not a zip checkpoint (a legacy torch file or a bare pickle)"),
    "sparse": (_sparse, "is a torch.sparse_coo Tensor, not a dense tensor"),
}


@pytest.mark.parametrize("attack", sorted(ZIP_ATTACKS))
def test_checkpoint_zip_attacks_are_refused_in_one_line(attack, tmp_path, capsys):
    make, reason = ZIP_ATTACKS[attack]
    path = tmp_path / f"{attack}.ckpt"
    make(path)
    before = snapshot(tmp_path)
    t = time.monotonic()
    assert cli(["lora", "import", path, "--out", tmp_path / "o", "--base", "tiny"]) == 2
    assert time.monotonic() - t < 20
    line = one_error_line(capsys, path)
    assert reason in line, line
    assert snapshot(tmp_path) == before
    # The judges' check (verify) and render's read the file through the same reader.
    assert reason in check_lora(path)[0][0]


def test_special_files_and_oversized_files_are_refused_without_reading(tmp_path, capsys):
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)  # opening it would block until a writer came
    huge = tmp_path / "huge.ckpt"
    with open(huge, "wb") as f:
        f.truncate(MAX_LORA_BYTES + 1)  # sparse: no disk used
    device = tmp_path / "zero.safetensors"
    os.symlink("/dev/zero", device)  # endless
    cases = {
        fifo: "is not a regular file, not a LoRA file",
        huge: f"{MAX_LORA_BYTES + 1} bytes is over the cap of {MAX_LORA_BYTES}",
        device: "is not a regular file, not a LoRA file",
        tmp_path / "folder.safetensors": "is a folder, not a LoRA file",
    }
    (tmp_path / "folder.safetensors").mkdir()
    before = snapshot(tmp_path)
    for path, reason in cases.items():
        t = time.monotonic()
        assert cli(["lora", "import", path, "--out", tmp_path / "o", "--base", "tiny"]) == 2
        assert time.monotonic() - t < 10
        assert reason in one_error_line(capsys, path)
    assert snapshot(tmp_path) == before


# --- safetensors headers that lie: refused from the first bytes, nothing allocated -------------


def _sf(header, data: bytes = b"", length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def _t(shape, offsets, dtype="F32"):
    return {"dtype": dtype, "shape": shape, "data_offsets": offsets}


SF_ATTACKS = {
    "length-2^64-1": (_sf({}, length=2**64 - 1), f"over the cap of {MAX_HEADER_BYTES}"),
    "length-beyond-file": (
        _sf({}, length=MAX_HEADER_BYTES - 8),
        "header claims 16777208 bytes, the file has 2",
    ),
    "huge-shape": (
        _sf({"w": _t([2**40, 2**40], [0, 16])}, bytes(16)),
        "tensors claim more than the 16 data bytes",
    ),
    "shape-beyond-data": (
        _sf({"w": _t([1024], [0, 4096])}, bytes(8)),
        "tensors claim more than the 8 data bytes",
    ),
    "offsets-beyond-file": (
        _sf({"w": _t([1], [0, 2**40])}, bytes(4)),
        "not a readable safetensors file (Safetensor",
    ),
    "negative-shape": (_sf({"w": _t([-1], [0, 0])}), "has shape entry '-1'"),
    "unknown-dtype": (_sf({"w": _t([1], [0, 4], "Q99")}, bytes(4)), "has dtype 'Q99', not read"),
    "many-tensors": (
        _sf({f"t{i}": _t([0], [0, 0]) for i in range(MAX_LORA_TENSORS + 1)}),
        f"{MAX_LORA_TENSORS + 1} tensors is over the cap of {MAX_LORA_TENSORS}",
    ),
    "deep-header": (_sf(b"[" * 200_000 + b"]" * 200_000), "JSON nested 200000 levels deep"),
    "not-an-object": (_sf(b"[1, 2]"), "header is not a JSON object"),
    "not-utf8": (_sf(b"\xff\xfe{}"), "header is not UTF-8 at byte 0"),
    "too-short": (b"\x01\x00\x00", "shorter than a header"),
}


@pytest.mark.parametrize("attack", sorted(SF_ATTACKS))
def test_safetensors_headers_that_lie_are_refused_fast_without_allocating(attack, tmp_path, capsys):
    import tracemalloc

    raw, reason = SF_ATTACKS[attack]
    path = tmp_path / f"{attack}.safetensors"
    path.write_bytes(raw)
    tracemalloc.start()
    t = time.monotonic()
    with pytest.raises(HarnessError) as e:
        load_lora_file(path)
    took = time.monotonic() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)
    assert reason in str(e.value), str(e.value)
    assert took < 5 and peak < 8 * len(raw) + 16 * MiB, (took, peak)
    before = snapshot(tmp_path)
    assert cli(["lora", "import", path, "--out", tmp_path / "o", "--base", "tiny"]) == 2
    assert reason in one_error_line(capsys, path)
    assert snapshot(tmp_path) == before


# --- writes of the import never follow what was planted in --out ------------------------------


def test_import_replaces_planted_links_and_refuses_planted_folders(peft_sd, tmp_path, capsys):
    good = write_lora("diffusers", peft_sd, tmp_path, "good")
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(outside, out / "pytorch_lora_weights.safetensors")
    os.symlink(outside, out / "import.json")
    assert cli(["lora", "import", good, "--out", out, "--base", "tiny"]) == 2  # taken names need --force
    one_error_line(capsys, out / "pytorch_lora_weights.safetensors")
    assert cli(["lora", "import", good, "--out", out, "--base", "tiny", "--force"]) == 0
    assert outside.read_text(encoding="utf-8") == "keep me"
    for name in ("pytorch_lora_weights.safetensors", "import.json"):
        assert not (out / name).is_symlink() and (out / name).is_file()
    capsys.readouterr()

    planted = tmp_path / "planted"
    (planted / "import.json").mkdir(parents=True)
    before = snapshot(tmp_path)
    assert cli(["lora", "import", good, "--out", planted, "--base", "tiny", "--force"]) == 2
    assert "exists and is not a file; not replaced" in one_error_line(capsys, planted / "import.json")
    assert snapshot(tmp_path) == before  # not even the weights were written


# --- fuzz: any bytes either load or give one HarnessError line ---------------------------------

try:  # the fuzz needs hypothesis (the test extra); everything above runs without it
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None


def _valid_files() -> dict[str, bytes]:
    sd = {
        f"unet.{A}": torch.randn(4, 64, generator=torch.Generator().manual_seed(0)),
        f"unet.{B}": torch.zeros(64, 4),
    }
    from safetensors.torch import save as save_bytes

    buf = io.BytesIO()
    torch.save(sd, buf)
    return {".safetensors": save_bytes(sd, {"format": "pt"}), ".ckpt": buf.getvalue()}


VALID = _valid_files()


def _loads_or_refuses(path: Path) -> None:
    t = time.monotonic()
    try:
        sd, meta = load_lora_file(path)
    except HarnessError as e:
        text = str(e)
        assert text.startswith(f"{path}: ") and "\n" not in text and len(text) < 1000, text
    else:
        assert isinstance(sd, dict) and isinstance(meta, dict)
        assert all(isinstance(v, torch.Tensor) for v in sd.values())
        assert sum(v.numel() * v.element_size() for v in sd.values()) <= path.stat().st_size
    assert time.monotonic() - t < 5


if given is not None:

    @st.composite
    def mutated(draw):
        suffix = draw(st.sampled_from(sorted(VALID)))
        data = bytearray(VALID[suffix])
        for _ in range(draw(st.integers(1, 8))):
            kind = draw(st.sampled_from(["byte", "truncate", "insert", "u64"]))
            at = draw(st.integers(0, max(len(data) - 1, 0)))
            if kind == "byte" and data:
                data[at] = draw(st.integers(0, 255))
            elif kind == "truncate":
                del data[at:]
            elif kind == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=16))
            elif len(data) >= at + 8:
                value = draw(st.sampled_from([0, 1, 2**31, 2**32 + 7, 2**63, 2**64 - 1]))
                data[at : at + 8] = struct.pack("<Q", value)
        return suffix, bytes(data)

    @st.composite
    def mutated_pickle(draw):
        """A well-formed zip (right CRCs, stored entries) around a mutated data.pkl: what reaches
        torch's weights_only unpickler and tensor rebuilding."""
        with zipfile.ZipFile(io.BytesIO(VALID[".ckpt"])) as z:
            entries = {i.filename: z.read(i) for i in z.infolist()}
        name = next(k for k in entries if k.endswith("/data.pkl"))
        pkl = bytearray(entries[name])
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(pkl) - 1))
            if draw(st.booleans()):
                pkl[at] = draw(st.integers(0, 255))
            else:
                pkl[at:at] = draw(st.binary(min_size=1, max_size=8))
        entries[name] = bytes(pkl)
        buf = io.BytesIO()
        _torch_zip(buf, entries)
        return ".ckpt", buf.getvalue()

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(case=st.one_of(mutated(), mutated_pickle()))
    def test_fuzz_mutated_lora_files_load_or_refuse_in_one_line(case, tmp_path):
        suffix, data = case
        path = tmp_path / f"fuzz{suffix}"
        path.write_bytes(data)
        _loads_or_refuses(path)

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=st.binary(max_size=512), suffix=st.sampled_from([".safetensors", ".ckpt", ".pt"]))
    def test_fuzz_random_bytes_load_or_refuse_in_one_line(data, suffix, tmp_path):
        path = tmp_path / f"random{suffix}"
        path.write_bytes(data)
        _loads_or_refuses(path)
