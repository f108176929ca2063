"""Run the shell blocks of the docs that are marked as runnable on phantoms (``make docs-check``).

A fenced block is runnable when the line right before its opening fence is the HTML comment
``<!-- docs-check -->`` (invisible on GitHub). Each block runs with ``bash`` under ``set -euo pipefail`` in a
fresh temporary folder that holds ``configs/`` (a link to the repository's) and a copy of the phantom data
generated once per check: ``phantoms/`` (``tumorlab synth --layout lgg --patients 8 --size 64 --seed 0``) and
``mri4/`` (``tumorlab synth --layout folders --train-per-class 8 --test-per-class 4 --size 64 --seed 0``).
``<!-- docs-check: repo -->`` runs the block in the repository root instead (for commands on the repository's own
files, such as a test run). The virtual environment's ``bin/`` (this Python's) comes first on ``PATH``.

    python tools/docs_check.py [FILE.md ...] [--list] [--timeout S] [--keep]

Prints one line per block (``ok``/``FAILED``, ``file:line``, seconds); a failing block is named by the line of its
opening fence, with the last lines of its output. Exit status 1 if any block failed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^\s*<!--\s*docs-check(?::\s*(?P<where>[a-z]+))?\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
PHANTOMS = {
    "phantoms": ["synth", "--layout", "lgg", "--patients", "8", "--size", "64", "--seed", "0"],
    "mri4": ["synth", "--layout", "folders", "--train-per-class", "8", "--test-per-class", "4", "--size", "64"],
}
TAIL = 40  # output lines shown for a failing block


@dataclass
class Block:
    """A runnable block: the file, the line of its opening fence (1-based), its text and where it runs."""

    path: Path
    line: int
    code: str
    where: str = "tmp"  # "tmp": a fresh folder with the phantoms; "repo": the repository root

    @property
    def name(self) -> str:
        try:
            return f"{self.path.resolve().relative_to(REPO)}:{self.line}"
        except ValueError:
            return f"{self.path}:{self.line}"


def find_blocks(path: Path) -> list[Block]:
    """The marked blocks of one Markdown file; ``ValueError`` (naming file:line) for a marker without a block
    right after it, an unknown place to run or a block that is never closed."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        marker = MARKER.match(lines[i])
        i += 1
        if not marker:
            continue
        where = marker.group("where") or "tmp"
        if where not in ("tmp", "repo"):
            raise ValueError(f"{path}:{i}: docs-check marker must be <!-- docs-check --> or <!-- docs-check: repo -->")
        opening = FENCE.match(lines[i]) if i < len(lines) else None
        if not opening:
            raise ValueError(f"{path}:{i}: <!-- docs-check --> must stand right before a fenced code block")
        fence, start = opening.group("fence"), i + 1
        end = next(
            (k for k in range(start, len(lines)) if re.match(rf"^ {{0,3}}{fence[0]}{{{len(fence)},}}\s*$", lines[k])),
            None,
        )
        if end is None:
            raise ValueError(f"{path}:{start}: the marked code block is never closed")
        blocks.append(Block(path, start, "\n".join(lines[start:end]) + "\n", where))
        i = end + 1
    return blocks


def default_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def make_phantoms(data: Path, bin_dir: Path, env: dict[str, str]) -> None:
    """Write the phantom data sets once (``PHANTOMS``) under ``data``."""
    for name, args in PHANTOMS.items():
        cmd = [str(bin_dir / "tumorlab"), *args, "--out", str(data / name)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"docs-check: could not write the phantoms ({' '.join(cmd)}):\n{done.stderr[-2000:]}")


def run_block(block: Block, folder: Path, data: Path, env: dict[str, str], timeout: float):
    """Run ``block``; returns (exit status or None on timeout, seconds, output)."""
    if block.where == "repo":
        cwd = REPO
    else:
        cwd = folder
        folder.mkdir(parents=True)
        (folder / "configs").symlink_to(REPO / "configs", target_is_directory=True)
        for name in PHANTOMS:
            shutil.copytree(data / name, folder / name)  # a copy: a block may change or overwrite it
    start = time.perf_counter()
    try:
        done = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + block.code], cwd=cwd, env=env, capture_output=True, text=True,
            timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        code = None
        output = (err.stdout or b"").decode(errors="replace") + (err.stderr or b"").decode(errors="replace")
    return code, time.perf_counter() - start, output


def block_env(bin_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(bin_dir.parent)
    env.setdefault("WANDB_MODE", "offline")  # the phantom runs log to W&B offline unless told otherwise
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="Markdown files (default: README.md and docs/*.md)")
    parser.add_argument("--list", action="store_true", help="list the marked blocks and run nothing")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per block (default 300)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders and say where they are")
    ns = parser.parse_args(argv)
    try:
        blocks = [b for f in (ns.files or default_files()) for b in find_blocks(f)]
    except (OSError, ValueError) as err:
        print(f"docs-check: {err}", file=sys.stderr)
        return 2
    if ns.list:
        for b in blocks:
            print(f"{b.name}  ({b.where}, {len(b.code.splitlines())} lines)")
        return 0
    bin_dir = Path(sys.executable).parent
    env = block_env(bin_dir)
    root = Path(tempfile.mkdtemp(prefix="tumorlab-docs-check-"))
    started, failed = time.perf_counter(), []
    try:
        make_phantoms(root / "data", bin_dir, env)
        for k, block in enumerate(blocks):
            code, seconds, output = run_block(block, root / f"{k:02d}_{block.path.stem}_{block.line}", root / "data",
                                              env, ns.timeout)  # fmt: skip
            if code == 0:
                print(f"ok      {block.name}  ({seconds:.1f} s)", flush=True)
                continue
            failed.append(block.name)
            why = f"timed out after {ns.timeout:g} s" if code is None else f"exit status {code}"
            tail = "\n".join("    " + line for line in output.rstrip().splitlines()[-TAIL:])
            print(f"FAILED  {block.name}  ({why}, {seconds:.1f} s)\n{tail}", flush=True)
    finally:
        if ns.keep:
            print(f"docs-check: the blocks' folders are under {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    total = time.perf_counter() - started
    print(f"docs-check: {len(blocks) - len(failed)} of {len(blocks)} blocks passed in {total:.0f} s")
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
