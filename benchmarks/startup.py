"""How long does ``tumorlab`` take to start? Wall time of the commands one types before any work is done.

Each command runs ``--runs`` times in a fresh interpreter (``python -m tumorlab ...``, the environment's own
``tumorlab`` entry point does the same), after one untimed run that warms the file cache; the table gives
median, min and max. One more run under ``python -X importtime`` tells which heavy packages the command
imported (torch, lightning, wandb) and the import time of the largest one:

- ``tumorlab --help`` and ``tumorlab audit --help``: argparse only;
- ``tumorlab fit --config configs/demo.yaml --print_config``: the LightningCLI parser with the model and data
  classes, which imports torch, Lightning, timm and smp;
- ``tumorlab audit ROOT`` on a small phantom LGG set (3 patients, written with ``tumorlab synth`` unless
  ``--root`` is given): start-up plus reading 68 slices.

    python benchmarks/startup.py --runs 10 --out benchmarks/results/startup.json
    python benchmarks/startup.py --quick     # one timed run of each: the test that keeps this script working
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _common import REPO, bench_env, markdown_table, tumorlab_cmd, write_json

HEAVY = ("torch", "lightning", "wandb", "timm", "segmentation_models_pytorch")
_IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)$")


def commands(root: str) -> dict[str, list[str]]:
    """Label -> arguments of each timed command."""
    return {
        "tumorlab --help": ["--help"],
        "tumorlab audit --help": ["audit", "--help"],
        "tumorlab fit --print_config": ["fit", "--config", str(REPO / "configs" / "demo.yaml"), "--print_config"],
        "tumorlab audit ROOT (3 phantom patients)": ["audit", root],
    }


def wall_time(args: list[str]) -> float:
    """Seconds from start to exit of ``tumorlab ARGS`` in a new process; a failing command stops the benchmark."""
    start = time.perf_counter()
    r = subprocess.run(tumorlab_cmd(*args), env=bench_env(), capture_output=True, text=True, cwd=REPO)
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"tumorlab {' '.join(args)} failed ({r.returncode}): {r.stderr[-1000:]}")
    return elapsed


def heavy_imports(args: list[str]) -> dict[str, float]:
    """The heavy top-level packages the command imports, with their cumulative import time in seconds."""
    r = subprocess.run(
        tumorlab_cmd(*args), env=bench_env(PYTHONPROFILEIMPORTTIME="1"), capture_output=True, text=True, cwd=REPO
    )
    found: dict[str, float] = {}
    for line in r.stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        # a package is imported once; its own line carries the time of everything it pulled in
        if m and m.group(3) in HEAVY:
            found[m.group(3)] = max(found.get(m.group(3), 0.0), int(m.group(1)) / 1e6)
    return found


def phantom(folder: Path) -> str:
    """A 3-patient phantom LGG set written with ``tumorlab synth`` (68 slices at 256 px)."""
    args = ["synth", "--layout", "lgg", "--out", str(folder), "--patients", "3", "--seed", "0", "--overwrite"]
    subprocess.run(tumorlab_cmd(*args), env=bench_env(), check=True, capture_output=True, cwd=REPO)
    return str(folder)


def measure(root: str, runs: int, warm: bool = True) -> list[dict]:
    """Per command: ``runs`` wall times (after one untimed run where ``warm``) and the heavy imports."""
    results = []
    for label, args in commands(root).items():
        if warm:  # untimed: the first run after a change pays for reading files and .pyc compilation
            wall_time(args)
        times = [wall_time(args) for _ in range(runs)]
        results.append(
            {
                "command": label,
                "args": args,
                "runs": runs,
                "median_s": statistics.median(times),
                "min_s": min(times),
                "max_s": max(times),
                "times_s": times,
                "heavy_imports_s": heavy_imports(args),
            }
        )
        print(f"{label}: median {results[-1]['median_s']:.2f} s", flush=True)
    return results


def table(results: list[dict]) -> str:
    rows = []
    for r in results:
        heavy = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(r["heavy_imports_s"].items(), key=lambda kv: -kv[1]))
        rows.append([r["command"], f"{r['median_s']:.2f}", f"{r['min_s']:.2f}-{r['max_s']:.2f}", heavy or "none"])
    header = ["command", "wall s (median)", "min-max", "heavy packages imported (cumulative import time)"]
    return markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs per command (default 10)")
    parser.add_argument("--root", help="data root for the audit row (default: a 3-patient phantom)")
    parser.add_argument("--out", help="write the results as JSON to this file")
    parser.add_argument("--quick", action="store_true", help="one timed run per command, no warm-up run")
    ns = parser.parse_args()
    runs = 1 if ns.quick else ns.runs
    with tempfile.TemporaryDirectory() as tmp:
        root = ns.root or phantom(Path(tmp) / "lgg")
        results = measure(root, runs, warm=not ns.quick)
    write_json(ns.out, "startup", {"runs": runs, "root": ns.root or "phantom: 3 patients, seed 0"}, results)
    print(table(results))


if __name__ == "__main__":
    main()
