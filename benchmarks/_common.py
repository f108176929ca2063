"""What every benchmark script records with its numbers: the machine, the versions, the command; JSON and tables.

The scripts are run as ``python benchmarks/NAME.py``, so this folder is on ``sys.path`` and they import this
module as ``_common``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_PACKAGES = ("tumorlab", "torch", "lightning", "torchmetrics", "timm", "segmentation-models-pytorch", "numpy")


def versions() -> dict[str, str | None]:
    """Installed versions of the packages the numbers depend on (``None`` where one is missing)."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def git_commit() -> str | None:
    """The checked-out commit of the repository (with ``+dirty`` for uncommitted changes), if git can tell."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def machine() -> dict:
    """CPU model, logical CPUs, the load average at the start (a busy machine inflates every timing), memory."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory = round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "memory_gib": memory,
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def command_line() -> str:
    """The command that ran this script, as one would type it from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(REPO)
    except ValueError:
        pass
    return " ".join(["python", str(script), *sys.argv[1:]])


def write_json(path: str | Path | None, benchmark: str, settings: dict, results: object) -> dict:
    """The record of one benchmark run; written to ``path`` (folders created) when one is given."""
    record = {
        "benchmark": benchmark,
        "command": command_line(),
        "commit": git_commit(),
        "machine": machine(),
        "versions": versions(),
        "settings": settings,
        "results": results,
    }
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A Markdown table; floats keep the digits the caller formatted them with (pass strings for that)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def spread(values: list[float]) -> dict[str, float]:
    """Median, min, max and the quartiles (inclusive method; with one value all five are that value)."""
    if len(values) < 2:
        q1 = q3 = values[0]
    else:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "q1": q1, "q3": q3}


def tumorlab_cmd(*args: str) -> list[str]:
    """``tumorlab ARGS`` with this interpreter (``python -m tumorlab``: the checkout on ``PYTHONPATH`` wins)."""
    return [sys.executable, "-m", "tumorlab", *args]


def bench_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: W&B offline unless set, the repository importable."""
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"), **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env
