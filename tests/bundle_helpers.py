"""Helpers for the bundle tests: copy a bundle, forge a consistent manifest, run a subcommand."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def copy_bundle(bundle: Path, dest_root: Path) -> Path:
    """A private copy at dest_root/<team>/<name>."""
    dest = dest_root / bundle.parent.name / bundle.name
    shutil.copytree(bundle, dest, symlinks=True)
    return dest


def rehash(bundle: Path) -> None:
    """Rewrite the manifest to list the bundle's files as they are now (a consistent forgery)."""
    from harness.bundle import manifest as mf

    old, _ = mf.read(bundle)
    header = old.model_dump(mode="json")
    header.pop("files")
    (bundle / mf.MANIFEST).unlink()
    mf.write(bundle, mf.build(bundle, header))


def run_cli(argv: list[str]) -> int:
    """Run a bundle subcommand the way harness.cli.main does (HarnessError -> 2, one line)."""
    import sys

    from harness.bundle.cli import add_parsers
    from harness.errors import HarnessError

    parser = argparse.ArgumentParser(prog="harness")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except HarnessError as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return e.exit_code
