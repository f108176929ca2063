"""Run folders: one new folder per command, never reused, with what is needed to trace the run.

``<root>/<name>/<YYYY-mm-dd_HH-MM-SS>_<command>[_<k>]/`` holds ``config.yaml`` (the resolved config),
``run.json`` (command line, git commit, package versions, best checkpoint, metrics), ``checkpoints/``
and the logger's files (``wandb/offline-run-*`` in offline mode).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["RUN_DIR_ENV", "new_run_dir", "run_info", "update_run_json", "find_checkpoint", "find_resume_checkpoint"]

RUN_DIR_ENV = "TUMORLAB_RUN_DIR"
_PACKAGES = (
    "tumorlab",
    "torch",
    "torchvision",
    "lightning",
    "torchmetrics",
    "timm",
    "segmentation-models-pytorch",
    "albumentations",
    "wandb",
)


def _is_child_rank() -> bool:
    return any(int(os.environ.get(v, "0") or 0) > 0 for v in ("LOCAL_RANK", "RANK", "NODE_RANK"))


def _launcher_job_id() -> str | None:
    """The job id shared by all processes that torchrun (``--rdzv-id``) or SLURM started, if any."""
    for var in ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"):
        value = os.environ.get(var, "")
        processes = int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or 1)
        if value and value != "none" and processes > 1:
            return f"{value}_{os.environ.get('SLURM_STEP_ID', '0')}" if var == "SLURM_JOB_ID" else value
    return None


def new_run_dir(root: str | Path, name: str, command: str) -> Path:
    """The path of a new, unused run folder (not created yet).

    DDP worker processes started by Lightning inherit the folder of rank zero through ``TUMORLAB_RUN_DIR``;
    processes started by torchrun (with ``--rdzv-id``) or SLURM name it after the job, so all ranks agree.
    """
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited and _is_child_rank():
        return Path(inherited)
    job = _launcher_job_id()
    if job:  # every process of a torchrun/SLURM job computes the same folder, with no clock involved
        path = Path(root).resolve() / name / f"job-{job}_{command}"
        os.environ[RUN_DIR_ENV] = str(path)
        return path
    stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    base = Path(root).resolve() / name / f"{stamp}_{command}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}_{k}")
    os.environ[RUN_DIR_ENV] = str(path)
    return path


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_info(command: str, argv: list[str]) -> dict[str, Any]:
    """What identifies a run: command line, time, git commit and package versions."""
    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "command": command,
        "argv": ["tumorlab", *argv],
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "git_commit": _git_commit(),
        "versions": versions,
    }


def update_run_json(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into ``run_dir/run.json`` and return the whole record."""
    path = Path(run_dir) / "run.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    record.update(fields)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record


def find_resume_checkpoint(ckpt_path: str, root: str | Path, name: str) -> str:
    """Resolve ``fit --ckpt_path``: ``last`` is the newest ``checkpoints/last.ckpt`` among the runs of ``name``;
    a run folder is its ``checkpoints/last.ckpt``; a file stays as it is. The resumed fit gets a new run folder."""
    from tumorlab.errors import ConfigError

    if ckpt_path == "last":
        candidates = sorted((Path(root) / name).glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise ConfigError(f"--ckpt_path last: no run of {name!r} under {root} has checkpoints/last.ckpt to resume")
        return str(candidates[-1].resolve())
    path = Path(ckpt_path)
    if path.is_dir():
        last = path / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise ConfigError(f"--ckpt_path {path}: a run folder without checkpoints/last.ckpt to resume from")
        return str(last.resolve())
    if not path.is_file():
        raise ConfigError(f"--ckpt_path {path}: no such checkpoint file")
    return str(path)


def find_checkpoint(path: str | Path) -> str:
    """Resolve ``--ckpt_path``: a file as it is, or a run folder to the best checkpoint it recorded."""
    path = Path(path)
    if path.is_dir():
        record_path = path / "run.json"
        best = json.loads(record_path.read_text()).get("best_checkpoint") if record_path.exists() else None
        if not best:
            last = path / "checkpoints" / "last.ckpt"
            if last.exists():
                return str(last)
            from tumorlab.errors import ConfigError

            raise ConfigError(
                f"--ckpt_path {path}: a folder without a recorded best checkpoint or checkpoints/last.ckpt"
            )
        return best
    if not path.is_file():
        from tumorlab.errors import ConfigError

        raise ConfigError(f"--ckpt_path {path}: no such checkpoint file or run folder")
    return str(path)
